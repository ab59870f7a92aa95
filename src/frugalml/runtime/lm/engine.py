"""The engine a user asks for on the command line: a model, its weight format, and a way to decode.

``frugal generate`` and ``frugal bench-lm`` share it, so what is benchmarked is what generates. Weight
formats (``formats/``, by name): float32 (reference) or bfloat16 for everything (``dtype``), the linear layers
optionally weight-only int8 or int4 (``quantize``, made once and then read from ``weight_cache.py``);
floating-point layers are packed once for oneDNN (``packed.py``) unless ``pack=False``. Decoding: plain,
prompt lookup, or a draft model (another model sharing the tokenizer, or ``self:KIND[:LAYERS]``, the
target's own int8/int4 copy, optionally cut to its first LAYERS blocks). Optional torch.compile of the
decode step.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from ...errors import ConfigError
from .formats import format_names
from .generate import Generation, SamplingConfig, generate


@dataclass(frozen=True)
class EngineConfig:
    quantize: str | None = None  # int8 | int4 (weight-only)
    dtype: str = "float32"  # of the weights that stay floating point, activations and the KV cache
    compile: bool = False  # torch.compile the decode step
    pack: bool = True  # fp32/bf16 linear weights laid out once for oneDNN (same values, faster reads)
    draft: str | None = None  # a model reference, or self:int8 | self:int4 [:LAYERS]
    draft_tokens: int = 4  # most tokens a draft guesses per target pass (adapted to the acceptance rate)
    prompt_lookup: int = 0  # longest n-gram matched in the context; 0 = off
    cache: bool = True  # quantized weights read from the cache folder when made before, kept there when not

    def check(self) -> None:
        quantized, floating = format_names(quantized=True), format_names(quantized=False)
        if self.quantize not in (None, *quantized):
            raise ConfigError(f"--quantize {self.quantize!r} is not supported; use {' or '.join(quantized)}")
        if self.dtype not in floating:
            raise ConfigError(f"--dtype {self.dtype!r} is not supported; use {' or '.join(floating)}")
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
    kinds = [f"self:{k}" for k in (*format_names(quantized=True), "none")]
    if f"self:{kind}" not in kinds or len(parts) > 2 or (len(parts) == 2 and not parts[1].isdigit()):
        raise ConfigError(f"--draft {spec!r}: write {', '.join(kinds[:-1])} or {kinds[-1]}, optionally :LAYERS "
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

        from .formats import weight_format
        from .loading import load_causal_lm, source_files
        from .weight_cache import WeightCache

        config.check()
        t0 = time.perf_counter()
        model, tokenizer = load_causal_lm(source)
        engine = cls(model, tokenizer, config, timings={"load_s": time.perf_counter() - t0})
        floats = weight_format(config.dtype, pack=config.pack)  # of every layer not quantized
        model.to(floats.dtype)
        if config.draft and not config.draft.startswith("self:"):
            engine.draft, _ = load_causal_lm(config.draft)
            engine.draft.to(floats.dtype)
        cache = WeightCache.for_sources(source_files(source)) if config.cache else None
        t0 = time.perf_counter()
        if config.draft and config.draft.startswith("self:"):  # drafted from the unquantized target
            from .speculative import self_draft

            kind, layers = _self_draft_spec(config.draft)
            engine.draft = self_draft(model, kind, layers=layers, cache=cache)
        if config.quantize:
            quantize = weight_format(config.quantize)
            if cache is None:
                quantize.convert(model)
            else:
                cache.convert(model, quantize)
        engine.timings["quantize_s"] = time.perf_counter() - t0  # or read from the cache
        if config.pack:  # last: the packed layout is opaque to dtype changes, copies and quantizing
            from .packed import AVAILABLE, warm_up

            if AVAILABLE:
                t0 = time.perf_counter()
                for m in (model, engine.draft):
                    if m is not None:
                        warm_up(floats.convert(m))
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
