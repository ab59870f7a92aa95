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

from ..candidates.artifact import (OnnxExportError, OnnxPredictor, export_onnx, onnx_agreement,
                                   onnx_is_faithful, skops_bytes)
from ..data import Schema
from .energy import EnergyMeter


@dataclass(frozen=True)
class CostConfig:
    threads: int = 1  # threads for every measurement (ONNX Runtime intra-op, BLAS/OpenMP)
    batch_large: int = 1000  # rows per call for throughput and peak memory
    latency_calls: int = 400  # most timed batch-1 calls (fewer if time_budget_s runs out; at least 50)
    time_budget_s: float = 0.75  # per latency measurement
    usd_per_hour: float = 0.096  # instance price; default: a 2-vCPU general-purpose cloud instance
    instance_vcpus: int = 2
    grid_gco2e_per_kwh: float = 475.0  # world average used by CodeCarbon when the region is unknown
    memory_probe: bool = True  # measure peak memory in child processes (about 3 s per candidate)

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


def _time_calls(fn, inputs: list, cfg: CostConfig, meter: EnergyMeter) -> dict:
    for k in range(min(20, len(inputs))):  # warm-up: caches, lazy initialisation
        fn(inputs[k])
    times = []
    deadline = time.perf_counter() + cfg.time_budget_s
    with meter.measure() as window:
        for k in range(cfg.latency_calls):
            t0 = time.perf_counter_ns()
            fn(inputs[k % len(inputs)])
            times.append(time.perf_counter_ns() - t0)
            if k >= 49 and time.perf_counter() > deadline:
                break
    ms = np.asarray(times) / 1e6
    return {"p50": float(np.percentile(ms, 50)), "p99": float(np.percentile(ms, 99)), "mean": float(ms.mean()),
            "calls": len(ms), "joules_per_call": window.joules / len(ms)}


def _throughput(fn, batch, repeats: int = 3, budget_s: float = 3.0) -> float:
    """Rows per second: the best of up to ``repeats`` timed calls after a warm-up (one timed call once the
    calls have taken ``budget_s``: a slow model, like a transformer encoder, is not timed for minutes)."""
    t_start = time.perf_counter()
    fn(batch)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn(batch)
        best = min(best, time.perf_counter() - t0)
        if time.perf_counter() - t_start > budget_s:
            break
    return len(batch if not isinstance(batch, dict) else next(iter(batch.values()))) / best


def measure_cost(pipeline, schema: Schema, X: pd.DataFrame, cfg: CostConfig, *, fit_s: float,
                 meter: EnergyMeter | None = None, seed: int = 0) -> tuple[dict, dict]:
    """-> (cost dict for decision.json, artifact dict with the bytes to save and how they were chosen)."""
    from threadpoolctl import threadpool_limits

    meter = meter or EnergyMeter.create()
    rng = np.random.default_rng(seed)
    sample = X.iloc[rng.choice(len(X), size=min(len(X), 2000), replace=False)]
    rows = [X.iloc[[i]] for i in rng.choice(len(X), size=min(len(X), 64), replace=False)]
    big = X.iloc[rng.choice(len(X), size=cfg.batch_large, replace=True)]
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

    cost: dict = {"params": count_params(pipeline), "fit_s": fit_s, "threads": cfg.threads}
    with threadpool_limits(cfg.threads):
        native = _time_calls(pipeline.predict, rows, cfg, meter)
        native_tput = _throughput(pipeline.predict, big)
        if artifact["onnx"] is not None:
            onx = OnnxPredictor(artifact["onnx"], schema, threads=cfg.threads)
            feeds = [onx.feeds(r) for r in rows]
            out_names = [onx.label_output]
            deployed = _time_calls(lambda f: onx.run(f, out_names), feeds, cfg, meter)
            deployed_tput = _throughput(lambda f: onx.run(f, out_names), onx.feeds(big))
            cost["format"], cost["size_bytes"] = "onnx", len(artifact["onnx"])
        else:
            deployed, deployed_tput = native, native_tput
            cost["format"], cost["size_bytes"] = "native", len(artifact["skops"]) + external_bytes(pipeline)
    cost["peak_memory_mb"] = float("nan")  # filled by measure_peak_memory, run for all candidates at once

    cost.update({
        "latency_ms_p50": deployed["p50"], "latency_ms_p99": deployed["p99"],
        "throughput_rows_per_s": deployed_tput,
        "energy_j_per_1k": deployed["joules_per_call"] * 1000, "energy_source": meter.source,
        "native_latency_ms_p50": native["p50"], "native_latency_ms_p99": native["p99"],
        "native_throughput_rows_per_s": native_tput, "skops_size_bytes": len(artifact["skops"]),
        "external_bytes": external_bytes(pipeline),
        "latency_calls": deployed["calls"],
    })
    core_hours_per_1m = 1e6 * deployed["mean"] / 1000 * cfg.threads / 3600
    cost["usd_per_1m"] = core_hours_per_1m * cfg.usd_per_hour / cfg.instance_vcpus
    cost["gco2e_per_1m"] = cost["energy_j_per_1k"] * 1000 / 3.6e6 * cfg.grid_gco2e_per_kwh
    return cost, artifact


def measure_peak_memory(artifacts: dict[str, dict], schema: Schema, X: pd.DataFrame, cfg: CostConfig,
                        seed: int = 0) -> dict[str, float]:
    """Peak resident memory (MB) added by loading each artifact and predicting one large batch.

    Each candidate is measured in a fresh child process, so memory freed by another cannot hide it; the
    children run side by side (memory is per process), after the timing, which they would disturb.
    """
    import os
    import tempfile
    from concurrent.futures import ThreadPoolExecutor
    from pathlib import Path

    if not cfg.memory_probe or not artifacts:
        return {name: float("nan") for name in artifacts}
    rng = np.random.default_rng(seed)
    big = X.iloc[rng.choice(len(X), size=cfg.batch_large, replace=True)]
    with tempfile.TemporaryDirectory(prefix="frugal-mem-") as tmp:
        batch = Path(tmp) / "batch.parquet"
        big.to_parquet(batch)
        with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
            futures = {name: pool.submit(_probe, Path(tmp) / f"m{k}", art, schema, batch)
                       for k, (name, art) in enumerate(artifacts.items())}
            return {name: f.result() for name, f in futures.items()}


def _probe(folder, artifact: dict, schema: Schema, batch) -> float:
    import subprocess
    import sys

    from ..candidates.artifact import save_model_dir

    save_model_dir(folder, schema=schema, name="probe", skops_data=artifact["skops"], onnx_data=artifact["onnx"])
    try:
        out = subprocess.run([sys.executable, "-m", "frugalml.evaluation._memprobe", str(folder), str(batch)],
                             capture_output=True, text=True, timeout=300)
        return float(out.stdout.strip().splitlines()[-1])
    except (subprocess.SubprocessError, ValueError, IndexError):
        return float("nan")
