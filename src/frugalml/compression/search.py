"""The accuracy-aware search: try techniques and settings cheapest first, compare every variant with the
original on the same held-out rows, keep the ones whose quality holds overall and in every group.

Then chains: the variants that hold are compressed again by techniques of a later stage (a pruned forest
made shallower, a pruned encoder quantized), each judged against the original.

"Holds" = the paired bootstrap lower bound of (variant - original) is above -tolerance, overall and in each
group with enough rows, each at level alpha (an intersection-union test: the claim "no worse than the
tolerance overall and in every group" is false only if one of its parts is, so each part at alpha gives the
whole claim level alpha, with no split of alpha across groups; Berger 1982); every group
gets a three-outcome verdict (harm shown, non-inferiority shown, inconclusive with the rows that would
decide it) and a variant holds only where non-inferiority is shown in every tested group. Flip rates
(rows whose prediction changed) and McNemar's exact test are reported beside it; intervals are (1 - 2 alpha)
two-sided, the one-sided alpha bounds at their ends.

The search makes no error claim by itself: it tries many variants and chains, so a truly worse one "holds"
now and then. ``verbs.compress`` runs it on *screening* rows only, then confirms the variants that held
on *confirmation* rows the search never saw, as a fixed-sequence test (``compression.confirm``), which is
where the family-wise error over everything tried is controlled.

Bootstrap draws: for metrics that are a function of per-row means (accuracy, MSE, RMSE, MAE, R^2, and the
confusion-matrix metrics: balanced accuracy, F1, precision, recall, binary or macro) the draws are counts per
row and the whole bootstrap is one matrix product; binary ROC AUC is a weighted rank sum of the same counts;
any other scorer is replayed on every draw (the same draws, so both paths agree).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Callable

import numpy as np
from joblib import delayed

from ..errors import ConfigError
from ..evaluation.metrics import Metric, Replay, counted_score, score
from ..evaluation.quality import model_outputs
from ..selection.stats import mcnemar_exact, rows_needed, verdict
from . import TECHNIQUES, config_label


@dataclass(frozen=True)
class SearchConfig:
    tolerance: float = 0.01
    alpha: float = 0.05
    min_group_size: int = 30
    n_boot: int = 2000  # bootstrap draws of a comparison (confirmation uses at least 2,000; see confirm.py)
    seed: int = 0
    chain: bool = True  # apply later-stage techniques to the variants that hold


@dataclass
class Variant:
    name: str
    technique: str  # "original" for the reference
    config: dict
    pipeline: object
    interpretable: bool
    outputs: dict  # predictions on the evaluation rows
    chain: list = field(default_factory=list)  # [{"name", "config"}] applied in order to the original
    stage: int = -1  # the last technique's stage (-1: the original)
    artifact: dict | None = None  # the deployable bytes (skops, ONNX), made beside the trial that made it


def technique_names(requested: list[str] | None, pipeline) -> list[str]:
    if requested:
        for n in requested:
            TECHNIQUES.get(n)  # unknown name -> ConfigError listing the known ones
        names = requested
    else:
        names = list(TECHNIQUES)
    usable = [n for n in names if TECHNIQUES.get(n).applies_to(pipeline)]
    if requested and not usable:
        model = type(pipeline.steps[-1][1]).__name__
        raise ConfigError(f"none of the techniques {', '.join(requested)} applies to a {model}")
    return usable


# --- the bootstrap ---------------------------------------------------------------------------------------

_CHUNK = 256  # draws generated (and multiplied) at a time
_CACHE_CELLS = 2e7  # draws x rows up to which a count matrix is kept for the next comparison on as many rows


def _draw_chunks(m: int, n_boot: int, seed: int):
    """Row positions of the bootstrap draws, (chunk, m) at a time; a function of (m, n_boot, seed) only, so
    every variant compared on as many rows sees the same draws (paired across variants too)."""
    rng = np.random.default_rng(seed)
    for start in range(0, n_boot, _CHUNK):
        yield rng.integers(0, m, size=(min(_CHUNK, n_boot - start), m))


def _counts(draws: np.ndarray) -> np.ndarray:
    """(c, m) positions -> (c, m) how often each row was drawn."""
    c, m = draws.shape
    return np.bincount((draws + m * np.arange(c)[:, None]).ravel(), minlength=c * m).reshape(c, m).astype(np.uint16)


@lru_cache(maxsize=16)
def _cached_counts(m: int, n_boot: int, seed: int) -> np.ndarray:
    counts = np.concatenate([_counts(d) for d in _draw_chunks(m, n_boot, seed)])
    counts.flags.writeable = False
    return counts


def _count_chunks(m: int, n_boot: int, seed: int):
    if m * n_boot <= _CACHE_CELLS:
        counts = _cached_counts(m, n_boot, seed)
        for start in range(0, n_boot, _CHUNK):
            yield counts[start:start + _CHUNK]
    else:
        for d in _draw_chunks(m, n_boot, seed):
            yield _counts(d)


@lru_cache(maxsize=1)
def _blas():
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()


def bootstrap_scores(metric: Metric, kind: str, n_classes: int | None, y: np.ndarray, outs: list[dict],
                     rows: np.ndarray, n_boot: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Each output's score on ``rows`` (k,) and on ``n_boot`` resamples of them (n_boot, k), every output on
    the same resampled rows (NaN where the metric is undefined on a resample)."""
    draws = np.empty((n_boot, len(outs)))
    fast = [counted_score(metric.scorer_name, y[rows], {k: v[rows] for k, v in o.items()}) for o in outs]
    if len(rows) and all(f is not None for f in fast):
        observed = np.array([f(np.ones((1, len(rows))))[0] for f in fast])
        start = 0
        with _blas().limit(limits=1, user_api="blas"):  # products this narrow only lose to threads
            for counts in _count_chunks(len(rows), n_boot, seed):
                c = counts.astype(float)
                for j, f in enumerate(fast):
                    draws[start:start + len(c), j] = f(c)
                start += len(c)
        return observed, draws
    replays = [Replay(kind, n_classes, o) for o in outs]
    observed = np.array([score(metric, r, rows, y[rows]) for r in replays])
    start = 0
    for chunk in (_draw_chunks(len(rows), n_boot, seed) if len(rows) else []):
        for pos in chunk:
            idx = rows[pos]
            draws[start] = [score(metric, r, idx, y[idx]) for r in replays]
            start += 1
    return observed, draws[:start]


def _finite(x: np.ndarray) -> np.ndarray:
    return x[np.isfinite(x)]


def _bounds(diffs: np.ndarray, alpha: float) -> tuple[float, float]:
    """One-sided alpha lower and upper bounds (together a 1 - 2 alpha interval); infinite without draws."""
    if not len(diffs):
        return -np.inf, np.inf
    lower, upper = np.percentile(diffs, [100 * alpha, 100 * (1 - alpha)])
    return float(lower), float(upper)


def compare(metric: Metric, y: np.ndarray, ref: dict, var: dict, groups: dict[str, np.ndarray], kind: str,
            n_classes: int | None, cfg: SearchConfig) -> dict:
    """Quality of a variant vs the reference on the same rows, overall and per group."""
    rows = np.arange(len(y))
    s, tol = metric.sign, cfg.tolerance
    (quality, ref_quality), draws = bootstrap_scores(metric, kind, n_classes, y, [var, ref], rows, cfg.n_boot, cfg.seed)
    observed = quality - ref_quality
    lower, upper = _bounds(_finite(draws[:, 0] - draws[:, 1]), cfg.alpha)
    q_lo, q_hi = sorted(s * np.array(_bounds(_finite(draws[:, 0]), cfg.alpha)))
    # What changed for the people behind the rows: flipped labels, or the typical change of a prediction.
    if kind == "classification":
        changed, change_key = (var["predict"] != ref["predict"]).astype(float), "flip_rate"
    else:
        changed, change_key = np.abs(var["predict"] - ref["predict"]), "mean_abs_change"
    rec = {
        "quality": {"mean": s * quality, "ci_low": q_lo, "ci_high": q_hi},
        "vs_best": {"diff_mean": s * observed, "ci_low": min(s * lower, s * upper),
                    "ci_high": max(s * lower, s * upper),
                    "non_inferior": bool(lower > -tol), "verdict": verdict(lower, upper, tol),
                    change_key: float(changed.mean())},
        "groups": {},
    }
    if kind == "classification":
        rec["vs_best"]["mcnemar_p"] = mcnemar_exact(var["predict"] == y, ref["predict"] == y)
    tested = [g for g, m in groups.items() if m.sum() >= cfg.min_group_size]
    g_alpha = cfg.alpha  # intersection-union: each part of "holds everywhere" at alpha (module docstring)
    for g, mask in groups.items():
        idx = rows[mask]
        n = len(idx)
        entry = {"n": n, "mean": None, "diff_vs_best": None, "non_inferior": None, "tested": False,
                 change_key: float(changed[mask].mean()) if n else None}
        if g in tested:
            (g_var, g_ref), g_draws = bootstrap_scores(metric, kind, n_classes, y, [var, ref], idx, cfg.n_boot,
                                                       cfg.seed)
            g_lower, g_upper = _bounds(_finite(g_draws[:, 0] - g_draws[:, 1]), g_alpha)
            v = verdict(g_lower, g_upper, tol)
            entry.update(mean=s * g_var, diff_vs_best=s * (g_var - g_ref), bound=s * g_lower,
                         ci_low=min(s * g_lower, s * g_upper),
                         ci_high=max(s * g_lower, s * g_upper), tested=True, non_inferior=v == "non_inferior",
                         verdict=v)
            if v == "inconclusive":
                entry["rows_needed"] = rows_needed(n, g_var - g_ref, g_lower, g_upper, tol)
        else:  # too few rows to test: nothing is shown either way
            entry.update(mean=s * score(metric, Replay(kind, n_classes, var), idx, y[idx]) if n else None,
                         verdict="inconclusive", rows_needed=cfg.min_group_size,
                         note=f"untested: {n} rows < --min-group-size {cfg.min_group_size}")
        rec["groups"][g] = entry
    failing = [g for g, e in rec["groups"].items() if e["tested"] and not e["non_inferior"]]
    rec["on_par"] = bool(rec["vs_best"]["non_inferior"] and not failing)
    if not rec["vs_best"]["non_inferior"]:
        bound = rec["vs_best"]["ci_low"] if s > 0 else rec["vs_best"]["ci_high"]
        rec["rejected_because"] = (f"quality drops: {metric.name} {s * observed:+.4f} vs the original, bound "
                                   f"{bound:+.4f} beyond the {tol:g} tolerance")
    elif failing:  # harm shown first, then the lowest bound
        worst = min(failing, key=lambda g: (rec["groups"][g]["verdict"] != "harm", s * rec["groups"][g]["bound"]))
        e = rec["groups"][worst]
        change = (f"{100 * e['flip_rate']:.1f}% of its predictions flipped" if kind == "classification"
                  else f"predictions moved by {e['mean_abs_change']:.3g} on average")
        if e["verdict"] == "harm":
            far = e["ci_high"] if s > 0 else e["ci_low"]  # the bound nearest to no change
            rec["rejected_because"] = (f"group {worst}: {e['diff_vs_best']:+.4f} {metric.name} vs the original, "
                                       f"harm shown (even the bound {far:+.4f} is beyond the {tol:g} tolerance; "
                                       f"{change})")
        else:
            need = (f"about {e['rows_needed']:,} rows in the group would decide it" if e.get("rows_needed")
                    else "no number of rows decides a difference on the tolerance itself")
            rec["rejected_because"] = (f"group {worst}: {e['diff_vs_best']:+.4f} {metric.name} vs the original, "
                                       f"inconclusive (bound {e['bound']:+.4f} beyond the {tol:g} tolerance, harm "
                                       f"not shown either; {change}); {need}")
    else:
        rec["rejected_because"] = None
    return rec


def variant_key(chain: list[dict]) -> str:
    """A file-safe key for a variant: the techniques and settings applied, in order, to the original."""
    import hashlib
    import json
    import re

    digest = hashlib.sha256(json.dumps(chain, sort_keys=True, default=str).encode()).hexdigest()[:12]
    return f"{re.sub(r'[^A-Za-z0-9_.-]', '_', chain[-1]['name'])}-{digest}"


def _try_settings(t, source, configs: list, cal, X_eval, y_eval, groups_eval, metric: Metric, kind: str,
                  n_classes: int | None, cfg: SearchConfig, ref_outputs: dict, artifact_of) -> list[tuple]:
    """One trial of the search, run on a worker: ``t``'s settings on ``source``, in order, until one holds
    -> [(config, pipeline, outputs, record, artifact)]. ``artifact_of``: the pipeline -> its deployable
    artifact (the export, made here, beside the other trials, rather than in the timed step)."""
    tried = []
    for config in configs:
        new = t.apply(source, config, cal)
        outputs = model_outputs(new, X_eval, n_classes)
        rec = compare(metric, y_eval, ref_outputs, outputs, groups_eval, kind, n_classes, cfg)
        tried.append((config, new, outputs, rec, artifact_of(new) if artifact_of else None))
        if rec["on_par"]:
            break
    return tried


def search(pipeline, X_cal, y_cal, X_eval, y_eval, groups_eval: dict[str, np.ndarray], metric: Metric, kind: str,
           n_classes: int | None, techniques: list[str] | None, cfg: SearchConfig,
           progress: Callable[[str, int, int, str], None] | None = None, *, n_jobs: int = 1,
           executor: str | None = None, store=None, artifact_of=None,
           load_pipeline: Callable | None = None) -> tuple[list[Variant], list[dict]]:
    """-> (variants including the original first, one comparison record each).

    Round one applies every technique to the original. With ``cfg.chain``, each later round applies, to every
    variant the previous round kept, the techniques of a later stage (fewer trees, then shallower trees, then
    int8...). Every variant, chained or not, is judged against the original, so a chain cannot drift from it
    by a tolerance per step. ``progress(stage, done, total, what)``: "search" or "chain", ``what`` the variant
    just tried ("int8-dynamic", "tree-subset + int8-dynamic").

    The trials of a round (a technique on a variant, its settings cheapest first until one holds) are
    independent: they run side by side through joblib (``n_jobs`` local processes, or ``executor``: an
    existing Dask or Ray cluster), and the variants come back in the order a sequential search makes them.
    ``store`` (a ``TrialStore``) keeps each variant as its trial completes, with its answers and its
    ``artifact_of(pipeline)``; a resumed search judges the stored ones again (the tolerance may differ) and
    makes only the rest. ``load_pipeline(skops_bytes)``: a stored variant's pipeline.
    """
    from ..evaluation.quality import executor_backend, parallel

    ref = Variant("original", "original", {}, pipeline, False, model_outputs(pipeline, X_eval, n_classes))
    variants, records = [ref], [compare(metric, y_eval, ref.outputs, ref.outputs, groups_eval, kind, n_classes, cfg)]
    names = technique_names(techniques, pipeline)
    chainable = techniques or list(TECHNIQUES)  # later rounds: the requested techniques, or all of them

    def variant(base: Variant | None, name: str, config, new, outputs, artifact) -> Variant:
        t, step = TECHNIQUES.get(name), {"name": name, "config": config.__dict__}
        label = f"{name}:{config_label(config)}".rstrip(":")  # a technique with one setting: its name
        return Variant(f"{base.name} + {label}" if base else label, name, config.__dict__, new, t.interpretable,
                       outputs, (base.chain if base else []) + [step], t.stage, artifact)

    def stored(base: Variant | None, name: str, configs: list) -> list[tuple[Variant, dict]]:
        """The trial's variants the store holds, in order, up to the first missing one."""
        found = []
        for config in configs:
            chain = (base.chain if base else []) + [{"name": name, "config": config.__dict__}]
            entry = store.load_variant(variant_key(chain)) if store is not None else None
            if entry is None:
                break
            _, outputs, artifact = entry
            try:
                new = load_pipeline(artifact["skops"])
            except Exception:  # skops that does not load any more: make it again
                store.damaged.append(variant_key(chain))
                break
            rec = compare(metric, y_eval, ref.outputs, outputs, groups_eval, kind, n_classes, cfg)
            found.append((variant(base, name, config, new, outputs, artifact), rec))
            if rec["on_par"]:
                break
        return found

    def run_round(stage: str, trials: list[tuple[Variant | None, str]]) -> list[Variant]:
        """Every trial of a round -> the variants that held (one per trial at most)."""
        if not trials:
            return []
        done: list[list[tuple[Variant, dict]]] = []
        todo = []  # (trial index, configs still to try)
        for k, (base, name) in enumerate(trials):
            configs = TECHNIQUES.get(name).settings(base.pipeline if base else pipeline)
            done.append(stored(base, name, configs))
            if not (done[k] and done[k][-1][1]["on_par"]) and len(done[k]) < len(configs):
                todo.append((k, configs[len(done[k]):]))
        if progress:
            progress(stage, len(trials) - len(todo), len(trials), "stored" if len(todo) < len(trials) else "")
        cores = n_jobs if n_jobs > 0 else (os.cpu_count() or 1) + 1 + n_jobs  # joblib's: -1 all, -2 all but one
        with executor_backend(executor, n_jobs):
            # a single trial runs here; more, on as many workers as every other step uses (loky keeps them)
            results = parallel(executor, 1 if len(todo) <= 1 else max(1, cores), memmap=False)(
                delayed(_try_settings)(TECHNIQUES.get(trials[k][1]), (trials[k][0] or ref).pipeline, configs,
                                       (X_cal, y_cal), X_eval, y_eval, groups_eval, metric, kind, n_classes, cfg,
                                       ref.outputs, artifact_of)
                for k, configs in todo)
            for n, ((k, _), tried) in enumerate(zip(todo, results)):
                base, name = trials[k]
                for config, new, outputs, rec, artifact in tried:
                    v = variant(base, name, config, new, outputs, artifact)
                    if store is not None and artifact is not None:
                        store.save_variant(variant_key(v.chain), {"name": v.name}, outputs, artifact)
                    done[k].append((v, rec))
                if progress:
                    progress(stage, len(trials) - len(todo) + n + 1, len(trials), done[k][-1][0].name)
        for trial in done:
            for v, rec in trial:
                variants.append(v)
                records.append(rec)
        return [trial[-1][0] for trial in done if trial and trial[-1][1]["on_par"]]

    frontier = run_round("search", [(None, name) for name in names])
    while cfg.chain and frontier:
        frontier = run_round("chain", [(base, name) for base in frontier for name in chainable
                                       if TECHNIQUES.get(name).stage > base.stage
                                       and TECHNIQUES.get(name).applies_to(base.pipeline)])
    return variants, records
