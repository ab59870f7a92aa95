"""``frugal bench-lm``: the speed of one engine configuration next to what it costs in quality.

Speed, on the built-in prompt set (a few prompts per task slice, through the chat template, greedy, each
answer up to end-of-sequence or ``new_tokens``): prefill tokens/s, time to first token, time per output
token p50/p99, decode tokens/s at batch 1, total tokens/s with ``batch`` requests running at once
(continuous batching, plain decoding), peak resident memory while generating, and the fraction of the
memory-bandwidth roofline: weight bytes read per token x tokens/s over the read bandwidth measured on this
machine with the same threads. Quality, against the same model unoptimised (float32, plain decoding):
top-1 agreement and KL divergence of the next-token distributions per slice, perplexity on held-out text,
and the speculative acceptance rate per slice. ``baseline="hf"`` also times transformers' ``generate`` on
the same weights, prompts and threads, and checks its greedy tokens against the engine's.
"""

from __future__ import annotations

import platform
import statistics
import time
from dataclasses import dataclass

import numpy as np
import torch

from ...errors import ConfigError, need
from ...version import __version__
from .batching import BatchEngine, Request
from .engine import Engine, EngineConfig
from ..memory import reset_peak, rss_mb
from .formats import weight_bytes
from .prompts import PROMPTS


@dataclass(frozen=True)
class BenchConfig:
    new_tokens: int = 64
    batch: int = 16  # requests running at once in the batched measurement; 1 skips it
    threads: int = 2
    prompts_per_slice: int = 2  # for speed; quality uses every built-in prompt
    baseline: str | None = None  # "hf": transformers' generate on the same weights
    quality: bool = True
    user_prompts: tuple[str, ...] = ()  # measured as their own slice, "user"

    def check(self) -> None:
        if self.new_tokens < 2:
            raise ConfigError(f"--new-tokens must be at least 2, not {self.new_tokens}")
        if self.batch < 1:
            raise ConfigError(f"--batch must be at least 1, not {self.batch}")
        if self.threads < 1:
            raise ConfigError(f"--threads must be at least 1, not {self.threads}")
        if self.prompts_per_slice < 1:
            raise ConfigError("--prompts-per-slice must be at least 1")
        if self.baseline not in (None, "hf"):
            raise ConfigError(f"--baseline {self.baseline!r} is not supported; use hf")


def memory_bandwidth_gb_s(threads: int, mib: int = 512, repeats: int = 5) -> float:
    """Read bandwidth: the best of ``repeats`` sums over a buffer far larger than the caches."""
    torch.set_num_threads(threads)
    x = torch.ones(mib * 2**20 // 4)
    x.sum()
    best = min(_timed(x.sum) for _ in range(repeats))
    return x.numel() * 4 / best / 1e9


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def speed_prompts(cfg: BenchConfig) -> dict[str, list[str]]:
    slices = {name: list(p[: cfg.prompts_per_slice]) for name, p in PROMPTS.items()}
    if cfg.user_prompts:
        slices["user"] = list(cfg.user_prompts)
    return slices


def _no_progress(stage: str, done: float, total: float, what: str = "") -> None:
    return None


def measure_speed(engine: Engine, slices: dict[str, list[str]], cfg: BenchConfig, progress=_no_progress) -> dict:
    runs = []
    todo = [(name, text) for name, texts in slices.items() for text in texts]
    for k, (name, text) in enumerate(todo):
        progress("batch-1", k, len(todo), f"prompt {k + 1}/{len(todo)} ({name})")
        ids = engine.encode(text)
        g, stats = engine.generate(ids, cfg.new_tokens)
        runs.append({"slice": name, "prompt": ids, "gen": g, "stats": stats})
    progress("batch-1", len(todo), len(todo), f"{len(todo)} prompts")
    prompt_tokens = sum(len(r["prompt"]) for r in runs)
    prefill_s = sum(r["gen"].prefill_s for r in runs)
    decode_s = [t for r in runs for t in r["gen"].decode_s]
    tokens = sum(len(r["gen"].tokens) for r in runs)
    out = {
        "prompts": len(runs), "prompt_tokens": prompt_tokens, "generated_tokens": tokens,
        "prefill_tokens_per_s": prompt_tokens / prefill_s,
        "ttft_ms": 1000 * statistics.median(r["gen"].prefill_s for r in runs),
        # p99 over the prompts timed: with a few prompts, the slowest one's prefill
        "ttft_ms_p99": 1000 * float(np.percentile([r["gen"].prefill_s for r in runs], 99)),
        "tpot_ms_p50": 1000 * float(np.percentile(decode_s, 50)) if decode_s else float("nan"),
        "tpot_ms_p99": 1000 * float(np.percentile(decode_s, 99)) if decode_s else float("nan"),
        "decode_tokens_per_s": len(decode_s) / sum(decode_s) if decode_s else float("nan"),
        "end_to_end_tokens_per_s": tokens / (prefill_s + sum(decode_s)),
        "tokens": [r["gen"].tokens for r in runs],
    }
    if engine.config.speculative:
        proposed = sum(r["stats"].get("proposed", 0) for r in runs)
        accepted = sum(r["stats"].get("accepted", 0) for r in runs)
        out["acceptance_rate"] = accepted / proposed if proposed else 0.0
    return out


def measure_batch(engine: Engine, slices: dict[str, list[str]], cfg: BenchConfig) -> dict:
    """4 x batch requests queued at once (the speed prompts, cycled), at most ``batch`` running: rows refill as
    answers end."""
    texts = [t for ts in slices.values() for t in ts]
    prompts = [engine.encode(texts[i % len(texts)]) for i in range(4 * cfg.batch)]
    eos = getattr(engine.tokenizer, "eos_token_id", None)
    batcher = BatchEngine(engine.model, max_batch=cfg.batch, max_len=max(map(len, prompts)) + cfg.new_tokens)
    requests = [Request(p, cfg.new_tokens, eos_id=eos) for p in prompts]
    t0 = time.perf_counter()
    batcher.run(requests)
    wall = time.perf_counter() - t0
    tokens = sum(len(r.tokens) for r in requests)
    return {"batch": cfg.batch, "requests": len(requests), "generated_tokens": tokens,
            "total_tokens_per_s": tokens / wall, "decode_tokens_per_s": batcher.decode_tokens_per_s,
            "prefill_share": batcher.prefill_s / wall, "mean_running": statistics.mean(batcher.batch_sizes),
            "ttft_ms_p50": 1000 * statistics.median(r.ttft_s for r in requests)}


def measure_hf(source: str, engine: Engine, slices: dict[str, list[str]], cfg: BenchConfig,
               our_tokens: list[list[int]], progress=_no_progress) -> dict:
    """transformers' generate (float32, its default cache) on the same weights, prompts and threads."""
    from .loading import load_hf_reference

    progress("baseline", 0, 1, f"loading {source} in transformers")
    hf = load_hf_reference(source)
    eos = getattr(engine.tokenizer, "eos_token_id", None)
    times, ttfts, tokens, same = [], [], 0, []
    runs = [engine.encode(t) for ts in slices.values() for t in ts]
    with torch.inference_mode():
        hf.generate(torch.tensor([runs[0]]), max_new_tokens=4, do_sample=False, pad_token_id=eos or 0)
        for k, (ids, ours) in enumerate(zip(runs, our_tokens)):
            progress("baseline", k, len(runs), f"prompt {k + 1}/{len(runs)}")
            x = torch.tensor([ids])
            ttfts.append(_timed(lambda: hf.generate(x, max_new_tokens=1, do_sample=False, pad_token_id=eos or 0)))
            t0 = time.perf_counter()
            out = hf.generate(x, max_new_tokens=cfg.new_tokens, do_sample=False, eos_token_id=eos,
                              pad_token_id=eos or 0)[0, len(ids):].tolist()
            times.append(time.perf_counter() - t0)
            tokens += len(out)
            k = min(len(out), len(ours))
            same.append(out[:k] == ours[:k])
    progress("baseline", len(runs), len(runs), f"{len(runs)} prompts")
    return {"name": "transformers generate (float32)", "end_to_end_tokens_per_s": tokens / sum(times),
            "decode_tokens_per_s": (tokens - len(runs)) / (sum(times) - sum(ttfts)),
            "ttft_ms": 1000 * statistics.median(ttfts), "generated_tokens": tokens,
            "identical_greedy_tokens": all(same)}


def bench_lm(source: str, engine_cfg: EngineConfig = EngineConfig(), cfg: BenchConfig = BenchConfig(),
             progress=_no_progress) -> dict:
    """``progress(stage, done, total, what)``: stage "load", "batch-1" (per prompt: "prompt 3/8 (qa)"),
    "batched", "baseline" (per prompt), "quality" (per prompt, then perplexity)."""
    progress = progress or _no_progress
    cfg.check()
    engine_cfg.check()
    if cfg.baseline == "hf":  # before minutes of measuring
        need("transformers", "--baseline hf", "lm")
    torch.set_num_threads(cfg.threads)
    loading = f"{source} ({engine_cfg.label})"
    progress("load", 0, 1, loading)
    engine = Engine.load(source, engine_cfg)
    slices = speed_prompts(cfg)
    engine.generate(engine.encode(slices["qa"][0]), 4)  # warm-up
    progress("load", 1, 1, loading)
    has_peak = reset_peak()
    speed = measure_speed(engine, slices, cfg, progress)
    peak = rss_mb()[1] if has_peak else float("nan")
    progress("bandwidth", 0, 1, f"reading 512 MiB with {cfg.threads} threads")
    bandwidth = memory_bandwidth_gb_s(cfg.threads)
    progress("bandwidth", 1, 1, f"{bandwidth:.1f} GB/s")
    torch.set_num_threads(cfg.threads)
    weights = weight_bytes(engine.model)
    result = {
        "frugalml_version": __version__, "model": source, "engine": engine_cfg.to_json(), "label": engine_cfg.label,
        "threads": cfg.threads, "settings": {"new_tokens": cfg.new_tokens, "prompts_per_slice": cfg.prompts_per_slice,
                                             "batch": cfg.batch, "baseline": cfg.baseline,
                                             "user_prompts": len(cfg.user_prompts)},
        "machine": f"{platform.machine()}, {torch.get_num_threads()} threads, {platform.processor() or ''}".strip(", "),
        "load_s": engine.timings["load_s"], "compile_s": engine.compile_s,
        **{k: v for k, v in speed.items() if k != "tokens"},
        "peak_memory_mb": peak, "weight_bytes_per_token": weights, "bandwidth_gb_s": bandwidth,
        "roofline_tokens_per_s": bandwidth * 1e9 / weights,
        "roofline_fraction": speed["decode_tokens_per_s"] * weights / (bandwidth * 1e9),
    }
    if cfg.batch > 1:
        batching = f"{4 * cfg.batch} requests, {cfg.batch} at once"
        progress("batched", 0, 1, batching)
        result["batched"] = measure_batch(engine, slices, cfg)
        progress("batched", 1, 1, batching)
        batched = result["batched"]
        batched["ratio_to_batch1"] = batched["decode_ratio_to_batch1"] = None
        if not engine_cfg.speculative:  # the batch engine does not speculate: no like-for-like batch-1 rate then
            batched["ratio_to_batch1"] = batched["total_tokens_per_s"] / speed["end_to_end_tokens_per_s"]
            batched["decode_ratio_to_batch1"] = batched["decode_tokens_per_s"] / speed["decode_tokens_per_s"]
    if cfg.baseline == "hf":
        base = measure_hf(source, engine, slices, cfg, speed["tokens"], progress)
        base["ratio"] = speed["end_to_end_tokens_per_s"] / base["end_to_end_tokens_per_s"]
        result["baseline"] = base
    if cfg.quality:
        result["quality"] = measure_quality(source, engine, cfg, progress)
    return _finite(result)


def _finite(x):
    """NaN and infinity -> None, so the result is strict JSON."""
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_finite(v) for v in x]
    if isinstance(x, float) and not np.isfinite(x):
        return None
    return x


def measure_quality(source: str, engine: Engine, cfg: BenchConfig, progress=_no_progress) -> dict:
    from .prompts import HELDOUT_SOURCE, heldout_text
    from .quality import perplexity, quality_report

    c = engine.config
    optimised = c.quantize or c.dtype != "float32" or c.pack
    if not optimised and not c.speculative:  # the reference itself: nothing to compare, perplexity alone
        progress("quality", 0, 1, "perplexity of the reference")
        ids = [int(i) for i in engine.tokenizer.encode(heldout_text())][:1536]
        return {"perplexity_text_source": HELDOUT_SOURCE, "perplexity_text_tokens": len(ids),
                "perplexity_reference": perplexity(engine.model, ids, 256)}
    # the reference: fp32 weights, not packed (packing changes only the summation order; measured, not assumed)
    progress("quality", 0, 1, "loading the float32 reference")
    reference = Engine.load(source, EngineConfig(pack=False)).model if optimised else engine.model
    acceptance = None
    if c.speculative:
        def acceptance(ids):
            _, stats = engine.generate(ids, cfg.new_tokens)
            return stats.get("acceptance_rate")
    slices = None
    if cfg.user_prompts:
        slices = {**PROMPTS, "user": list(cfg.user_prompts)}
    return quality_report(reference, engine.model, engine.tokenizer, new_tokens=min(cfg.new_tokens, 32),
                          slices=slices, acceptance=acceptance,
                          progress=lambda done, total, what: progress("quality", done, total, what))
