"""Cost of a fitted candidate, measured on the artifact that would be deployed.

The deployed artifact is the ONNX Runtime session when the pipeline exports and the export reproduces
the native predictions; otherwise the scikit-learn object itself. The native object is always timed too,
for reference: it is what a user ships without frugalml.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from ..candidates.export import OnnxExportError, export_onnx, onnx_agreement, onnx_is_faithful

from ..runtime.sessions import OnnxPredictor

from ..runtime.model_dir import skops_bytes
from ..data import Schema, all_rows, take_rows
from .energy import EnergyMeter


@dataclass(frozen=True)
class CostConfig:
    threads: int = 1  # threads for every measurement (ONNX Runtime intra-op, BLAS/OpenMP)
    batch_large: int = 1000  # rows per call for throughput and peak memory
    # Latency: batch-1 calls are timed until the p99's 95% interval is within latency_precision of it (at
    # least 50 calls), or latency_calls calls, or time_budget_s seconds (native_time_budget_s for the native
    # object, timed for reference only, when the deployed artifact is another one).
    latency_calls: int = 20_000  # most timed batch-1 calls per latency measurement
    time_budget_s: float = 0.75  # most seconds per latency measurement of the deployed artifact
    usd_per_hour: float = 0.096  # instance price; default: a 2-vCPU general-purpose cloud instance
    instance_vcpus: int = 2
    grid_gco2e_per_kwh: float = 475.0  # world average used by CodeCarbon when the region is unknown
    memory_probe: bool = True  # measure peak memory in one child process, each candidate in a fork of it
    latency_precision: float = 0.05  # the p99's interval within 5% of it: finer than its two significant figures
    native_time_budget_s: float = 0.25  # most seconds for the native object's latency (at most time_budget_s)
    throughput_budget_s: float = 3.0  # most seconds of throughput calls (best of up to 3 after a warm-up; a model
    # too slow for that at batch_large rows is timed on fewer, at least 64: throughput_batch_rows says how many)

    def to_json(self) -> dict:
        return asdict(self)


# Fitted attributes that describe the fit rather than parameterise the model.
_NOT_PARAMS = {"classes_", "n_iter_", "n_features_in_", "feature_names_in_", "n_samples_seen_", "n_outputs_",
               "class_count_", "n_layers_", "t_", "loss_curve_", "validation_scores_", "best_loss_"}


def external_bytes(obj) -> int:
    """Bytes a model reads from outside its own file when deployed (the frozen MiniLM encoder's weights, loaded
    from an installed package), through pipelines and column transformers; counted in its size. A file
    several parts read (one encoder for two text columns) is loaded, and counted, once."""
    return sum(os.path.getsize(f) for f in _external_files(obj))


def _external_files(obj) -> set:
    if hasattr(obj, "frugal_external_files"):
        return {str(f) for f in obj.frugal_external_files()}
    parts = []
    if hasattr(obj, "steps"):
        parts = [s for _, s in obj.steps if s not in (None, "passthrough")]
    elif hasattr(obj, "transformers_"):
        parts = [t for _, t, _ in obj.transformers_ if not isinstance(t, str)]
    return set().union(*(_external_files(p) for p in parts))


def count_params(obj, _seen=None) -> int:
    """Learned numbers: arrays in fitted attributes (``name_``), tree nodes, recursively through pipelines."""
    _seen = _seen if _seen is not None else set()
    if id(obj) in _seen:
        return 0
    _seen.add(id(obj))
    if hasattr(obj, "frugal_param_count"):  # models whose numbers live outside numpy arrays (MiniLM: safetensors)
        return int(obj.frugal_param_count())
    if hasattr(obj, "steps"):
        return sum(count_params(s, _seen) for _, s in obj.steps if s not in (None, "passthrough"))
    if hasattr(obj, "transformers_"):
        return sum(count_params(t, _seen) for _, t, _ in obj.transformers_ if not isinstance(t, str))
    if hasattr(obj, "booster_"):  # LightGBM: every node of every tree
        dump = obj.booster_.dump_model()
        return sum(_lgb_nodes(t["tree_structure"]) for t in dump["tree_info"])
    if hasattr(obj, "_predictors"):  # scikit-learn histogram gradient boosting
        return sum(len(p.nodes) for it in obj._predictors for p in it)
    if hasattr(obj, "tree_") and hasattr(obj.tree_, "node_count"):
        return int(obj.tree_.node_count)
    total = 0
    for name, value in vars(obj).items():
        if not name.endswith("_") or name.startswith("_") or name in _NOT_PARAMS:
            continue
        if isinstance(value, np.ndarray) and value.dtype.kind in "fiub":
            total += value.size
        elif isinstance(value, list) and value and hasattr(value[0], "fit"):
            total += sum(count_params(v, _seen) for v in value)
        elif isinstance(value, list) and value and isinstance(value[0], np.ndarray):
            total += sum(v.size for v in value if v.dtype.kind in "fiub")
        elif isinstance(value, np.ndarray) and value.dtype == object and value.size and hasattr(value.flat[0], "fit"):
            total += sum(count_params(v, _seen) for v in value.flat)
    if hasattr(obj, "_fit_X") and isinstance(obj._fit_X, np.ndarray):  # k-NN keeps its training rows
        total += obj._fit_X.size
    return int(total)


def _lgb_nodes(node) -> int:
    if "split_index" not in node:
        return 1
    return 1 + _lgb_nodes(node["left_child"]) + _lgb_nodes(node["right_child"])


MIN_CALLS = 50  # a latency measurement times at least this many calls, whatever its budget
P99_BOUNDED = 368  # the fewest calls whose p99 has a 95% upper bound: 1 - 0.99^n >= 0.975


def quantile_interval(values, q: float = 0.99, confidence: float = 0.95) -> tuple[float, float]:
    """Distribution-free interval of the ``q`` quantile from order statistics: [x_(r), x_(s)] with
    P(r <= B < s) >= ``confidence`` for B ~ Binomial(n, q), the number of values below the quantile.

    An end the values cannot bound is infinite: the p99's upper end needs at least ``P99_BOUNDED`` values; with
    fewer, the slowest call seen may still be faster than the p99.
    """
    from scipy.stats import binom

    x = np.sort(np.asarray(values, dtype=float))
    n, tail = len(x), (1 - confidence) / 2
    r = int(binom.ppf(tail, n, q))  # 1-based ranks
    s = int(binom.ppf(1 - tail, n, q)) + 1
    return (float(x[r - 1]) if r >= 1 else -np.inf, float(x[s - 1]) if s <= n else np.inf)


def _time_calls(fn, inputs: list, cfg: CostConfig, meter: EnergyMeter, budget_s: float | None = None) -> dict:
    """Batch-1 latency of ``fn`` after a warm-up: calls timed until the p99's interval is within
    ``cfg.latency_precision`` of it, or ``cfg.latency_calls`` calls, or ``budget_s`` seconds (at least 50).

    The interval is checked after ``P99_BOUNDED`` calls (the fewest that bound the p99 from above), then every
    quarter more, and when a cap stops the timing: a fast, steady function stops after a few hundred calls, a
    noisy one runs to a cap.
    """
    import scipy.stats  # noqa: F401  (quantile_interval's, imported before the clock starts)

    budget_s = cfg.time_budget_s if budget_s is None else budget_s
    for k in range(min(20, len(inputs))):  # warm-up: caches, lazy initialisation
        fn(inputs[k])
    cap = max(MIN_CALLS, cfg.latency_calls)
    times = np.empty(cap, dtype=np.int64)
    check = max(MIN_CALLS, P99_BOUNDED)
    n, stopped, interval = 0, "calls", (-np.inf, np.inf)
    deadline = time.perf_counter_ns() + int(budget_s * 1e9)
    with meter.measure() as window:
        while n < cap:
            t0 = time.perf_counter_ns()
            fn(inputs[n % len(inputs)])
            t1 = time.perf_counter_ns()
            times[n] = t1 - t0
            n += 1
            if n == check or n == cap or (n >= MIN_CALLS and t1 > deadline):
                interval = quantile_interval(times[:n])
                p99 = np.percentile(times[:n], 99)
                if max(p99 - interval[0], interval[1] - p99) <= cfg.latency_precision * p99:
                    stopped = "precise"
                    break
                if n >= MIN_CALLS and t1 > deadline:
                    stopped = "time"
                    break
                check = n + max(MIN_CALLS, n // 4)
    ms = times[:n] / 1e6
    return {"p50": float(np.percentile(ms, 50)), "p99": float(np.percentile(ms, 99)), "mean": float(ms.mean()),
            "p99_ci": [interval[0] / 1e6, interval[1] / 1e6], "calls": n, "stopped": stopped,
            "joules_per_call": window.joules / n}


def _take(batch, n: int):
    """The first ``n`` rows of a frame or of ONNX feeds."""
    return batch.iloc[:n] if hasattr(batch, "iloc") else {k: v[:n] for k, v in batch.items()}


def _throughput(fn, batch, repeats: int = 3, budget_s: float = 3.0, head: int = 64) -> tuple[float, int]:
    """(rows per second, rows per call): the best of up to ``repeats`` timed calls after a warm-up, stopped
    once the calls have taken ``budget_s``.

    A first call on ``head`` rows warms the model up and tells how long the batch would take: a model too slow
    to be called ``repeats + 1`` times on the whole batch within the budget (a transformer encoder reading long
    texts) is timed on as many rows as fit (at least ``head``), not for minutes.
    """
    n = len(batch) if hasattr(batch, "iloc") else len(next(iter(batch.values())))
    head = min(head, n)
    t_start = time.perf_counter()
    fn(_take(batch, head))
    per_row = (time.perf_counter() - t_start) / head
    fits = int(budget_s / (repeats + 1) / max(per_row, 1e-12))
    if fits < n:
        n = max(head, fits)
        batch = _take(batch, n)
    if n > head:
        fn(batch)  # warm-up at this batch size
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn(batch)
        best = min(best, time.perf_counter() - t0)
        if time.perf_counter() - t_start > budget_s:
            break
    return n / best, n


def _agreement_rows(X: pd.DataFrame, rng, schema: Schema) -> pd.DataFrame:
    """The rows on which an ONNX export must reproduce the native predictions (the first draw of ``rng``): 2,000,
    or 256 images (each costs a network's pass, four times: labels and probabilities, native and exported)."""
    return take_rows(X, rng.choice(len(X), size=min(len(X), 256 if schema.image else 2000), replace=False))


def agreement_sample(X: pd.DataFrame, schema: Schema, seed: int) -> pd.DataFrame:
    """The rows ``measure_cost(..., seed=seed)`` checks an export on, for an artifact made ahead of it."""
    return _agreement_rows(X, np.random.default_rng(seed), schema)


def deployable(pipeline, schema: Schema, sample: pd.DataFrame) -> dict:
    """The artifact to deploy and save: skops bytes, and ONNX bytes when the export reproduces the native
    predictions on ``sample`` (``agreement``; else ``onnx_error`` says why it is not deployed)."""
    artifact: dict = {"skops": skops_bytes(pipeline), "onnx": None}
    try:
        onnx_data = export_onnx(pipeline, schema)
        agreement = onnx_agreement(pipeline, onnx_data, sample, schema)
        artifact["agreement"] = agreement
        if onnx_is_faithful(agreement, schema.task):
            artifact["onnx"] = onnx_data
        else:
            artifact["onnx_error"] = f"ONNX export disagrees with the native model ({agreement}); deploying native"
    except OnnxExportError as exc:
        artifact["onnx_error"] = str(exc)
    return artifact


def refit_deployable(estimator, schema: Schema, scale: bool, X: pd.DataFrame, y: np.ndarray, seed: int = 0,
                     embeddings=()) -> tuple:
    """Fit a candidate on all rows and make its artifact -> (pipeline, artifact), for ``measure_cost``.

    Apart from the timing, so that ``select`` runs the refits of all candidates side by side in its worker
    processes (one thread each, as the folds were fitted) and then times each alone. ``embeddings``: the
    tables the folds' fits used (``tables.embed_distinct``).
    """
    from ..candidates import build_pipeline
    from ..candidates.tables import using_embeddings

    pipeline = build_pipeline(estimator, schema, scale)
    with using_embeddings(embeddings):
        pipeline.fit(all_rows(X), y)
    return pipeline, deployable(pipeline, schema, agreement_sample(X, schema, seed))


def measure_cost(pipeline, schema: Schema, X: pd.DataFrame, cfg: CostConfig, *, fit_s: float,
                 meter: EnergyMeter | None = None, seed: int = 0, artifact: dict | None = None) -> tuple[dict, dict]:
    """-> (cost dict for decision.json, artifact dict with the bytes to save and how they were chosen).

    ``artifact``: made already (``refit_deployable``); by default it is made here.
    """
    from threadpoolctl import threadpool_limits

    meter = meter or EnergyMeter.create()
    rng = np.random.default_rng(seed)
    sample = _agreement_rows(X, rng, schema)
    singles = take_rows(X, rng.choice(len(X), size=min(len(X), 64), replace=False))
    rows = [singles.iloc[[k]] for k in range(len(singles))]
    big = take_rows(X, rng.choice(len(X), size=cfg.batch_large, replace=True))
    artifact = deployable(pipeline, schema, sample) if artifact is None else artifact

    cost: dict = {"params": count_params(pipeline), "fit_s": fit_s, "threads": cfg.threads}
    tput_s = cfg.throughput_budget_s
    pipeline.predict(rows[0])  # loads what the model loads lazily (torch), so that the thread limit reaches it too
    with threadpool_limits(cfg.threads):
        if artifact["onnx"] is not None:  # the native object is timed for reference, on a shorter budget
            native = _time_calls(pipeline.predict, rows, cfg, meter, min(cfg.time_budget_s, cfg.native_time_budget_s))
            native_tput, _ = _throughput(pipeline.predict, big, budget_s=tput_s)
            onx = OnnxPredictor(artifact["onnx"], schema, threads=cfg.threads)
            out_names = [onx.label_output]
            if onx.pixels is not None:  # images arrive encoded: decoding them is part of the cost
                feeds, big_feeds, run = rows, big, onx.predict
            else:
                feeds, big_feeds, run = [onx.feeds(r) for r in rows], onx.feeds(big), lambda f: onx.run(f, out_names)
            deployed = _time_calls(run, feeds, cfg, meter)
            deployed_tput, tput_rows = _throughput(run, big_feeds, budget_s=tput_s)
            cost["format"], cost["size_bytes"] = "onnx", len(artifact["onnx"])
        else:
            native = deployed = _time_calls(pipeline.predict, rows, cfg, meter)
            native_tput, tput_rows = _throughput(pipeline.predict, big, budget_s=tput_s)
            deployed_tput = native_tput
            cost["format"], cost["size_bytes"] = "native", len(artifact["skops"]) + external_bytes(pipeline)
    cost["peak_memory_mb"] = float("nan")  # filled by measure_peak_memory, run for all candidates at once

    cost.update({
        "latency_ms_p50": deployed["p50"], "latency_ms_p99": deployed["p99"], "latency_ms_mean": deployed["mean"],
        "throughput_rows_per_s": deployed_tput, "throughput_batch_rows": tput_rows,
        "energy_j_per_1k": deployed["joules_per_call"] * 1000, "energy_source": meter.source,
        "native_latency_ms_p50": native["p50"], "native_latency_ms_p99": native["p99"],
        "native_throughput_rows_per_s": native_tput, "skops_size_bytes": len(artifact["skops"]),
        "external_bytes": external_bytes(pipeline),
        # how precise the p99s are: calls timed, the p99's 95% interval (an infinite end: too few calls to bound
        # it), and what stopped the timing ("precise": the interval within latency_precision; "calls"; "time")
        "latency_calls": deployed["calls"], "latency_ms_p99_ci": deployed["p99_ci"],
        "latency_stopped": deployed["stopped"], "native_latency_calls": native["calls"],
        "native_latency_ms_p99_ci": native["p99_ci"],
    })
    core_hours_per_1m = 1e6 * deployed["mean"] / 1000 * cfg.threads / 3600
    cost["usd_per_1m"] = core_hours_per_1m * cfg.usd_per_hour / cfg.instance_vcpus
    cost["gco2e_per_1m"] = cost["energy_j_per_1k"] * 1000 / 3.6e6 * cfg.grid_gco2e_per_kwh
    return cost, artifact


def measure_peak_memory(artifacts: dict[str, dict], schema: Schema, X: pd.DataFrame, cfg: CostConfig,
                        seed: int = 0) -> dict[str, float]:
    """Peak resident memory (MB) added by loading each artifact and predicting one large batch.

    One child process imports Python's runtimes once; each candidate is measured in a process forked from it,
    so all start from the same state and memory one used cannot hide another's (``_memprobe``). After the
    timing, which it would disturb.
    """
    import subprocess
    import sys
    import tempfile
    from pathlib import Path

    from ..runtime.model_dir import save_model_dir

    unknown = {name: float("nan") for name in artifacts}
    if not cfg.memory_probe or not artifacts:
        return unknown
    rng = np.random.default_rng(seed)
    big = take_rows(X, rng.choice(len(X), size=cfg.batch_large, replace=True))
    with tempfile.TemporaryDirectory(prefix="frugal-mem-") as tmp:
        batch = Path(tmp) / "batch.parquet"
        big.to_parquet(batch)
        folders = []
        for k, art in enumerate(artifacts.values()):
            folders.append(Path(tmp) / f"m{k}")
            save_model_dir(folders[-1], schema=schema, name="probe", skops_data=art["skops"], onnx_data=art["onnx"])
        threads = {v: str(cfg.threads) for v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}
        try:  # with the thread count the timing used
            out = subprocess.run([sys.executable, "-m", "frugalml.evaluation._memprobe", str(batch),
                                  *map(str, folders)], capture_output=True, text=True, timeout=120 + 300 * len(folders),
                                 env={**os.environ, **threads})
            values = [float(v) for v in out.stdout.split()[-len(folders):]]
        except (subprocess.SubprocessError, ValueError):
            return unknown
    if len(values) != len(artifacts):  # the child died: no figure is trusted
        return unknown
    return dict(zip(artifacts, values))
