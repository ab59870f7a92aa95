"""A Llama-family decoder written for decoding: static pre-allocated KV cache, SDPA attention, RoPE tables
computed once. Weights load from a Hugging Face state dict under the same names."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class LlamaSpec:
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    rms_eps: float = 1e-6
    rope_theta: float = 10000.0
    max_positions: int = 2048
    tie_embeddings: bool = False
    attention_bias: bool = False
    mlp_bias: bool = False

    @classmethod
    def from_hf_config(cls, c: dict) -> "LlamaSpec":
        heads = c["num_attention_heads"]
        rope = c.get("rope_parameters") or c.get("rope_scaling") or {}
        theta = rope.get("rope_theta", c.get("rope_theta", 10000.0))
        return cls(vocab_size=c["vocab_size"], hidden_size=c["hidden_size"], intermediate_size=c["intermediate_size"],
                   n_layers=c["num_hidden_layers"], n_heads=heads, n_kv_heads=c.get("num_key_value_heads") or heads,
                   head_dim=c.get("head_dim") or c["hidden_size"] // heads, rms_eps=c.get("rms_norm_eps", 1e-6),
                   rope_theta=float(theta), max_positions=c.get("max_position_embeddings", 2048),
                   tie_embeddings=bool(c.get("tie_word_embeddings", False)),
                   attention_bias=bool(c.get("attention_bias", False)), mlp_bias=bool(c.get("mlp_bias", False)))


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):  # (B, T, C); normalised in float32 whatever the weights' dtype
        h = x.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * h.to(x.dtype)


def rotate_half(x):
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


class Attention(nn.Module):
    def __init__(self, s: LlamaSpec):
        super().__init__()
        self.s = s
        self.q_proj = nn.Linear(s.hidden_size, s.n_heads * s.head_dim, bias=s.attention_bias)
        self.k_proj = nn.Linear(s.hidden_size, s.n_kv_heads * s.head_dim, bias=s.attention_bias)
        self.v_proj = nn.Linear(s.hidden_size, s.n_kv_heads * s.head_dim, bias=s.attention_bias)
        self.o_proj = nn.Linear(s.n_heads * s.head_dim, s.hidden_size, bias=s.attention_bias)
        self.k_cache: torch.Tensor | None = None  # (B, KVH, L, D)
        self.v_cache: torch.Tensor | None = None
        self.qkv_proj: nn.Linear | None = None  # q, k and v in one matmul, made by fuse()

    def fuse(self) -> None:
        """One matmul for q, k and v: one pass over the input and fewer kernel calls per token."""
        parts = (self.q_proj, self.k_proj, self.v_proj)
        self.qkv_proj = nn.Linear(parts[0].in_features, sum(p.out_features for p in parts),
                                  bias=self.s.attention_bias).to(parts[0].weight.dtype)
        with torch.no_grad():
            self.qkv_proj.weight.copy_(torch.cat([p.weight for p in parts]))
            if self.s.attention_bias:
                self.qkv_proj.bias.copy_(torch.cat([p.bias for p in parts]))
        del self.q_proj, self.k_proj, self.v_proj

    def forward(self, x, cos, sin, mask, pos, rows: slice, kv_len: int):
        s = self.s
        b, t, _ = x.shape  # (B, T, C)
        q_size, kv_size = s.n_heads * s.head_dim, s.n_kv_heads * s.head_dim
        if self.qkv_proj is not None:
            q, k, v = self.qkv_proj(x).split([q_size, kv_size, kv_size], dim=-1)
        else:
            q, k, v = self.q_proj(x), self.k_proj(x), self.v_proj(x)
        q = q.view(b, t, s.n_heads, s.head_dim).transpose(1, 2)  # (B, H, T, D)
        k = k.view(b, t, s.n_kv_heads, s.head_dim).transpose(1, 2)  # (B, KVH, T, D)
        v = v.view(b, t, s.n_kv_heads, s.head_dim).transpose(1, 2)
        q = q * cos + rotate_half(q) * sin  # cos, sin: (T, D) or (B, 1, T, D), broadcast over heads
        k = k * cos + rotate_half(k) * sin
        k_cache, v_cache = self.k_cache[rows], self.v_cache[rows]  # views of this batch's cache rows
        if pos.dim() == 1:  # every row at the same positions
            k_cache[:, :, pos] = k
            v_cache[:, :, pos] = v
        else:  # each row at its own positions (continuous batching): pos (B, T)
            row = torch.arange(b, device=pos.device)[:, None]
            k_cache[row, :, pos] = k.transpose(1, 2)  # indexed (B, T, KVH, D)
            v_cache[row, :, pos] = v.transpose(1, 2)
        keys, values = k_cache[:, :, :kv_len], v_cache[:, :, :kv_len]  # (B, KVH, L, D); slots past pos masked
        y = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask, enable_gqa=s.n_heads != s.n_kv_heads)
        return self.o_proj(y.transpose(1, 2).reshape(b, t, s.n_heads * s.head_dim))


class MLP(nn.Module):
    def __init__(self, s: LlamaSpec):
        super().__init__()
        self.gate_proj = nn.Linear(s.hidden_size, s.intermediate_size, bias=s.mlp_bias)
        self.up_proj = nn.Linear(s.hidden_size, s.intermediate_size, bias=s.mlp_bias)
        self.down_proj = nn.Linear(s.intermediate_size, s.hidden_size, bias=s.mlp_bias)
        self.gate_up_proj: nn.Linear | None = None  # made by fuse()

    def fuse(self) -> None:
        g, u = self.gate_proj, self.up_proj
        self.gate_up_proj = nn.Linear(g.in_features, 2 * g.out_features, bias=g.bias is not None).to(g.weight.dtype)
        with torch.no_grad():
            self.gate_up_proj.weight.copy_(torch.cat([g.weight, u.weight]))
            if g.bias is not None:
                self.gate_up_proj.bias.copy_(torch.cat([g.bias, u.bias]))
        del self.gate_proj, self.up_proj

    def forward(self, x):
        if self.gate_up_proj is not None:
            gate, up = self.gate_up_proj(x).chunk(2, dim=-1)
            return self.down_proj(F.silu(gate) * up)
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Block(nn.Module):
    def __init__(self, s: LlamaSpec):
        super().__init__()
        self.self_attn = Attention(s)
        self.mlp = MLP(s)
        self.input_layernorm = RMSNorm(s.hidden_size, s.rms_eps)
        self.post_attention_layernorm = RMSNorm(s.hidden_size, s.rms_eps)

    def forward(self, x, cos, sin, mask, pos, rows, kv_len):
        h = x + self.self_attn(self.input_layernorm(x), cos, sin, mask, pos, rows, kv_len)
        return h + self.mlp(self.post_attention_layernorm(h))


class Llama(nn.Module):
    def __init__(self, s: LlamaSpec):
        super().__init__()
        self.spec = s
        self.embed_tokens = nn.Embedding(s.vocab_size, s.hidden_size)
        self.layers = nn.ModuleList(Block(s) for _ in range(s.n_layers))
        self.norm = RMSNorm(s.hidden_size, s.rms_eps)
        self.lm_head = nn.Linear(s.hidden_size, s.vocab_size, bias=False)
        if s.tie_embeddings:
            self.lm_head.weight = self.embed_tokens.weight
        self.max_len = 0

    def load_hf_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Load weights named as in transformers' LlamaForCausalLM (``model.`` prefix, ``lm_head``)."""
        mine = {}
        for name, tensor in state.items():
            key = name[len("model."):] if name.startswith("model.") else name
            if "rotary_emb" in key:
                continue
            mine[key] = tensor
        if self.spec.tie_embeddings:
            mine.pop("lm_head.weight", None)
            mine["lm_head.weight"] = mine["embed_tokens.weight"]
        missing, unexpected = self.load_state_dict(mine, strict=False)
        if missing or unexpected:
            raise ValueError(f"weights do not fit the architecture: missing {missing[:3]}, unexpected {unexpected[:3]}")
        for layer in self.layers:
            layer.self_attn.fuse()
            layer.mlp.fuse()

    def setup_cache(self, batch: int, max_len: int, dtype: torch.dtype | None = None) -> None:
        """Allocate the KV cache and the RoPE tables for ``max_len`` positions, once per generation."""
        s = self.spec
        dtype = dtype or self.embed_tokens.weight.dtype
        device = self.embed_tokens.weight.device
        for layer in self.layers:
            shape = (batch, s.n_kv_heads, max_len, s.head_dim)
            layer.self_attn.k_cache = torch.zeros(shape, dtype=dtype, device=device)
            layer.self_attn.v_cache = torch.zeros(shape, dtype=dtype, device=device)
        inv_freq = 1.0 / (s.rope_theta ** (torch.arange(0, s.head_dim, 2, dtype=torch.int64).float() / s.head_dim))
        freqs = torch.outer(torch.arange(max_len, dtype=torch.float32), inv_freq)  # (L, D/2)
        emb = torch.cat((freqs, freqs), dim=-1)  # (L, D)
        self.cos, self.sin = emb.cos().to(dtype).to(device), emb.sin().to(dtype).to(device)
        # causal[p, j]: may position p attend to cache slot j
        self.causal = torch.tril(torch.ones(max_len, max_len, dtype=torch.bool, device=device))
        self.max_len = max_len

    def forward(self, tokens: torch.Tensor, pos: torch.Tensor, first_row: int = 0,
                kv_len: int | None = None, last: bool | torch.Tensor = False) -> torch.Tensor:
        """tokens (B, T) at positions pos -> logits (B, T, V); the cache must hold the positions.

        pos is (T,) when every row is at the same positions, or (B, T) when each row has its own (a batch of
        requests of different lengths). The batch uses cache rows first_row .. first_row + B - 1. Attention
        reads cache slots below kv_len (default: the whole cache); it must exceed every position in pos.
        last=True: logits of the last position only, (B, 1, V); a prefill needs no more, and the output
        layer (a fifth of SmolLM2's weights) then runs on one row instead of T. last as a (B,) tensor of
        indices: each row's logits at its own position last[i], (B, 1, V) (right-padded rows of a batched
        prefill end at different positions).
        """
        x = self.embed_tokens(tokens)  # (B, T, C)
        kv_len = kv_len or self.max_len
        cos, sin, mask = self.cos[pos], self.sin[pos], self.causal[pos, :kv_len]  # (T, D), (T, D), (T, L)
        if pos.dim() == 2:  # per-row positions: (B, T, D) -> (B, 1, T, D), mask (B, 1, T, L)
            cos, sin, mask = cos[:, None], sin[:, None], mask[:, None]
        rows = slice(first_row, first_row + tokens.shape[0])
        for layer in self.layers:
            x = layer(x, cos, sin, mask, pos, rows, kv_len)
        if isinstance(last, torch.Tensor):
            x = x[torch.arange(x.shape[0], device=x.device), last][:, None]
        elif last:
            x = x[:, -1:]
        return self.lm_head(self.norm(x))


def param_count(model: nn.Module) -> int:
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


