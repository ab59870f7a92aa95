"""From fold scores and costs to the decision: who is best, who is on par (overall and in every tested
group), the Pareto frontier, the recommendation and a reason a person can read."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..candidates import Candidate
from ..errors import FrugalError
from ..evaluation.metrics import Metric
from ..evaluation.quality import FoldScores
from .stats import holm, mean_ci, non_inferiority

COST_PRIORITIES = {
    "latency": ("latency_ms_p99", "size_bytes"),
    "size": ("size_bytes", "latency_ms_p99"),
    "energy": ("energy_j_per_1k", "latency_ms_p99"),
    "memory": ("peak_memory_mb", "latency_ms_p99"),
}
COST_LABELS = {"latency_ms_p99": ("p99 latency", "ms"), "size_bytes": ("size", "bytes"),
               "energy_j_per_1k": ("energy", "J per 1k predictions"), "peak_memory_mb": ("peak memory", "MB")}


@dataclass(frozen=True)
class DecisionConfig:
    tolerance: float = 0.01
    alpha: float = 0.05
    min_group_size: int = 30
    cost_priority: str = "latency"


def _sig2(x: float) -> float:
    """Round to two significant figures: costs closer than that are measurement noise, not a ranking."""
    if x is None or not math.isfinite(x):
        return math.inf  # unmeasured (e.g. no peak memory off Linux): never the cheapest
    if x == 0:
        return 0.0
    return round(x, 1 - int(math.floor(math.log10(abs(x)))))


def _fmt(x: float, unit: str = "") -> str:
    if unit == "bytes":
        for u, f in (("MB", 1e6), ("kB", 1e3)):
            if x >= f:
                return f"{x / f:.3g} {u}"
        return f"{x:.0f} B"
    return f"{x:.3g} {unit}".strip()


def decide(metric: Metric, fold_scores: list[FoldScores], costs: dict[str, dict], candidates: list[Candidate],
           group_sizes: dict[str, int], test_train_ratio: float, cfg: DecisionConfig) -> dict:
    """Build the decision: ``best``, ``recommended``, ``reason`` and one record per candidate."""
    by_name = {c.name: c for c in candidates}
    ok = [fs for fs in fold_scores if fs.error is None and np.isfinite(fs.scores).sum() >= 2]
    failed = [{"name": fs.name, "error": fs.error or "metric undefined on most folds"}
              for fs in fold_scores if fs not in ok]
    if not ok:
        raise FrugalError("every candidate failed: " + "; ".join(f"{f['name']}: {f['error']}" for f in failed))
    s = metric.sign
    best = max(ok, key=lambda fs: (np.nanmean(fs.scores), -by_name[fs.name].rank))
    tol = cfg.tolerance

    records = []
    for fs in ok:
        mean, lo, hi = mean_ci(fs.scores, test_train_ratio)
        q_lo, q_hi = sorted((s * lo, s * hi))
        ni = non_inferiority(fs.scores - best.scores, tol, test_train_ratio, cfg.alpha)
        is_best = fs is best
        overall_ok = True if is_best else ni.non_inferior(cfg.alpha)
        d_lo, d_hi = sorted((s * ni.lower, s * ni.upper)) if np.isfinite(ni.lower) else (0.0, 0.0)
        rec = {
            "name": fs.name, "family": by_name[fs.name].family,
            "quality": {"mean": s * mean, "ci_low": q_lo, "ci_high": q_hi},
            "vs_best": {"diff_mean": s * ni.diff_mean if np.isfinite(ni.diff_mean) else 0.0,
                        "ci_low": d_lo, "ci_high": d_hi,
                        "p_value": 0.0 if is_best else ni.p_value, "non_inferior": bool(overall_ok)},
            "groups": {}, "cost": costs[fs.name], "interpretable": by_name[fs.name].interpretable,
            "on_par": False, "pareto": False, "rejected_because": None,
        }
        p_values, bounds = {}, {}  # tested groups: p-value of "inferior by more than tol", the test itself
        for g, gs in fs.group_scores.items():
            n = int(group_sizes[g])
            valid = np.isfinite(gs) & np.isfinite(best.group_scores[g])
            entry = {"n": n, "mean": s * float(np.mean(gs[valid])) if valid.any() else None,
                     "diff_vs_best": None, "non_inferior": None, "tested": False}
            if valid.any():
                entry["diff_vs_best"] = s * float(np.mean(gs[valid] - best.group_scores[g][valid]))
            if n < cfg.min_group_size:
                entry["note"] = f"untested: {n} rows < --min-group-size {cfg.min_group_size}"
            elif valid.sum() < 2:
                entry["note"] = "untested: the metric is undefined in this group on most folds"
            elif is_best:
                entry.update(tested=True, non_inferior=True)
            else:
                gni = non_inferiority(gs - best.group_scores[g], tol, test_train_ratio, cfg.alpha)
                p_values[g], bounds[g] = gni.p_value, gni
                # bound: the one-sided (1 - alpha) bound of the difference, in metric units, before Holm
                entry.update(tested=True, p_value=gni.p_value, bound=s * gni.lower)
            rec["groups"][g] = entry
        adjusted = holm(p_values)
        for g, p_adj in adjusted.items():
            rec["groups"][g]["p_value_holm"] = p_adj
            rec["groups"][g]["non_inferior"] = bool(p_adj <= cfg.alpha)
        failing = [g for g, p_adj in adjusted.items() if p_adj > cfg.alpha]
        rec["on_par"] = bool(overall_ok and not failing)
        if not overall_ok:
            rec["rejected_because"] = (f"not on par overall: {metric.name} {rec['vs_best']['diff_mean']:+.4f} vs best, "
                                       f"bound {d_lo if s > 0 else d_hi:+.4f} beyond the {tol:g} tolerance")
        elif failing:
            worst = max(failing, key=lambda g: (adjusted[g], -bounds[g].diff_mean))  # the weakest evidence
            more = f" (and {len(failing) - 1} more group(s))" if len(failing) > 1 else ""
            rec["rejected_because"] = (f"group {worst}: {s * bounds[worst].diff_mean:+.4f} {metric.name} vs best, "
                                       f"not shown within the {tol:g} tolerance (Holm-adjusted p = "
                                       f"{adjusted[worst]:.2g}){more}")
        records.append(rec)

    mark_pareto(records, metric)
    keys = COST_PRIORITIES[cfg.cost_priority]
    chosen = recommend(records, cfg.cost_priority, {c.name: c.rank for c in candidates})
    best_rec = next(r for r in records if r["name"] == best.name)
    return {"best": best.name, "recommended": chosen["name"], "candidates": records, "failed": failed,
            "reason": _reason(chosen, best_rec, records, metric, cfg, keys)}


def recommend(records: list[dict], cost_priority: str, rank: dict[str, int]) -> dict:
    """The cheapest on-par record by ``cost_priority`` (ties within two significant figures: lower rank);
    every other on-par record gets its ``rejected_because``."""
    keys = COST_PRIORITIES[cost_priority]
    chosen = min((r for r in records if r["on_par"]),
                 key=lambda r: tuple(_sig2(r["cost"][k]) for k in keys) + (rank[r["name"]],))
    for r in records:
        if r["on_par"] and r is not chosen:
            r["rejected_because"] = _costlier(r, chosen, keys)
    return chosen


def _costlier(r: dict, chosen: dict, keys: tuple[str, ...]) -> str:
    """Why an on-par record lost to ``chosen``: the first cost that differs beyond two significant figures."""
    level = []
    for key in keys:
        label, unit = COST_LABELS[key]
        a, b = _fmt(r["cost"][key], unit), _fmt(chosen["cost"][key], unit)
        if _sig2(r["cost"][key]) != _sig2(chosen["cost"][key]):
            tie = f" (level on {', '.join(level)} to two significant figures)" if level else ""
            return f"on par, but costlier: {label} {a} vs {b} for {chosen['name']}{tie}"
        level.append(f"{label} {a} vs {b}")
    return f"on par and as cheap ({', '.join(level)}); {chosen['name']} comes first (thinner, or tried earlier)"


def mark_pareto(records: list[dict], metric: Metric) -> None:
    """Pareto-optimal on (quality, p99 latency, size): no other candidate is at least as good on all three
    and strictly better on one."""
    def obj(r):
        return (-metric.sign * r["quality"]["mean"], r["cost"]["latency_ms_p99"], r["cost"]["size_bytes"])

    for r in records:
        a = obj(r)
        r["pareto"] = not any(all(x <= y for x, y in zip(obj(o), a)) and obj(o) != a for o in records if o is not r)


def _reason(chosen: dict, best: dict, records: list[dict], metric: Metric, cfg: DecisionConfig,
            keys: tuple[str, str]) -> str:
    tested = [g for g, e in chosen["groups"].items() if e["tested"]]
    untested = [g for g, e in chosen["groups"].items() if not e["tested"]]
    label, unit = COST_LABELS[keys[0]]
    q = lambda r: f"{r['quality']['mean']:.4g}"  # noqa: E731
    if chosen is best:
        cheaper_rejected = [r for r in records if r is not best and r["rejected_because"]
                            and not r["rejected_because"].startswith("on par")]
        text = (f"{best['name']} has the best {metric.name} ({q(best)}) and no cheaper candidate is on par with it "
                f"within the {cfg.tolerance:g} tolerance")
        if cheaper_rejected:
            closest = max(cheaper_rejected, key=lambda r: metric.sign * r["quality"]["mean"])
            text += f"; the closest, {closest['name']}, was rejected: {closest['rejected_because']}"
        text += "."
    else:
        d = chosen["vs_best"]
        bound = d["ci_low"] if metric.higher_is_better else d["ci_high"]
        text = (f"{chosen['name']} is the cheapest candidate on par with the best, {best['name']}: {metric.name} "
                f"{q(chosen)} vs {q(best)} (difference {d['diff_mean']:+.4f}, one-sided {100 * (1 - cfg.alpha):.0f}% "
                f"bound {bound:+.4f} within the {cfg.tolerance:g} tolerance)")
        text += f", and on par in all {len(tested)} tested group(s)." if tested else "."
        a, b = chosen["cost"][keys[0]], best["cost"][keys[0]]
        if a > 0 and b > a:
            text += f" Its {label} is {_fmt(a, unit)} vs {_fmt(b, unit)} ({b / a:.3g}x lower)"
            sa, sb = chosen["cost"]["size_bytes"], best["cost"]["size_bytes"]
            text += f" and it is {sb / sa:.3g}x smaller." if keys[0] != "size_bytes" and sb > sa else "."
        if chosen["interpretable"]:
            text += " It is also interpretable."
    if untested:
        text += (f" Group(s) {', '.join(untested)} had fewer than {cfg.min_group_size} rows or an undefined metric "
                 "and were not tested.")
    return text
