"""The arithmetic of ``frugal bench``, apart from any HTTP: arrival schedules, per-request metrics, their
summaries (one run's shots -> its numbers), the Server scenario's validity rules and the peak-rate search.

Definitions follow ``vllm bench serve`` so the numbers compare with published ones (see
``shared/research/serving_anchors.md``, section 1):

- TTFT: send -> the first SSE chunk whose ``choices`` is not empty, even if its text is empty. Beside it,
  ``ttft_content``: send -> the first chunk carrying text (what a reader of the stream sees).
- E2EL: send -> the last chunk with ``choices`` (the usage trailer and ``[DONE]`` excluded); for a predictor,
  send -> the whole answer read.
- TPOT, per request: ``(e2el - ttft) / (output_tokens - 1)``, for requests with more than one output token.
- ITL: the gaps between successive ``choices`` chunks of a request, pooled over requests (per chunk, not per
  token).
- Percentiles: ``np.percentile`` with linear interpolation, as vLLM; the p99 comes with a distribution-free
  95 % confidence interval from order statistics (``quantile_ci``).
- Goodput: requests per second that meet every objective given (TTFT, TPOT, E2EL). A request with one output
  token counts TPOT 0, as vLLM does.

The Server scenario's arrivals and validity follow MLPerf LoadGen (section 2): seeded Poisson arrivals, a latency
percentile under its objective, a minimum duration and query count; the peak rate is found by doubling the rate
until a run fails, then bisecting.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

PERCENTILES = (50, 90, 99)


# ---- arrivals ----

def poisson_arrivals(qps: float, duration_s: float, seed: int, limit: int | None = None) -> np.ndarray:
    """Send times (seconds from the start) of a Poisson process at ``qps`` inside [0, duration_s), at most
    ``limit`` of them: exponential gaps from a seeded generator, not rescaled (an open loop, as LoadGen)."""
    if qps <= 0 or duration_s <= 0:
        raise ValueError("qps and duration_s must be positive")
    rng = np.random.default_rng(seed)
    times: list[np.ndarray] = []
    last, count = 0.0, 0
    chunk = int(qps * duration_s * 1.1) + 16
    while last < duration_s and (limit is None or count < limit):
        t = last + np.cumsum(rng.exponential(1.0 / qps, size=chunk))
        times.append(t)
        last, count = float(t[-1]), count + chunk
    out = np.concatenate(times) if times else np.zeros(0)
    out = out[out < duration_s]
    return out[:limit] if limit is not None else out


@dataclass(slots=True)
class Shot:
    """One request. Times in seconds on ``time.perf_counter``'s clock: ``scheduled`` is when the scenario meant
    to send it, ``started`` when the generator got to it (send lag), ``sent`` when it went out (after waiting for
    a concurrency slot), ``done`` when its answer was read whole."""

    scheduled: float
    started: float = math.nan
    sent: float = math.nan
    done: float = math.nan
    outcome: str = "failed"  # completed | failed | rejected
    status: int | None = None
    error: str | None = None
    # language models: the stream
    first_chunk: float | None = None  # first SSE message with choices (vLLM's TTFT)
    first_content: float | None = None  # first one carrying text
    chunks: list = field(default_factory=list)  # arrival of every message with choices
    text_chunks: int = 0
    output_tokens: int | None = None  # from the usage trailer
    input_tokens: int | None = None


# ---- per-request metrics ----

def tpot_s(e2el_s: float, ttft_s: float, output_tokens: int) -> float | None:
    """Time per output token after the first, or None when there is at most one output token."""
    if output_tokens is None or output_tokens <= 1:
        return None
    return (e2el_s - ttft_s) / (output_tokens - 1)


def itl_s(chunk_times_s) -> list[float]:
    """Gaps between successive chunks of one request."""
    t = np.asarray(chunk_times_s, dtype=float)
    return np.diff(t).tolist() if t.size > 1 else []


@dataclass(frozen=True)
class Objectives:
    """Latency objectives in milliseconds (None: not set). ``p99_ms`` bounds E2EL (a predictor's latency);
    ``ttft_ms`` and ``tpot_ms`` bound a language model's tokens. Each is met at the 99th percentile."""

    p99_ms: float | None = None
    ttft_ms: float | None = None
    tpot_ms: float | None = None

    @property
    def given(self) -> bool:
        return any(v is not None for v in (self.p99_ms, self.ttft_ms, self.tpot_ms))

    def good(self, e2el_s: float, ttft_s: float | None, tpot: float | None) -> bool:
        """Does one completed request meet every objective? (TPOT of a one-token answer counts 0.)"""
        if self.p99_ms is not None and 1000 * e2el_s > self.p99_ms:
            return False
        if self.ttft_ms is not None and (ttft_s is None or 1000 * ttft_s > self.ttft_ms):
            return False
        if self.tpot_ms is not None and 1000 * (tpot or 0.0) > self.tpot_ms:
            return False
        return True

    def to_json(self) -> dict:
        return {"p99_ms": self.p99_ms, "ttft_ms": self.ttft_ms, "tpot_ms": self.tpot_ms}


def goodput(good: int, duration_s: float) -> float:
    """Requests per second that met every objective."""
    return good / duration_s if duration_s > 0 else 0.0


# ---- summaries ----

def quantile_ci(values, q: float, confidence: float = 0.95) -> tuple[float | None, float | None]:
    """A distribution-free confidence interval for the q-th percentile: two order statistics X(l) <= X(u) with
    P(X(l) <= true percentile <= X(u)) >= confidence, whatever the distribution. The number of values below the
    true percentile is Binomial(n, q/100); each side misses with probability at most (1 - confidence)/2. A side
    is None when there are too few values to bound it (the upper bound of a p99 needs at least 368 values)."""
    from scipy.stats import binom

    x = np.sort(np.asarray(values, dtype=float))
    n, p, tail = x.size, q / 100.0, (1.0 - confidence) / 2.0
    if n == 0:
        return None, None
    # lower: the largest rank l with P(B <= l - 1) <= tail; upper: the smallest rank u with P(B <= u - 1) >= 1-tail
    k = int(binom.ppf(tail, n, p))
    if binom.cdf(k, n, p) > tail:
        k -= 1
    lower = float(x[k]) if k >= 0 else None  # rank k + 1, index k
    k = int(binom.ppf(1.0 - tail, n, p))
    upper = float(x[k]) if binom.cdf(k, n, p) >= 1.0 - tail and k < n else None  # rank k + 1, index k
    return lower, upper


def stats_ms(name: str, values_s) -> dict:
    """vLLM-style keys for one metric: mean_/median_/std_/pNN_{name}_ms, p99_{name}_ms_ci95, n_{name}.
    Values come in seconds; every number goes out in milliseconds, None when there is no value."""
    v = 1000.0 * np.asarray([x for x in values_s if x is not None], dtype=float)
    out = {f"n_{name}": int(v.size)}
    if v.size == 0:
        out.update({f"mean_{name}_ms": None, f"median_{name}_ms": None, f"std_{name}_ms": None})
        out.update({f"p{p}_{name}_ms": None for p in PERCENTILES})
        out[f"p99_{name}_ms_ci95"] = [None, None]
        out[f"max_{name}_ms"] = None
        return out
    out.update({f"mean_{name}_ms": float(v.mean()), f"median_{name}_ms": float(np.median(v)),
                f"std_{name}_ms": float(v.std())})
    out.update({f"p{p}_{name}_ms": float(np.percentile(v, p)) for p in PERCENTILES})
    out[f"p99_{name}_ms_ci95"] = list(quantile_ci(v, 99))
    out[f"max_{name}_ms"] = float(v.max())
    return out


# ---- one run's summary ----

def summarize(shots: list[Shot], elapsed_s: float, config, kind: str, rows_per_request: int = 1,
              qps: float | None = None, window_s: float | None = None, cpu_s: float = 0.0,
              max_in_flight: int = 0) -> dict:
    """The numbers of one run, vLLM's keys where vLLM has one (``duration``, ``completed``,
    ``request_throughput``, ``mean_ttft_ms``, ``p99_tpot_ms``, ...). ``config`` is the run's
    ``loadgen.BenchConfig`` (its scenario, concurrency, objectives and rules); ``kind`` is "predictor" or
    "language_model"; ``cpu_s`` the generator's CPU time and ``max_in_flight`` its most requests at once."""
    done = [s for s in shots if s.outcome == "completed"]
    out = {"sent": len(shots), "completed": len(done),
           "failed": sum(s.outcome == "failed" for s in shots),
           "rejected": sum(s.outcome == "rejected" for s in shots),
           "statuses": {str(k): v for k, v in sorted(Counter(s.status for s in shots if s.status).items())},
           "errors": [{"message": m, "count": n} for m, n in
                      Counter(s.error for s in shots if s.outcome != "completed" and s.error).most_common(5)],
           "duration": elapsed_s, "request_throughput": len(done) / elapsed_s if elapsed_s > 0 else 0.0}
    objectives = config.objectives
    lm = kind == "language_model"
    # a language model's tokens: the usage trailer's count, else (a server without it) the chunks with text
    n_out = [s.output_tokens if s.output_tokens is not None else s.text_chunks for s in done]
    e2el, ttft, tpot, good = [], [], [], 0
    for s, n in zip(done, n_out):
        e2el.append((s.chunks[-1] if lm else s.done) - s.sent)
        if lm:
            ttft.append(s.first_chunk - s.sent)
            tpot.append(tpot_s(e2el[-1], ttft[-1], n))
        good += objectives.good(e2el[-1], ttft[-1] if lm else None, tpot[-1] if lm else None)
    if lm:
        n_in = [s.input_tokens or 0 for s in done]
        out.update({"total_input_tokens": int(sum(n_in)), "total_output_tokens": int(sum(n_out)),
                    "output_throughput": sum(n_out) / elapsed_s if elapsed_s > 0 else 0.0,
                    "total_token_throughput": (sum(n_in) + sum(n_out)) / elapsed_s if elapsed_s > 0 else 0.0,
                    "usage_missing": sum(s.output_tokens is None for s in done)})
        out.update(stats_ms("ttft", ttft))
        out.update(stats_ms("ttft_content", [s.first_content - s.sent for s in done if s.first_content is not None]))
        out.update(stats_ms("tpot", tpot))
        out.update(stats_ms("itl", [g for s in done for g in itl_s(s.chunks)]))
    else:
        out["rows_per_s"] = out["request_throughput"] * rows_per_request
    out.update(stats_ms("e2el", e2el))
    out["request_goodput"] = goodput(good, elapsed_s) if objectives.given else None

    lag = [s.started - s.scheduled for s in shots]
    queue = [s.sent - s.started for s in shots]
    gen = {"send_lag_ms_p50": _pct_ms(lag, 50), "send_lag_ms_p99": _pct_ms(lag, 99),
           "cpu_share": cpu_s / elapsed_s if elapsed_s > 0 else 0.0, "max_in_flight": max_in_flight}
    if config.scenario == "server" and config.concurrency:
        gen.update({"client_queue_ms_mean": 1000 * float(np.mean(queue)) if queue else None,
                    "client_queue_ms_p99": _pct_ms(queue, 99)})
    out["generator"] = gen
    if config.scenario == "server":  # LoadGen reports the scheduled rate and the completed one
        window = window_s or config.duration_s
        out.update({"target_qps": qps, "window_s": window, "scheduled_qps": len(shots) / window,
                    "achieved_qps": out["request_throughput"]})
        out["validity"] = validity(out, objectives, config.rules, window).to_json()
    out["warnings"] = _warnings(out, config, lm)
    return out


def _pct_ms(values, p) -> float | None:
    return 1000 * float(np.percentile(values, p)) if len(values) else None


def _warnings(out: dict, config, lm: bool) -> list[str]:
    """When the numbers may describe the generator rather than the server, or miss something, say so."""
    w, gen = [], out["generator"]
    median = out.get("median_e2el_ms") or 0.0
    lag50, lag99 = gen["send_lag_ms_p50"] or 0.0, gen["send_lag_ms_p99"] or 0.0
    if lag50 > 0.1 * median or lag99 > max(5.0, 0.5 * median):
        w.append(f"the load generator sent requests late (send lag p50 {lag50:.1f} ms, p99 {lag99:.1f} ms, against "
                 f"a median latency of {median:.1f} ms): it may be the bottleneck")
    if gen["cpu_share"] > 0.8:
        w.append(f"the load generator used {100 * gen['cpu_share']:.0f} % of a core: it may be the bottleneck")
    if config.scenario == "server":
        target, scheduled, achieved = out["target_qps"], out["scheduled_qps"], out["achieved_qps"]
        if abs(scheduled - target) > 0.1 * target:
            w.append(f"the seeded Poisson schedule drew {out['sent']} arrivals, {scheduled:.2f}/s for a target of "
                     f"{target:g}/s: a run this short varies; lengthen --duration-s")
        if achieved < 0.9 * scheduled:
            w.append(f"the server completed {achieved:.2f} requests/s of the {scheduled:.2f}/s sent: it fell behind")
    if lm and out.get("usage_missing"):
        w.append(f"{out['usage_missing']} answers had no usage trailer: their output tokens are counted as text "
                 "chunks")
    if out["failed"]:
        w.append(f"{out['failed']} requests failed; the most frequent error: {out['errors'][0]['message']}"
                 if out["errors"] else f"{out['failed']} requests failed")
    return w


# ---- the Server scenario's validity (LoadGen's rules) ----

@dataclass(frozen=True)
class Rules:
    """What makes a Server run VALID besides its objectives: LoadGen's minimum duration (of the arrival
    window) and query count, and at most ``max_error_share`` of the requests failed or rejected (an error is a
    request that missed its objective, as a 99th percentile allows 1 % to)."""

    min_duration_s: float = 10.0
    min_queries: int = 100
    max_error_share: float = 0.01


@dataclass
class Validity:
    valid: bool
    checks: list[tuple[str, bool, str]] = field(default_factory=list)  # (rule, satisfied, detail)

    def to_json(self) -> dict:
        return {"valid": self.valid, "checks": [{"rule": r, "ok": ok, "detail": d} for r, ok, d in self.checks],
                "reasons": [f"{r}: {d}" for r, ok, d in self.checks if not ok]}


def validity(summary: dict, objectives: Objectives, rules: Rules, window_s: float) -> Validity:
    """Check a Server run: each objective's p99 (vLLM's TTFT for ``ttft_ms``), the error share, the arrival
    window and the completed count. ``summary`` holds the keys of ``stats_ms`` and the counts."""
    checks = []
    for key, metric, label in (("p99_ms", "e2el", "p99 latency"), ("ttft_ms", "ttft", "p99 TTFT"),
                               ("tpot_ms", "tpot", "p99 TPOT")):
        target = getattr(objectives, key)
        if target is None:
            continue
        got = summary.get(f"p99_{metric}_ms")
        ok = got is not None and got <= target
        shown = "no completed request" if got is None else f"{got:.2f} ms"
        checks.append((f"{label} <= {target:g} ms", ok, shown))
    if not objectives.given:
        checks.append(("latency objective", False, "none given (--slo-p99-ms, or --slo-ttft-ms/--slo-tpot-ms)"))
    sent = summary["sent"]
    errors = summary["failed"] + summary["rejected"]
    share = errors / sent if sent else 0.0
    checks.append((f"errors <= {100 * rules.max_error_share:g} %", share <= rules.max_error_share,
                   f"{errors} of {sent} failed or rejected ({100 * share:.1f} %)"))
    checks.append((f"min duration {rules.min_duration_s:g} s", window_s >= rules.min_duration_s,
                   f"arrivals over {window_s:.1f} s"))
    checks.append((f"min queries {rules.min_queries}", summary["completed"] >= rules.min_queries,
                   f"{summary['completed']} completed"))
    return Validity(all(ok for _, ok, _ in checks), checks)


# ---- the peak rate ----

def find_peak(measure, start_qps: float, precision: float = 0.05, max_runs: int = 12):
    """The highest rate that passes, LoadGen's way: ``measure(qps) -> (passed, result)`` runs once per rate.
    The start must pass; the rate doubles until a run fails, then the [pass, fail) bracket is bisected until its
    width is within ``precision`` of its lower end, or ``max_runs`` runs were made.
    -> (peak qps or None when the start fails, [(qps, passed, result) in the order run])."""
    steps = []

    def run(qps):
        passed, result = measure(qps)
        steps.append((qps, bool(passed), result))
        return passed

    if not run(start_qps):
        return None, steps
    low, high = start_qps, None
    while high is None and len(steps) < max_runs:
        if run(2 * low):
            low = 2 * low
        else:
            high = 2 * low
    while high is not None and (high - low) > precision * low and len(steps) < max_runs:
        mid = (low + high) / 2
        if run(mid):
            low = mid
        else:
            high = mid
    return low, steps

