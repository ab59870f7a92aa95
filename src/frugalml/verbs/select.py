"""The ``select`` verb: data -> candidates -> evaluation -> selection -> report, into one run directory."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from ..candidates import Candidate, from_estimator, ladder, left_out
from ..data import load_task, make_splits
from ..errors import ConfigError
from ..evaluation import (CostConfig, EnergyMeter, evaluate_quality, group_masks, measure_cost, measure_peak_memory,
                          resolve_metric)
from ..evaluation.metrics import default_metric
from ..evaluation.quality import progress_reporter
from ..evaluation.trials import data_fingerprint
from ..selection import DecisionConfig, decide
from ..selection.reasons import unstable_note
from ..selection.stability import stability
from ..report.decision_sections import DEFAULT_REQUESTS_PER_DAY
from ..version import __version__
from .run_dir import RunResult, check_options, environment, machine_info, open_store, plain, prepare_out, write_run


def _resolve_candidates(kind: str, candidates, text: bool = False, image: bool = False) -> list[Candidate]:
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
    return ladder(kind, names or None, extra, text=text, image=image)


def _measure_costs(t, chosen: list[Candidate], fold_scores, cost: CostConfig, seed: int, store, executor, n_jobs: int,
                   report) -> tuple[dict, dict, EnergyMeter]:
    """Refit every candidate that did not fail on all rows, export it and measure its cost; -> (costs, artifacts,
    the energy meter used)."""
    from joblib import delayed

    from ..candidates.tables import embed_distinct
    from ..evaluation.cost import refit_deployable
    from ..evaluation.quality import executor_backend, parallel
    from ..evaluation.trials import estimator_key

    meter = EnergyMeter.create()
    costs, artifacts, keys, todo = {}, {}, {}, {}
    ok = [fs for fs in fold_scores if fs.error is None]
    # Each cost is stored with its artifact (the final refit, exported) as it is measured: --resume neither
    # refits nor re-times a candidate, unless the cost settings, the seed, the machine or the data changed.
    context = {"cost": cost.to_json(), "seed": seed, "machine": machine_info()}
    for fs in ok:
        c = next(c for c in chosen if c.name == fs.name)
        est = c.build(t.kind, seed)
        keys[fs.name] = estimator_key(c.name, est)
        stored = store.load_cost(keys[fs.name], context) if store is not None else None
        if stored is None:
            todo[fs.name] = (est, c.scale)
        else:
            costs[fs.name], artifacts[fs.name] = stored
    # The final refits on all rows and their exports run side by side, as the folds did; then each is timed alone.
    refits = {}
    with executor_backend(executor, n_jobs):
        done = parallel(executor, n_jobs)(delayed(refit_deployable)(est, t.schema, scale, t.X, t.y, seed,
                                             embed_distinct([est], t.X, t.schema.text + t.schema.image))  # the folds'
                   for est, scale in todo.values())
        names = list(todo)
        if names:
            report("refit", 0, len(names), names[0])
        for k, (name, res) in enumerate(zip(todo, done)):
            refits[name] = res
            report("refit", k + 1, len(todo), names[min(k + 1, len(names) - 1)])
    for k, fs in enumerate(ok):
        report("cost", k, len(ok), f"measuring {fs.name}")
        if fs.name in refits:
            pipe, art = refits.pop(fs.name)
            costs[fs.name], artifacts[fs.name] = measure_cost(pipe, t.schema, t.X, cost, fit_s=fs.fit_s, meter=meter,
                                                              seed=seed, artifact=art)
            if store is not None:
                store.save_cost(keys[fs.name], context, costs[fs.name], artifacts[fs.name])
        costs[fs.name]["fit_s"] = fs.fit_s
        report("cost", k + 1, len(ok), f"measuring {fs.name}")
    unmeasured = {name: art for name, art in artifacts.items() if not np.isfinite(costs[name]["peak_memory_mb"])}
    probing = f"{len(unmeasured)} candidates, a child process each" if cost.memory_probe and unmeasured else None
    if probing:
        report("memory", 0, 1, probing)
    for name, mb in measure_peak_memory(unmeasured, t.schema, t.X, cost, seed).items():
        costs[name]["peak_memory_mb"] = mb
        if store is not None and np.isfinite(mb):
            store.update_cost(keys[name], context, costs[name])
    if probing:
        report("memory", 1, 1, probing)
    return costs, artifacts, meter


def select(data, target: str | None = None, *, groups: list[str] | None = None, text: list[str] | None = None,
           image: str | None = None, task: str = "auto",
           metric: str | None = None, tolerance: float = 0.01, alpha: float = 0.05, min_group_size: int = 30,
           cost_priority: str = "latency", strict_groups: bool = False, allow_baseline: bool = False,
           stability_draws: int = 200, folds: int = 5, repeats: int = 2, seed: int = 0, sample: int | None = None,
           candidates: list | None = None, out: str | os.PathLike | None = None, overwrite: bool = False,
           resume: bool = False,
           executor: str | None = None, n_jobs: int = -1, cost: CostConfig | None = None,
           requests_per_day: int = DEFAULT_REQUESTS_PER_DAY,
           progress: Callable[[str, int, int, str], None] | None = None) -> RunResult:
    """Select the thinnest candidate on par with the best, overall and in every group; see PRODUCT.md.

    ``candidates``: registered names restrict the ladder to those; ``Candidate`` objects and estimator
    instances are added to it (to the full ladder when no name is given).
    ``resume``: reuse the fits stored by an interrupted (or finished) run into the same ``out``.
    ``text``: free-text columns (a builtin dataset has its own default); they switch to the text ladder.
    ``image``: the column of image file paths (a folder of images or a builtin image dataset has its own); it
    switches to the image ladder, each image candidate at several input resolutions.
    ``strict_groups``: a group too small to show non-inferiority rejects a candidate (by default only a group
    that shows harm does). ``allow_baseline``: the constant baseline may be recommended.
    ``stability_draws``: bootstrap draws of the rows for the decision's stability (docs/statistics.md).
    ``sample``: select on that many rows (drawn with ``seed``, stratified by class), refitting on them too; by
    default every row. DATA may be a folder or a glob of Parquet files: it is read lazily (``data.parquet``).
    ``requests_per_day``: the traffic the report's yearly savings are counted at.
    """
    check_options(folds, repeats, tolerance, alpha, min_group_size, cost_priority, stability_draws, requests_per_day)
    cost = cost or CostConfig()
    out_path = Path(out) if out is not None else None
    if out_path is not None:
        prepare_out(out_path, overwrite or resume)
    t = load_task(data, target, groups=groups, task=task, min_rows=folds, text=text,
                  image=[image] if image else None, sample=sample, seed=seed)
    chosen = _resolve_candidates(t.kind, candidates, bool(t.schema.text), bool(t.schema.image))
    # the default ladder's candidates whose packages are not installed (a named one is an error instead)
    skipped = {} if any(isinstance(c, str) for c in candidates or []) else left_out(t.kind, bool(t.schema.text),
                                                                                   bool(t.schema.image))
    n_classes = len(t.schema.classes) if t.kind == "classification" else None
    metric_why = "as asked"
    if metric is None:
        metric, metric_why = default_metric(t.kind, t.y)
        metric_why = metric_why or "the default for the task"
    m = resolve_metric(metric, t.kind, n_classes)
    splits = make_splits(t, folds, repeats, seed)
    report = progress_reporter(progress)  # (stage, done, total, what); a (stage, done, total) callback still works

    store = open_store(out_path, resume, lambda: data_fingerprint(t, splits))
    fold_scores = evaluate_quality(t, chosen, splits, m, seed=seed, n_jobs=n_jobs, executor=executor,
                                   progress=lambda done, total, what="": report("fit", done, total, what),
                                   store=store)
    costs, artifacts, meter = _measure_costs(t, chosen, fold_scores, cost, seed, store, executor, n_jobs, report)

    masks = group_masks(t)
    sizes = {g: int(mask.sum()) for g, mask in masks.items()}
    dcfg = DecisionConfig(tolerance, alpha, min_group_size, cost_priority, strict_groups, allow_baseline)
    result = decide(m, fold_scores, costs, chosen, sizes, splits.test_train_ratio, dcfg)
    stable = None
    if stability_draws:
        report("stability", 0, 1, f"{stability_draws} draws of the rows")
        stable = stability(fold_scores, splits, t.y, masks, m, t.kind, n_classes,
                           lambda fs: decide(m, fs, costs, chosen, sizes, splits.test_train_ratio, dcfg)["recommended"],
                           result["recommended"], draws=stability_draws, seed=seed)
        report("stability", 1, 1, f"{stability_draws} draws of the rows")
    result["reason"] += unstable_note(stable, result["recommended"])
    if skipped:
        result["reason"] += f" Not tried, as packages are missing: {'; '.join(skipped.values())}."
    decision = {
        "frugalml_version": __version__, "command": "select", "task": t.kind, "metric": m.name,
        "higher_is_better": m.higher_is_better, "tolerance": tolerance, "groups": list(t.groups),
        "best": result["best"], "recommended": result["recommended"], "reason": result["reason"],
        "stability": stable, "candidates": result["candidates"], "failed": result["failed"],
        "settings": {"folds": folds, "repeats": repeats, "seed": seed, "alpha": alpha,
                     "min_group_size": min_group_size, "cost_priority": cost_priority,
                     "strict_groups": strict_groups, "allow_baseline": allow_baseline,
                     "metric_choice": metric_why, "left_out": skipped,
                     "cost": cost.to_json(), "requests_per_day": requests_per_day,
                     "executor": executor or "local", "n_jobs": n_jobs,
                     "resume": store.summary() if resume and store is not None else None},
        "data": {"source": t.source, "rows": t.n_rows, "sampled_from": t.sampled_from or None,
                 "read": "lazily" if not isinstance(t.X, pd.DataFrame) else "in memory",
                 "features": len(t.schema.columns), "target": t.schema.target,
                 "numeric": t.schema.numeric, "categorical": t.schema.categorical, "text": t.schema.text,
                 "image": t.schema.image, "image_channels": t.image_channels,
                 "classes": t.schema.classes,
                 "dropped_rows": t.dropped_rows, "dropped_columns": t.dropped_columns},
        "energy": {"source": meter.source, "method": meter.method},
        "machine": machine_info(), "environment": environment(),
    }
    decision = plain(decision)
    if out_path is None:
        return RunResult(decision, None)

    art = artifacts[decision["recommended"]]
    folds_record = {fs.name: {"scores": fs.scores, "groups": fs.group_scores, "error": fs.error}
                    for fs in fold_scores}
    write_run(out_path, decision, t.schema, art, {"metric": m.name},
               {"folds.json": json.dumps(plain({"metric": m.name, "scores_higher_is_better": True,
                                                 "candidates": folds_record}))},
               trials=store.path)
    return RunResult(decision, out_path)
