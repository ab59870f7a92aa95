"""The decode loop: one prefill over the prompt, then one token per step against the static KV cache.

Greedy when temperature is 0 (the default); otherwise temperature + top-p (nucleus) sampling from a
seeded generator, so a run is reproducible.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import torch

from ...errors import ConfigError, DataError


GREEDY_BELOW = 1e-4  # temperatures under this are greedy: their limit, and logits / T would overflow float32


@dataclass(frozen=True)
class SamplingConfig:
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None

    def __post_init__(self):
        if 0 < self.temperature < GREEDY_BELOW:
            object.__setattr__(self, "temperature", 0.0)

    def check(self) -> None:
        if not self.temperature >= 0:
            raise ConfigError(f"--temperature must be 0 (greedy) or positive, not {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ConfigError(f"--top-p must be in (0, 1], not {self.top_p}")
        if self.seed is not None and not -2**63 <= self.seed < 2**64:
            raise ConfigError(f"--seed must be in [-2**63, 2**64), not {self.seed}")


@dataclass
class Generation:
    tokens: list[int]
    prefill_s: float  # time to first token
    decode_s: list[float] = field(default_factory=list)  # time of each later token

    def emit(self, tokens: list[int], seconds: float, on_token: Callable[[int], None] | None = None) -> None:
        """Record tokens one forward pass produced together (speculation): its time shared equally."""
        for tok in tokens:
            self.tokens.append(tok)
            self.decode_s.append(seconds / len(tokens))
            if on_token:
                on_token(tok)

    @property
    def decode_tokens_per_s(self) -> float:
        return len(self.decode_s) / sum(self.decode_s) if self.decode_s else float("nan")


def probabilities(logits: torch.Tensor, cfg: SamplingConfig) -> torch.Tensor:
    """logits (..., V) -> the sampling distribution (..., V) in float32: temperature, then top-p.

    Temperature 0 gives the one-hot distribution of the argmax (greedy as a distribution)."""
    if cfg.temperature == 0:
        return torch.zeros_like(logits, dtype=torch.float32).scatter(-1, logits.argmax(-1, keepdim=True), 1.0)
    probs = torch.softmax(logits.float() / cfg.temperature, dim=-1)
    if cfg.top_p < 1:
        sorted_p, order = torch.sort(probs, dim=-1, descending=True)
        keep = torch.cumsum(sorted_p, dim=-1) - sorted_p < cfg.top_p  # the smallest set reaching top_p
        keep[..., 0] = True  # the most likely token always stays (a top_p that rounds to 0 in float32)
        sorted_p = torch.where(keep, sorted_p, torch.zeros_like(sorted_p))
        probs = torch.zeros_like(probs).scatter(-1, order, sorted_p)
        probs = probs / probs.sum(-1, keepdim=True)
    return probs


def sample(logits: torch.Tensor, cfg: SamplingConfig, generator: torch.Generator | None) -> int:
    """logits (V,) -> the next token."""
    if cfg.temperature == 0:
        return int(torch.argmax(logits))
    return int(torch.multinomial(probabilities(logits, cfg), 1, generator=generator))


def check_request(model, prompt: list[int], max_new_tokens: int, cfg: SamplingConfig) -> None:
    """What every decoding loop checks first, with the same errors."""
    cfg.check()
    if not prompt:
        raise DataError("the prompt is empty; give some text")
    if max_new_tokens < 1:
        raise ConfigError(f"--max-new-tokens must be at least 1, not {max_new_tokens}")
    if len(prompt) + max_new_tokens > model.spec.max_positions:
        raise DataError(f"prompt ({len(prompt)} tokens) + {max_new_tokens} new tokens exceed the model's context of "
                        f"{model.spec.max_positions}; shorten the prompt or lower --max-new-tokens")


def new_generator(cfg: SamplingConfig) -> torch.Generator | None:
    """The seeded sampler of one generation (None when greedy)."""
    return None if cfg.temperature == 0 else torch.Generator().manual_seed(cfg.seed if cfg.seed is not None else 0)


def prefill(model, prompt: list[int], cfg: SamplingConfig, generator: torch.Generator | None,
            on_token: Callable[[int], None] | None = None) -> Generation:
    """Run the prompt through the model (its cache set up by the caller) and sample the first new token;
    -> the generation so far, its prefill time being the time to first token."""
    device = model.embed_tokens.weight.device
    t0 = time.perf_counter()
    logits = model(torch.tensor([prompt], device=device), torch.arange(len(prompt), device=device), last=True)
    token = sample(logits[0, -1], cfg, generator)
    out = Generation([token], time.perf_counter() - t0)
    if on_token:
        on_token(token)
    return out


@torch.inference_mode()
def generate(model, prompt: list[int], max_new_tokens: int, cfg: SamplingConfig = SamplingConfig(),
             eos_id: int | None = None, on_token: Callable[[int], None] | None = None) -> Generation:
    check_request(model, prompt, max_new_tokens, cfg)
    generator = new_generator(cfg)
    device = model.embed_tokens.weight.device
    model.setup_cache(1, len(prompt) + max_new_tokens)
    out = prefill(model, prompt, cfg, generator, on_token)
    token, pos = out.tokens[0], len(prompt)
    while len(out.tokens) < max_new_tokens and token != eos_id:
        t0 = time.perf_counter()
        logits = model(torch.tensor([[token]], device=device), torch.tensor([pos], device=device))[0, -1]
        token = sample(logits, cfg, generator)
        out.decode_s.append(time.perf_counter() - t0)
        out.tokens.append(token)
        pos += 1
        if on_token:
            on_token(token)
    return out
