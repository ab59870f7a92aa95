"""The ``compress`` verb: a selected (or the user's own) model -> the cheapest variant whose quality holds,
overall and per group, into one run directory."""

from __future__ import annotations

import os
import time
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Callable

import numpy as np

from ..errors import DataError
from ..evaluation import CostConfig, EnergyMeter, measure_cost, measure_peak_memory, resolve_metric
from ..selection.reasons import compress_reason
from ..report.decision_sections import DEFAULT_REQUESTS_PER_DAY
from ..version import __version__
from .run_dir import RunResult, check_options, environment, machine_info, open_store, plain, prepare_out, write_run


def compress(model, data, target: str | None = None, *, groups: list[str] | None = None, text: list[str] | None = None,
             techniques: list[str] | None = None, metric: str | None = None, tolerance: float = 0.01,
             alpha: float = 0.05, min_group_size: int = 30, cost_priority: str = "latency", seed: int = 0,
             n_boot: int = 2000, out: str | os.PathLike | None = None, overwrite: bool = False,
             cost: CostConfig | None = None, chain: bool = True, requests_per_day: int = DEFAULT_REQUESTS_PER_DAY,
             resume: bool = False, n_jobs: int = 1, executor: str | None = None,
             progress: Callable[[str, int, int, str], None] | None = None) -> RunResult:
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
    shallower; a pruned encoder, then int8). ``requests_per_day``: the traffic the report's yearly savings are
    counted at.

    The search's trials (a technique on a variant, its settings cheapest first) run in this process, or side
    by side: ``n_jobs`` local processes, or ``executor`` (``dask://HOST:PORT``, ``ray://HOST:PORT``,
    ``ray:auto``). One process is the default: a round is a few trials wide, and for a forest two workers'
    start-up and shipping took longer than the trials (benchmarks/RESULTS.md, scale-out). Costs are then
    measured one variant at a time on this machine, with ``cost.threads`` threads, so a cluster run's numbers
    compare with a local run's. With ``out``, every variant and cost is stored as it completes (``trials/``);
    ``resume`` continues a killed or finished run into the same ``out``, making only what is not stored, and
    refuses a store made for another model or other data.
    """
    from sklearn.model_selection import train_test_split

    from ..candidates.hf_text import is_hf_folder, load_hf_model
    from ..candidates.onnx_graph import load_onnx_model
    from ..candidates.skops_model import load_skops_model
    from ..compression.confirm import ERROR_CONTROL, confirm, screen_boot, split_rows
    from ..compression.encoder import session_setting
    from ..compression.search import SearchConfig, search, variant_key
    from ..data import prepare_frame, read_table
    from ..data.task import base_folder, numeric_target, read_groups
    from ..evaluation.quality import masks_of, model_outputs, progress_reporter
    from ..evaluation.cost import agreement_sample, deployable
    from ..evaluation.trials import rows_fingerprint
    from ..runtime.model_dir import META, load_pipeline, load_skops
    from ..selection.decide import mark_pareto, recommend

    check_options(2, 1, tolerance, alpha, min_group_size, cost_priority, requests_per_day=requests_per_day)
    cost = cost or CostConfig()
    out_path = Path(out) if out is not None else None
    if out_path is not None:
        prepare_out(out_path, overwrite or resume)
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
    if schema.image and schema.image[0] in df.columns:  # relative image paths are read against the table's folder
        from ..data.images import image_paths

        df[schema.image[0]], _ = image_paths(df[schema.image[0]], schema.image[0], base_folder(source))
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
    store = open_store(out_path, resume, lambda: {"data": rows_fingerprint(X, y, seed, cal, screen, conf,
                                                                            group_masks_),
                                                  "model": _model_fingerprint(model)})
    report = progress_reporter(progress)  # (stage, done, total, what); a (stage, done, total) callback still works
    t0 = time.perf_counter()
    variants, records = search(pipeline, X.iloc[cal], y[cal], X.iloc[screen], y[screen],
                               {g: mask[screen] for g, mask in group_masks_.items()}, m, schema.task, n_classes,
                               techniques, replace(scfg, n_boot=screen_boot(n_boot)), report, n_jobs=n_jobs,
                               executor=executor, store=store,
                               artifact_of=partial(deployable, schema=schema, sample=agreement_sample(X, schema, seed)),
                               load_pipeline=lambda data: load_skops(data, "a stored variant"))
    search_s = time.perf_counter() - t0

    meter = EnergyMeter.create()
    artifacts = {}
    # one variant at a time, here: never timed beside other work (stored: measured by an earlier run, same settings)
    context = {"cost": cost.to_json(), "seed": seed, "machine": machine_info()}
    for k, (v, rec) in enumerate(zip(variants, records)):
        report("cost", k, len(variants), f"measuring {v.name}")
        key = variant_key(v.chain) if v.chain else "original"
        found = store.load_cost(key, context) if store is not None else None
        if found is None:
            found = measure_cost(v.pipeline, schema, X, cost, fit_s=0.0, meter=meter, seed=seed, artifact=v.artifact)
            if store is not None:
                store.save_cost(key, context, *found)
        rec["cost"], artifacts[v.name] = found
        rec.update(name=v.name, family=v.technique, interpretable=v.interpretable, pareto=False,
                   technique={"name": v.technique, "config": v.config, "chain": v.chain,
                              "session": session_setting(v.pipeline)})
        report("cost", k + 1, len(variants), f"measuring {v.name}")
    probing = f"{len(artifacts)} variants, a child process each" if cost.memory_probe and artifacts else None
    if probing:
        report("memory", 0, 1, probing)
    for name, mb in measure_peak_memory(artifacts, schema, X, cost, seed).items():
        next(r for r in records if r["name"] == name)["cost"]["peak_memory_mb"] = mb
    if probing:
        report("memory", 1, 1, probing)
    rank = {r["name"]: k for k, r in enumerate(records)}
    t0 = time.perf_counter()
    confirmed = confirm(records, lambda k: model_outputs(variants[k].pipeline, X.iloc[conf], n_classes), y[conf],
                        {g: mask[conf] for g, mask in group_masks_.items()}, m, schema.task, n_classes, scfg,
                        cost_priority, rank, len(screen), report)
    confirm_s = time.perf_counter() - t0
    mark_pareto(records, m)
    chosen = recommend(records, cost_priority, rank)
    decision = plain({
        "frugalml_version": __version__, "command": "compress", "task": schema.task, "metric": m.name,
        "higher_is_better": m.higher_is_better, "tolerance": tolerance, "groups": list(groups or []),
        "best": "original", "recommended": chosen["name"],
        "reason": compress_reason(chosen, records, m, tolerance, cost_priority, confirmed),
        "candidates": records, "failed": [],
        "settings": {"seed": seed, "alpha": alpha, "min_group_size": min_group_size, "cost_priority": cost_priority,
                     "n_boot": n_boot, "calibration_rows": len(cal), "evaluation_rows": len(ev),
                     "screening_rows": len(screen), "confirmation_rows": len(conf),
                     "split_stratified_by": split_by, "n_boot_screen": confirmed["n_boot_screen"],
                     "n_boot_confirm": confirmed["n_boot_confirm"], "error_control": ERROR_CONTROL,
                     "confirmation_order": confirmed["order"], "confirmation_stopped_at": confirmed["stopped_at"],
                     "techniques": techniques or "all that apply", "chain": chain, "search_s": search_s,
                     "confirm_s": confirm_s, "cost": cost.to_json(), "requests_per_day": requests_per_day,
                     "executor": executor or "local", "n_jobs": n_jobs,
                     "resume": store.summary() if resume and store is not None else None},
        "data": {"source": source, "rows": len(y), "features": len(schema.columns), "target": target,
                 "model": str(model), "original_candidate": meta.get("candidate")},
        "energy": {"source": meter.source, "method": meter.method},
        "machine": machine_info(), "environment": environment(),
    })
    if out_path is not None:
        write_run(out_path, decision, schema, artifacts[chosen["name"]],
                   {"metric": m.name, "compressed_from": str(model)}, {}, trials=store.path)
    return RunResult(decision, out_path)


def _check_target(df, target: str) -> None:
    if target not in df.columns:
        raise DataError(f"target column {target!r} not found; columns are {list(df.columns)}")


def _model_fingerprint(model) -> str:
    """The bytes of the model compressed: the file, or every file of its folder (a run directory: its model/)."""
    import hashlib

    path = Path(model)
    if (path / "model" / "meta.json").exists():
        path = path / "model"
    h = hashlib.sha256()
    for f in sorted(p for p in ([path] if path.is_file() else path.rglob("*")) if p.is_file()):
        h.update(str(f.relative_to(path) if f != path else f.name).encode())
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()[:16]
