"""The engine a user asks for on the command line: a model, its weight format, and a way to decode.

``frugal generate`` and ``frugal bench-lm`` share it, so what is benchmarked is what generates. Weight
formats: float32 (reference), bfloat16, weight-only int8 or int4; floating-point layers are packed once for
oneDNN (``runtime/packed.py``) unless ``pack=False``. Decoding: plain, prompt lookup, or a
draft model (another model sharing the tokenizer, or ``self:KIND[:LAYERS]``, the target's own int8/int4
copy, optionally cut to its first LAYERS blocks). Optional torch.compile of the decode step.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from ...errors import ConfigError
from .generate import Generation, SamplingConfig, generate

QUANTIZE = ("int8", "int4")
DTYPES = ("float32", "bfloat16")


@dataclass(frozen=True)
class EngineConfig:
    quantize: str | None = None  # int8 | int4 (weight-only)
    dtype: str = "float32"  # of the weights that stay floating point, activations and the KV cache
    compile: bool = False  # torch.compile the decode step
    pack: bool = True  # fp32/bf16 linear weights laid out once for oneDNN (same values, faster reads)
    draft: str | None = None  # a model reference, or self:int8 | self:int4 [:LAYERS]
    draft_tokens: int = 4  # most tokens a draft guesses per target pass (adapted to the acceptance rate)
    prompt_lookup: int = 0  # longest n-gram matched in the context; 0 = off

    def check(self) -> None:
        if self.quantize not in (None, *QUANTIZE):
            raise ConfigError(f"--quantize {self.quantize!r} is not supported; use {' or '.join(QUANTIZE)}")
        if self.dtype not in DTYPES:
            raise ConfigError(f"--dtype {self.dtype!r} is not supported; use {' or '.join(DTYPES)}")
        if self.prompt_lookup < 0:
            raise ConfigError("--prompt-lookup takes a positive n-gram length (0 turns it off)")
        if self.draft and self.prompt_lookup:
            raise ConfigError("use either --draft or --prompt-lookup, not both")
        if self.draft_tokens < 1:
            raise ConfigError(f"--draft-tokens must be at least 1, not {self.draft_tokens}")
        if self.draft and self.draft.startswith("self:"):
            _self_draft_spec(self.draft)

    @property
    def speculative(self) -> bool:
        return bool(self.draft or self.prompt_lookup)

    @property
    def label(self) -> str:
        parts = [self.quantize or self.dtype]
        if self.quantize and self.dtype != "float32":
            parts.append(self.dtype)
        if not self.pack and not self.quantize:
            parts.append("unpacked")
        if self.compile:
            parts.append("compiled")
        if self.prompt_lookup:
            parts.append(f"prompt-lookup {self.prompt_lookup}")
        if self.draft:
            parts.append(f"draft {self.draft}")
        return ", ".join(parts)

    def to_json(self) -> dict:
        return asdict(self)


def _self_draft_spec(spec: str) -> tuple[str, int | None]:
    """self:int8 -> ("int8", None); self:int4:8 -> ("int4", 8)."""
    parts = spec.split(":")[1:]
    kind = parts[0] if parts else ""
    if kind not in ("int8", "int4", "none") or len(parts) > 2 or (len(parts) == 2 and not parts[1].isdigit()):
        raise ConfigError(f"--draft {spec!r}: write self:int8, self:int4 or self:none, optionally :LAYERS "
                          "(e.g. self:int8:12 keeps the first 12 blocks)")
    return kind, int(parts[1]) if len(parts) == 2 else None


@dataclass
class Engine:
    model: object
    tokenizer: object
    config: EngineConfig = EngineConfig()
    draft: object | None = None
    compile_s: float | None = None
    timings: dict = field(default_factory=dict)

    @classmethod
    def load(cls, source: str, config: EngineConfig = EngineConfig()) -> "Engine":
        import time

        import torch

        from .loading import load_causal_lm

        config.check()
        t0 = time.perf_counter()
        model, tokenizer = load_causal_lm(source)
        engine = cls(model, tokenizer, config, timings={"load_s": time.perf_counter() - t0})
        if config.draft and not config.draft.startswith("self:"):
            engine.draft, _ = load_causal_lm(config.draft)
        if config.dtype != "float32":
            model.to(getattr(torch, config.dtype))
            if engine.draft is not None:
                engine.draft.to(getattr(torch, config.dtype))
        if config.draft and config.draft.startswith("self:"):  # drafted from the unquantized target
            from .speculative import self_draft

            kind, layers = _self_draft_spec(config.draft)
            engine.draft = self_draft(model, kind, layers=layers)
        if config.quantize:
            quantize(model, config.quantize)
        if config.pack:  # last: the packed layout is opaque to dtype changes, copies and quantizing
            from .packed import AVAILABLE, pack_linears, warm_up

            if AVAILABLE:
                t0 = time.perf_counter()
                for m in (model, engine.draft):
                    if m is not None:
                        warm_up(pack_linears(m))
                engine.timings["pack_s"] = time.perf_counter() - t0
        if config.compile:
            from .compile import compile_decode

            engine.compile_s = compile_decode(model)
        return engine

    def encode(self, text: str, chat: bool = True) -> list[int]:
        from .quality import encode_prompt

        return encode_prompt(self.tokenizer, text, chat=chat)

    def generate(self, prompt: list[int], max_new_tokens: int, sampling: SamplingConfig = SamplingConfig(),
                 on_token=None, stop_at_eos: bool = True) -> tuple[Generation, dict]:
        """-> (generation, stats); stats hold the acceptance rate when speculating."""
        eos = getattr(self.tokenizer, "eos_token_id", None) if stop_at_eos else None
        c = self.config
        if c.prompt_lookup:
            from .prompt_lookup import generate_prompt_lookup

            return generate_prompt_lookup(self.model, prompt, max_new_tokens, sampling, max_ngram=c.prompt_lookup,
                                          eos_id=eos, on_token=on_token)
        if self.draft is not None:
            from .speculative import generate_speculative

            return generate_speculative(self.model, self.draft, prompt, max_new_tokens, sampling,
                                        k=c.draft_tokens, eos_id=eos, on_token=on_token)
        return generate(self.model, prompt, max_new_tokens, sampling, eos, on_token), {}


def quantize(model, kind: str):
    """Weight-only int8 or int4 linear layers, in place."""
    if kind == "int8":
        from .quantize import quantize_int8

        return quantize_int8(model)
    from .int4 import quantize_int4

    return quantize_int4(model)
