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
from .evaluation.metrics import default_metric
from .evaluation.trials import TrialStore, data_fingerprint
from .report import render_markdown
from .selection import COST_PRIORITIES, DecisionConfig, decide
from .selection.stability import STABLE, stability


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


def _check_options(folds, repeats, tolerance, alpha, min_group_size, cost_priority, stability_draws=0):
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
    if stability_draws < 0:
        raise ConfigError(f"--stability-draws must be zero (skip) or positive, not {stability_draws}")
    if cost_priority not in COST_PRIORITIES:
        raise ConfigError(f"--cost-priority must be one of {', '.join(COST_PRIORITIES)}, not {cost_priority!r}")


def _resolve_candidates(kind: str, candidates, text: bool = False) -> list[Candidate]:
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
        return ladder(kind, names or None, extra, text=text)
    return ladder(kind, None, extra, text=text)


def machine_info() -> dict:
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


def _write_run(out_path: Path, decision: dict, schema, art: dict, info: dict, files: dict[str, str],
               trials: Path | None = None) -> None:
    """Write a run directory beside ``out_path`` and rename it into place once whole."""
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_path.name}.tmp-", dir=out_path.parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes it private; a run directory is an ordinary folder
    try:
        save_model_dir(tmp / "model", schema=schema, name=decision["recommended"], skops_data=art["skops"],
                       onnx_data=art["onnx"], info={"agreement": art.get("agreement"),
                                                    "onnx_error": art.get("onnx_error"),
                                                    "frugalml_version": __version__, **info})
        for name, text in files.items():
            (tmp / name).write_text(text)
        (tmp / "decision.json").write_text(json.dumps(decision, indent=2))
        (tmp / "report.md").write_text(render_markdown(decision))
        if trials is not None:
            os.replace(trials, tmp / "trials")
        _commit(tmp, out_path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _measure_costs(t, chosen: list[Candidate], fold_scores, cost: CostConfig, seed: int, store, executor, n_jobs: int,
                   report) -> tuple[dict, dict, EnergyMeter]:
    """Refit every candidate that did not fail on all rows, export it and measure its cost; -> (costs, artifacts,
    the energy meter used)."""
    from joblib import Parallel, delayed

    from .candidates.text import embed_distinct
    from .evaluation.cost import refit_deployable
    from .evaluation.quality import executor_backend
    from .evaluation.trials import estimator_key

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
    with executor_backend(executor):
        par = Parallel(n_jobs=n_jobs if executor in (None, "", "local") else -1, return_as="generator")
        done = par(delayed(refit_deployable)(est, t.schema, scale, t.X, t.y, seed,
                                             embed_distinct([est], t.X, t.schema.text))  # the folds' embeddings
                   for est, scale in todo.values())
        for k, (name, res) in enumerate(zip(todo, done)):
            refits[name] = res
            report("refit", k + 1, len(todo))
    for k, fs in enumerate(ok):
        if fs.name in refits:
            pipe, art = refits.pop(fs.name)
            costs[fs.name], artifacts[fs.name] = measure_cost(pipe, t.schema, t.X, cost, fit_s=fs.fit_s, meter=meter,
                                                              seed=seed, artifact=art)
            if store is not None:
                store.save_cost(keys[fs.name], context, costs[fs.name], artifacts[fs.name])
        costs[fs.name]["fit_s"] = fs.fit_s
        report("cost", k + 1, len(ok))
    unmeasured = {name: art for name, art in artifacts.items() if not np.isfinite(costs[name]["peak_memory_mb"])}
    for name, mb in measure_peak_memory(unmeasured, t.schema, t.X, cost, seed).items():
        costs[name]["peak_memory_mb"] = mb
        if store is not None and np.isfinite(mb):
            store.update_cost(keys[name], context, costs[name])
    return costs, artifacts, meter


def select(data, target: str | None = None, *, groups: list[str] | None = None, text: list[str] | None = None,
           task: str = "auto",
           metric: str | None = None, tolerance: float = 0.01, alpha: float = 0.05, min_group_size: int = 30,
           cost_priority: str = "latency", strict_groups: bool = False, allow_baseline: bool = False,
           stability_draws: int = 200, folds: int = 5, repeats: int = 2, seed: int = 0,
           candidates: list | None = None, out: str | os.PathLike | None = None, overwrite: bool = False,
           resume: bool = False,
           executor: str | None = None, n_jobs: int = -1, cost: CostConfig | None = None,
           progress: Callable[[str, int, int], None] | None = None) -> SelectResult:
    """Select the thinnest candidate on par with the best, overall and in every group; see PRODUCT.md.

    ``candidates``: registered names restrict the ladder to those; ``Candidate`` objects and estimator
    instances are added to it (to the full ladder when no name is given).
    ``resume``: reuse the fits stored by an interrupted (or finished) run into the same ``out``.
    ``text``: free-text columns (a builtin dataset has its own default); they switch to the text ladder.
    ``strict_groups``: a group too small to show non-inferiority rejects a candidate (by default only a group
    that shows harm does). ``allow_baseline``: the constant baseline may be recommended.
    ``stability_draws``: bootstrap draws of the rows for the decision's stability (docs/statistics.md).
    """
    _check_options(folds, repeats, tolerance, alpha, min_group_size, cost_priority, stability_draws)
    cost = cost or CostConfig()
    out_path = Path(out) if out is not None else None
    if out_path is not None:
        _prepare_out(out_path, overwrite or resume)
    t = load_task(data, target, groups=groups, task=task, min_rows=folds, text=text)
    chosen = _resolve_candidates(t.kind, candidates, bool(t.schema.text))
    n_classes = len(t.schema.classes) if t.kind == "classification" else None
    metric_why = "as asked"
    if metric is None:
        metric, metric_why = default_metric(t.kind, t.y)
        metric_why = metric_why or "the default for the task"
    m = resolve_metric(metric, t.kind, n_classes)
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
    costs, artifacts, meter = _measure_costs(t, chosen, fold_scores, cost, seed, store, executor, n_jobs, report)

    masks = group_masks(t)
    sizes = {g: int(mask.sum()) for g, mask in masks.items()}
    dcfg = DecisionConfig(tolerance, alpha, min_group_size, cost_priority, strict_groups, allow_baseline)
    result = decide(m, fold_scores, costs, chosen, sizes, splits.test_train_ratio, dcfg)
    stable = None
    if stability_draws:
        report("stability", 0, 1)
        stable = stability(fold_scores, splits, t.y, masks, m, t.kind, n_classes,
                           lambda fs: decide(m, fs, costs, chosen, sizes, splits.test_train_ratio, dcfg)["recommended"],
                           result["recommended"], draws=stability_draws, seed=seed)
        report("stability", 1, 1)
    if stable and stable["same_recommendation"] < STABLE:
        others = [f"{name} {100 * share:.0f}%" for name, share in stable["recommended_in_draws"].items()
                  if name != result["recommended"]]
        result["reason"] += (f" The decision is not stable: resampling the rows recommends {result['recommended']} in "
                             f"only {100 * stable['same_recommendation']:.0f}% of {stable['draws']} draws "
                             f"({', '.join(others[:3])}); more rows would settle it.")
    decision = {
        "frugalml_version": __version__, "command": "select", "task": t.kind, "metric": m.name,
        "higher_is_better": m.higher_is_better, "tolerance": tolerance, "groups": list(t.groups),
        "best": result["best"], "recommended": result["recommended"], "reason": result["reason"],
        "stability": stable, "candidates": result["candidates"], "failed": result["failed"],
        "settings": {"folds": folds, "repeats": repeats, "seed": seed, "alpha": alpha,
                     "min_group_size": min_group_size, "cost_priority": cost_priority,
                     "strict_groups": strict_groups, "allow_baseline": allow_baseline,
                     "metric_choice": metric_why,
                     "cost": cost.to_json()},
        "data": {"source": t.source, "rows": t.n_rows, "features": len(t.schema.columns), "target": t.schema.target,
                 "numeric": t.schema.numeric, "categorical": t.schema.categorical, "text": t.schema.text,
                 "classes": t.schema.classes,
                 "dropped_rows": t.dropped_rows, "dropped_columns": t.dropped_columns},
        "energy": {"source": meter.source, "method": meter.method},
        "machine": machine_info(),
    }
    decision = _plain(decision)
    if out_path is None:
        return SelectResult(decision, None)

    art = artifacts[decision["recommended"]]
    folds_record = {fs.name: {"scores": fs.scores, "groups": fs.group_scores, "error": fs.error}
                    for fs in fold_scores}
    _write_run(out_path, decision, t.schema, art, {"metric": m.name},
               {"folds.json": json.dumps(_plain({"metric": m.name, "scores_higher_is_better": True,
                                                 "candidates": folds_record}))},
               trials=store.path)
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


def compress(model, data, target: str | None = None, *, groups: list[str] | None = None, text: list[str] | None = None,
             techniques: list[str] | None = None, metric: str | None = None, tolerance: float = 0.01,
             alpha: float = 0.05, min_group_size: int = 30, cost_priority: str = "latency", seed: int = 0,
             n_boot: int = 2000, out: str | os.PathLike | None = None, overwrite: bool = False,
             cost: CostConfig | None = None, chain: bool = True,
             progress: Callable[[str, int, int], None] | None = None) -> SelectResult:
    """Find the cheapest compressed variant of a selected model whose quality holds, overall and per group.

    ``model``: a run directory of ``select`` or its ``model/`` folder, or a bare ONNX file (its inputs named as
    the data's columns, or one numeric matrix; ``target`` required), or a scikit-learn model or pipeline saved
    with skops (read the same way; ``target`` required), or a local Hugging Face sequence-classifier
    folder (``text``: its text columns, default the data's text-like ones; ``target`` required); never
    modified. ``data``: labelled
    rows the model did not train on, split 30/70: calibration (for distillation) and evaluation; the
    evaluation rows are halved again: the search runs on the screening half, and the variants that held are
    confirmed on the other half, most expensive first, stopping at the first that fails (a fixed-sequence
    test: the family-wise error over everything tried is at most ``alpha``; see ``compression.confirm``).
    ``n_boot``: bootstrap draws of a confirmation (at least 2,000; screening uses 400 at most).
    ``chain``: also compress the variants that hold with techniques of a later stage (fewer trees, then
    shallower; a pruned encoder, then int8).
    """
    import time

    from sklearn.model_selection import train_test_split

    from .candidates.artifact import load_pipeline
    from .compression.encoder import session_setting
    from dataclasses import replace

    from .compression.confirm import ERROR_CONTROL, confirm, screen_boot, split_rows
    from .compression.search import SearchConfig, search
    from .data import prepare_frame, read_table
    from .data.task import numeric_target, read_groups
    from .errors import DataError
    from .evaluation.quality import masks_of, model_outputs
    from .selection.decide import mark_pareto, recommend

    _check_options(2, 1, tolerance, alpha, min_group_size, cost_priority)
    cost = cost or CostConfig()
    out_path = Path(out) if out is not None else None
    if out_path is not None:
        _prepare_out(out_path, overwrite)
    from .candidates.artifact import META
    from .candidates.hf_text import is_hf_folder, load_hf_model
    from .candidates.onnx_graph import load_onnx_model
    from .candidates.skops_model import load_skops_model

    df, source, _ = read_table(data)
    path = Path(model)
    onnx = path.suffix.lower() == ".onnx" and path.is_file()
    # a skops file frugal select did not write (no meta.json beside it): the user's own scikit-learn model
    skops = path.suffix.lower() == ".skops" and path.is_file() and not (path.parent / META).exists()
    kind = ("an ONNX file" if onnx else "a skops file" if skops else
            "a Hugging Face folder" if is_hf_folder(model) else None)
    if kind:  # a model without frugalml's schema: its columns, classes and texts are read against the data
        if not target:
            raise DataError(f"{kind} does not say which column it predicts: give --target")
        _check_target(df, target)
        rows = df[df[target].notna()]
        pipeline, schema, meta = (load_onnx_model(model, rows, target, list(groups or [])) if onnx else
                                  load_skops_model(model, rows, target, list(groups or [])) if skops else
                                  load_hf_model(model, rows, target, text))
    else:
        pipeline, schema, meta = load_pipeline(model)
    target = target or schema.target
    _check_target(df, target)
    df = df[df[target].notna()].reset_index(drop=True)
    X = prepare_frame(df, schema)  # a model whose inputs are not in the data stops here
    if schema.task == "classification":
        index = {c: i for i, c in enumerate(schema.classes)}
        unknown = sorted({v for v in df[target].tolist() if v not in index}, key=str)
        if unknown:
            raise DataError(f"target {target!r} has values the model never saw: {unknown[:5]}; "
                            f"its classes are {schema.classes}")
        y = np.asarray([index[v] for v in df[target].tolist()])
    else:
        y = numeric_target(df[target], target, "but the model is a regressor")
    group_masks_ = masks_of(read_groups(df, groups or []))
    if len(y) < 40:
        raise DataError(f"only {len(y)} labelled rows; compression needs at least 40 (30% to calibrate, "
                        "70% to evaluate)")
    n_classes = len(schema.classes) if schema.classes else None
    m = resolve_metric(metric or meta.get("metric"), schema.task, n_classes)
    strat = y if schema.task == "classification" and np.bincount(y).min() >= 2 else None
    # 30% calibrates the techniques that need data (distillation); 70% judges every variant: the group
    # checks need rows more than a student does.
    cal, ev = train_test_split(np.arange(len(y)), test_size=0.7, random_state=seed, stratify=strat)
    # The evaluation rows, halved: the search screens on one half, what held is confirmed on the other.
    s_pos, c_pos, split_by = split_rows(y[ev], {g: mask[ev] for g, mask in group_masks_.items()}, schema.task, seed)
    screen, conf = ev[s_pos], ev[c_pos]
    scfg = SearchConfig(tolerance, alpha, min_group_size, n_boot, seed, chain)
    t0 = time.perf_counter()
    variants, records = search(pipeline, X.iloc[cal], y[cal], X.iloc[screen], y[screen],
                               {g: mask[screen] for g, mask in group_masks_.items()}, m, schema.task, n_classes,
                               techniques, replace(scfg, n_boot=screen_boot(n_boot)), progress)
    search_s = time.perf_counter() - t0

    meter = EnergyMeter.create()
    artifacts = {}
    for k, (v, rec) in enumerate(zip(variants, records)):
        rec["cost"], artifacts[v.name] = measure_cost(v.pipeline, schema, X, cost, fit_s=0.0, meter=meter, seed=seed)
        rec.update(name=v.name, family=v.technique, interpretable=v.interpretable, pareto=False,
                   technique={"name": v.technique, "config": v.config, "chain": v.chain,
                              "session": session_setting(v.pipeline)})
        if progress:
            progress("cost", k + 1, len(variants))
    for name, mb in measure_peak_memory(artifacts, schema, X, cost, seed).items():
        next(r for r in records if r["name"] == name)["cost"]["peak_memory_mb"] = mb
    rank = {r["name"]: k for k, r in enumerate(records)}
    t0 = time.perf_counter()
    confirmed = confirm(records, lambda k: model_outputs(variants[k].pipeline, X.iloc[conf], n_classes), y[conf],
                        {g: mask[conf] for g, mask in group_masks_.items()}, m, schema.task, n_classes, scfg,
                        cost_priority, rank, len(screen), progress)
    confirm_s = time.perf_counter() - t0
    mark_pareto(records, m)
    chosen = recommend(records, cost_priority, rank)
    decision = _plain({
        "frugalml_version": __version__, "command": "compress", "task": schema.task, "metric": m.name,
        "higher_is_better": m.higher_is_better, "tolerance": tolerance, "groups": list(groups or []),
        "best": "original", "recommended": chosen["name"],
        "reason": _compress_reason(chosen, records, m, tolerance, cost_priority, confirmed),
        "candidates": records, "failed": [],
        "settings": {"seed": seed, "alpha": alpha, "min_group_size": min_group_size, "cost_priority": cost_priority,
                     "n_boot": n_boot, "calibration_rows": len(cal), "evaluation_rows": len(ev),
                     "screening_rows": len(screen), "confirmation_rows": len(conf),
                     "split_stratified_by": split_by, "n_boot_screen": confirmed["n_boot_screen"],
                     "n_boot_confirm": confirmed["n_boot_confirm"], "error_control": ERROR_CONTROL,
                     "confirmation_order": confirmed["order"], "confirmation_stopped_at": confirmed["stopped_at"],
                     "techniques": techniques or "all that apply", "chain": chain, "search_s": search_s,
                     "confirm_s": confirm_s, "cost": cost.to_json()},
        "data": {"source": source, "rows": len(y), "features": len(schema.columns), "target": target,
                 "model": str(model), "original_candidate": meta.get("candidate")},
        "energy": {"source": meter.source, "method": meter.method},
        "machine": machine_info(),
    })
    if out_path is not None:
        _write_run(out_path, decision, schema, artifacts[chosen["name"]],
                   {"metric": m.name, "compressed_from": str(model)}, {})
    return SelectResult(decision, out_path)


def _check_target(df, target: str) -> None:
    from .errors import DataError

    if target not in df.columns:
        raise DataError(f"target column {target!r} not found; columns are {list(df.columns)}")


def _compress_reason(chosen: dict, records: list[dict], metric, tolerance: float, cost_priority: str,
                     confirmed: dict | None = None) -> str:
    from .selection.decide import COST_LABELS, COST_PRIORITIES, format_cost

    original = records[0]
    key = COST_PRIORITIES[cost_priority][0]
    label, unit = COST_LABELS[key]
    tested = [g for g, e in chosen["groups"].items() if e["tested"]]
    confirmed = confirmed or {}
    screened = len(records) - 1
    if chosen is original:
        tried = records[1:]
        if not tried:
            return "No compression technique applies to this model; the original stays."
        held = [r for r in tried if r.get("screening", r)["on_par"]]
        if not held:
            closest = max(tried, key=lambda r: metric.sign * r["quality"]["mean"])
            return (f"No variant of the {screened} screened kept {metric.name} within {tolerance:g} of the original "
                    f"overall and in every tested group; the original stays. Closest: {closest['name']}, rejected: "
                    f"{closest['rejected_because']}.")
        first = next((r for r in records if r["name"] == confirmed.get("stopped_at")), None)
        if confirmed.get("confirmed") or first is None:
            return (f"{len(held)} of {screened} screened variant(s) held, but none confirmed on the rows the search "
                    f"never saw is cheaper than the original by {cost_priority}; the original stays.")
        return (f"{len(held)} of {screened} screened variant(s) held on the screening rows; "
                + ("the first in the confirmation sequence, " if first["confirmation"]["order"] == 1 else "then ")
                + f"{first['name']} did not hold on the {confirmed.get('rows', 'other')} rows the search never saw "
                f"({first['rejected_because'].removeprefix('confirmation: ')}); the original stays.")
    d = chosen["vs_best"]
    bound = d["ci_low"] if metric.higher_is_better else d["ci_high"]
    a, b = chosen["cost"][key], original["cost"][key]
    text = (f"{chosen['name']} keeps {metric.name} within {tolerance:g} of the original ({chosen['quality']['mean']:.4g} "
            f"vs {original['quality']['mean']:.4g}, difference {d['diff_mean']:+.4f}, bound {bound:+.4f}; "
            + (f"{100 * d['flip_rate']:.1f}% of predictions flipped)" if "flip_rate" in d
               else f"predictions moved by {d['mean_abs_change']:.3g} on average)"))
    text += f" and in all {len(tested)} tested group(s)." if tested else "."
    if confirmed:
        text += (f" Confirmed on {confirmed.get('rows', 'the')} rows the search never saw, after {screened} "
                 f"variant(s) screened on the others (fixed sequence, {len(confirmed['confirmed'])} of "
                 f"{len(confirmed['order'])} confirmed: the error over everything tried stays at alpha).")
    if a > 0 and b > a:
        text += f" Its {label} is {format_cost(a, unit)} vs {format_cost(b, unit)} ({b / a:.3g}x lower)"
        sa, sb = chosen["cost"]["size_bytes"], original["cost"]["size_bytes"]
        text += f" and it is {sb / sa:.3g}x smaller." if sb > sa else "."
    return text
