"""The accuracy-aware search: try techniques and settings cheapest first, compare every variant with the
original on the same held-out rows, keep the ones whose quality holds overall and in every group.

Then chains: the variants that hold are compressed again by techniques of a later stage (a pruned forest
made shallower, a pruned encoder quantized), each judged against the original.

"Holds" = the paired bootstrap lower bound of (variant - original) is above -tolerance, overall at
level alpha and in each group with enough rows at alpha / (number of groups) (Bonferroni). Flip rates
(rows whose prediction changed) and McNemar's exact test are reported beside it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from ..errors import ConfigError
from ..evaluation.metrics import Metric, Replay, score
from ..evaluation.quality import model_outputs
from ..selection.stats import mcnemar_exact, paired_bootstrap
from . import TECHNIQUES, compress, config_label


@dataclass(frozen=True)
class SearchConfig:
    tolerance: float = 0.01
    alpha: float = 0.05
    min_group_size: int = 30
    n_boot: int = 400
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


def compare(metric: Metric, y: np.ndarray, ref: dict, var: dict, groups: dict[str, np.ndarray], kind: str,
            n_classes: int | None, cfg: SearchConfig) -> dict:
    """Quality of a variant vs the reference on the same rows, overall and per group."""
    rows = np.arange(len(y))
    ref_r, var_r = Replay(kind, n_classes, ref), Replay(kind, n_classes, var)
    s = metric.sign

    def scorer(replay):
        return lambda idx: score(metric, replay, idx, y[idx])

    level = 100 * cfg.alpha
    observed, diffs = paired_bootstrap(scorer(var_r), scorer(ref_r), rows, cfg.n_boot, cfg.seed)
    lower, upper = np.percentile(diffs, [level, 100 - level])
    quality, qd = paired_bootstrap(scorer(var_r), lambda idx: 0.0, rows, cfg.n_boot, cfg.seed)
    q_lo, q_hi = sorted(s * np.percentile(qd, [2.5, 97.5]))
    # What changed for the people behind the rows: flipped labels, or the typical change of a prediction.
    if kind == "classification":
        changed, change_key = (var["predict"] != ref["predict"]).astype(float), "flip_rate"
    else:
        changed, change_key = np.abs(var["predict"] - ref["predict"]), "mean_abs_change"
    rec = {
        "quality": {"mean": s * quality, "ci_low": q_lo, "ci_high": q_hi},
        "vs_best": {"diff_mean": s * observed, "ci_low": min(s * lower, s * upper), "ci_high": max(s * lower, s * upper),
                    "non_inferior": bool(lower > -cfg.tolerance), change_key: float(changed.mean())},
        "groups": {},
    }
    if kind == "classification":
        rec["vs_best"]["mcnemar_p"] = mcnemar_exact(var["predict"] == y, ref["predict"] == y)
    tested = [g for g, m in groups.items() if m.sum() >= cfg.min_group_size]
    g_level = 100 * cfg.alpha / max(1, len(tested))
    for g, mask in groups.items():
        idx = rows[mask]
        entry = {"n": int(mask.sum()), "mean": s * scorer(var_r)(idx) if len(idx) else None,
                 "diff_vs_best": None, "non_inferior": None, "tested": False,
                 change_key: float(changed[mask].mean()) if len(idx) else None}
        if g in tested:
            g_obs, g_diffs = paired_bootstrap(scorer(var_r), scorer(ref_r), idx, cfg.n_boot, cfg.seed)
            g_lower = float(np.percentile(g_diffs, g_level)) if len(g_diffs) else -np.inf
            entry.update(diff_vs_best=s * g_obs, bound=s * g_lower, tested=True,
                         non_inferior=bool(g_lower > -cfg.tolerance))
        else:
            entry["note"] = f"untested: {entry['n']} rows < --min-group-size {cfg.min_group_size}"
        rec["groups"][g] = entry
    failing = [g for g, e in rec["groups"].items() if e["tested"] and not e["non_inferior"]]
    rec["on_par"] = bool(rec["vs_best"]["non_inferior"] and not failing)
    if not rec["vs_best"]["non_inferior"]:
        bound = rec["vs_best"]["ci_low"] if s > 0 else rec["vs_best"]["ci_high"]
        rec["rejected_because"] = (f"quality drops: {metric.name} {s * observed:+.4f} vs the original, bound "
                                   f"{bound:+.4f} beyond the {cfg.tolerance:g} tolerance")
    elif failing:
        worst = min(failing, key=lambda g: s * rec["groups"][g]["bound"])
        e = rec["groups"][worst]
        change = (f"{100 * e['flip_rate']:.1f}% of its predictions flipped" if kind == "classification"
                  else f"predictions moved by {e['mean_abs_change']:.3g} on average")
        rec["rejected_because"] = (f"group {worst}: {e['diff_vs_best']:+.4f} {metric.name} vs the original "
                                   f"(bound {e['bound']:+.4f}; {change}), beyond the {cfg.tolerance:g} tolerance")
    else:
        rec["rejected_because"] = None
    return rec


def search(pipeline, X_cal, y_cal, X_eval, y_eval, groups_eval: dict[str, np.ndarray], metric: Metric, kind: str,
           n_classes: int | None, techniques: list[str] | None, cfg: SearchConfig,
           progress: Callable[[str, int, int], None] | None = None) -> tuple[list[Variant], list[dict]]:
    """-> (variants including the original first, one comparison record each).

    Round one applies every technique to the original. With ``cfg.chain``, each later round applies, to every
    variant the previous round kept, the techniques of a later stage (fewer trees, then shallower trees, then
    int8...). Every variant, chained or not, is judged against the original, so a chain cannot drift from it
    by a tolerance per step.
    """
    ref = Variant("original", "original", {}, pipeline, False, model_outputs(pipeline, X_eval, n_classes))
    variants, records = [ref], [compare(metric, y_eval, ref.outputs, ref.outputs, groups_eval, kind, n_classes, cfg)]
    names = technique_names(techniques, pipeline)
    chainable = techniques or list(TECHNIQUES)  # later rounds: the requested techniques, or all of them

    def extend(base: Variant | None, name: str) -> Variant | None:
        """Try ``name``'s settings on ``base`` (None: the original), cheapest first; the first that holds."""
        t, source = TECHNIQUES.get(name), base.pipeline if base else pipeline
        for config in t.settings(source):  # cheapest first: the first that holds ends this technique
            new = compress(source, config, calibration=(X_cal, y_cal))
            step = {"name": name, "config": config.__dict__}
            label = f"{name}:{config_label(config)}".rstrip(":")  # a technique with one setting: its name
            v = Variant(f"{base.name} + {label}" if base else label, name, config.__dict__, new, t.interpretable,
                        model_outputs(new, X_eval, n_classes), (base.chain if base else []) + [step], t.stage)
            rec = compare(metric, y_eval, ref.outputs, v.outputs, groups_eval, kind, n_classes, cfg)
            variants.append(v)
            records.append(rec)
            if rec["on_par"]:
                return v
        return None

    kept = []
    for k, name in enumerate(names):
        kept.append(extend(None, name))
        if progress:
            progress("search", k + 1, len(names))
    frontier = [v for v in kept if v is not None]
    while cfg.chain and frontier:
        pairs = [(base, name) for base in frontier for name in chainable
                 if TECHNIQUES.get(name).stage > base.stage and TECHNIQUES.get(name).applies_to(base.pipeline)]
        kept = []
        for k, (base, name) in enumerate(pairs):
            kept.append(extend(base, name))
            if progress:
                progress("chain", k + 1, len(pairs))
        frontier = [v for v in kept if v is not None]
    return variants, records
