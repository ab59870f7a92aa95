"""The ``select`` verb: data -> candidates -> evaluation -> selection -> report, into one run directory.

A run directory is written to a temporary folder beside ``out`` and renamed when complete, so a failed
run leaves nothing behind and never damages an earlier run.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from . import __version__
from .candidates import Candidate, build_pipeline, from_estimator, ladder
from .candidates.artifact import DeployedModel, load, save_model_dir
from .data import load_task, make_splits
from .errors import ConfigError
from .evaluation import (CostConfig, EnergyMeter, evaluate_quality, group_masks, measure_cost, measure_peak_memory,
                         resolve_metric)
from .evaluation.trials import TrialStore, data_fingerprint
from .report import render_markdown
from .selection import COST_PRIORITIES, DecisionConfig, decide


@dataclass
class SelectResult:
    decision: dict
    run_dir: Path | None

    @property
    def recommended(self) -> str:
        return self.decision["recommended"]

    def load(self) -> DeployedModel:
        if self.run_dir is None:
            raise ConfigError("this selection was run without out=; nothing was saved to load")
        return load(self.run_dir)


def _check_options(folds, repeats, tolerance, alpha, min_group_size, cost_priority):
    if folds < 2:
        raise ConfigError(f"--folds must be at least 2, not {folds}")
    if repeats < 1:
        raise ConfigError(f"--repeats must be at least 1, not {repeats}")
    if not tolerance >= 0:
        raise ConfigError(f"--tolerance must be zero or positive, not {tolerance}")
    if not 0 < alpha < 0.5:
        raise ConfigError(f"--alpha must be between 0 and 0.5, not {alpha}")
    if min_group_size < 1:
        raise ConfigError(f"--min-group-size must be at least 1, not {min_group_size}")
    if cost_priority not in COST_PRIORITIES:
        raise ConfigError(f"--cost-priority must be one of {', '.join(COST_PRIORITIES)}, not {cost_priority!r}")


def _resolve_candidates(kind: str, candidates) -> list[Candidate]:
    names, extra = [], []
    for c in candidates or []:
        if isinstance(c, str):
            names.append(c)
        elif isinstance(c, Candidate):
            extra.append(c)
        elif hasattr(c, "fit"):
            extra.append(from_estimator(c))
        else:
            raise ConfigError(f"candidate {c!r} is not a name, a Candidate or an estimator")
    if names or not extra:
        return ladder(kind, names or None, extra)
    return ladder(kind, None, extra)


def _machine() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()}


def _prepare_out(out: Path, overwrite: bool) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        raise ConfigError(f"{out} already exists and is not empty; choose another --out or pass --overwrite")


def _commit(tmp: Path, out: Path) -> None:
    """Move a finished run directory into place; an existing one is replaced only once the new one is whole."""
    old = None
    if out.exists():
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        os.replace(out, old)
    os.replace(tmp, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True) if old.is_dir() else old.unlink()


def select(data, target: str | None = None, *, groups: list[str] | None = None, task: str = "auto",
           metric: str | None = None, tolerance: float = 0.01, alpha: float = 0.05, min_group_size: int = 30,
           cost_priority: str = "latency", folds: int = 5, repeats: int = 2, seed: int = 0,
           candidates: list | None = None, out: str | os.PathLike | None = None, overwrite: bool = False,
           resume: bool = False,
           executor: str | None = None, n_jobs: int = -1, cost: CostConfig | None = None,
           progress: Callable[[str, int, int], None] | None = None) -> SelectResult:
    """Select the thinnest candidate on par with the best, overall and in every group; see PRODUCT.md.

    ``candidates``: registered names restrict the ladder to those; ``Candidate`` objects and estimator
    instances are added to it (to the full ladder when no name is given).
    ``resume``: reuse the fits stored by an interrupted (or finished) run into the same ``out``.
    """
    _check_options(folds, repeats, tolerance, alpha, min_group_size, cost_priority)
    cost = cost or CostConfig()
    out_path = Path(out) if out is not None else None
    if out_path is not None:
        _prepare_out(out_path, overwrite or resume)
    t = load_task(data, target, groups=groups, task=task, min_rows=folds)
    chosen = _resolve_candidates(t.kind, candidates)
    m = resolve_metric(metric, t.kind, len(t.schema.classes) if t.schema.classes else None)
    splits = make_splits(t, folds, repeats, seed)
    report = progress or (lambda stage, done, total: None)

    store = None
    if out_path is not None:
        pending = out_path.parent / f".{out_path.name}.trials"
        finished = out_path / "trials"
        if resume and not pending.exists() and finished.is_dir():
            shutil.copytree(finished, pending)  # copy: the finished run stays whole if this one fails
        store = TrialStore(pending, data_fingerprint(t, splits), resume)
    fold_scores = evaluate_quality(t, chosen, splits, m, seed=seed, n_jobs=n_jobs, executor=executor,
                                   progress=lambda done, total: report("fit", done, total), store=store)
    meter = EnergyMeter.create()
    costs, artifacts = {}, {}
    ok = [fs for fs in fold_scores if fs.error is None]
    for k, fs in enumerate(ok):
        c = next(c for c in chosen if c.name == fs.name)
        pipe = build_pipeline(c.build(t.kind, seed), t.schema, c.scale)
        pipe.fit(t.X, t.y)
        costs[fs.name], artifacts[fs.name] = measure_cost(pipe, t.schema, t.X, cost, fit_s=fs.fit_s, meter=meter,
                                                          seed=seed)
        report("cost", k + 1, len(ok))
    for name, mb in measure_peak_memory(artifacts, t.schema, t.X, cost, seed).items():
        costs[name]["peak_memory_mb"] = mb

    sizes = {g: int(mask.sum()) for g, mask in group_masks(t).items()}
    result = decide(m, fold_scores, costs, chosen, sizes, splits.test_train_ratio,
                    DecisionConfig(tolerance, alpha, min_group_size, cost_priority))
    decision = {
        "frugalml_version": __version__, "command": "select", "task": t.kind, "metric": m.name,
        "higher_is_better": m.higher_is_better, "tolerance": tolerance, "groups": list(t.groups),
        "best": result["best"], "recommended": result["recommended"], "reason": result["reason"],
        "candidates": result["candidates"], "failed": result["failed"],
        "settings": {"folds": folds, "repeats": repeats, "seed": seed, "alpha": alpha,
                     "min_group_size": min_group_size, "cost_priority": cost_priority, "cost": cost.to_json()},
        "data": {"source": t.source, "rows": t.n_rows, "features": len(t.schema.columns), "target": t.schema.target,
                 "numeric": t.schema.numeric, "categorical": t.schema.categorical, "classes": t.schema.classes,
                 "dropped_rows": t.dropped_rows, "dropped_columns": t.dropped_columns},
        "energy": {"source": meter.source, "method": meter.method},
        "machine": _machine(),
    }
    decision = _plain(decision)
    if out_path is None:
        return SelectResult(decision, None)

    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_path.name}.tmp-", dir=out_path.parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes it private; a run directory is an ordinary folder
    try:
        art = artifacts[decision["recommended"]]
        save_model_dir(tmp / "model", schema=t.schema, name=decision["recommended"], skops_data=art["skops"],
                       onnx_data=art["onnx"], info={"agreement": art.get("agreement"),
                                                    "onnx_error": art.get("onnx_error"),
                                                    "metric": m.name, "frugalml_version": __version__})
        folds_record = {fs.name: {"scores": fs.scores, "groups": fs.group_scores, "error": fs.error}
                        for fs in fold_scores}
        (tmp / "folds.json").write_text(json.dumps(_plain({"metric": m.name, "scores_higher_is_better": True,
                                                           "candidates": folds_record})))
        (tmp / "decision.json").write_text(json.dumps(decision, indent=2))
        (tmp / "report.md").write_text(render_markdown(decision))
        os.replace(store.path, tmp / "trials")
        _commit(tmp, out_path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return SelectResult(decision, out_path)


def _plain(o):
    """Plain JSON values: numpy scalars and arrays unwrapped, NaN and infinities as null."""
    if isinstance(o, dict):
        return {str(k): _plain(v) for k, v in o.items()}
    if isinstance(o, (list, tuple, np.ndarray)):
        return [_plain(v) for v in o]
    if isinstance(o, np.generic):
        o = o.item()
    if isinstance(o, float) and not np.isfinite(o):
        return None
    return o
