"""From fold scores and costs to the decision: who is best, who is on par (overall and in every tested
group), the Pareto frontier, the recommendation and a reason a person can read.

The rule (docs/statistics.md says why): a candidate is on par when its non-inferiority to the best is shown
overall, and no tested group shows harm (its difference worse than the tolerance, with confidence). A group
too small to tell either way is *inconclusive*: reported with the rows that would tell, and a reason to
reject only with ``strict_groups``. A constant baseline is never recommended unless ``allow_baseline``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..candidates import Candidate
from ..errors import ConfigError, FrugalError
from ..evaluation.metrics import Metric
from ..evaluation.quality import FoldScores
from .stats import holm, mean_ci, non_inferiority, rows_needed, t_quantile, verdict

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
    strict_groups: bool = False  # an inconclusive group rejects too (non-inferiority shown in every tested group)
    allow_baseline: bool = False  # a constant predictor may be recommended


def _sig2(x: float) -> float:
    """Round to two significant figures: costs closer than that are measurement noise, not a ranking."""
    if x is None or not math.isfinite(x):
        return math.inf  # unmeasured (e.g. no peak memory off Linux): never the cheapest
    if x == 0:
        return 0.0
    return round(x, 1 - int(math.floor(math.log10(abs(x)))))


def format_cost(x: float, unit: str = "") -> str:
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

    overall = {fs.name: non_inferiority(fs.scores - best.scores, tol, test_train_ratio, cfg.alpha) for fs in ok}
    on_par_overall = {fs.name: fs is best or overall[fs.name].non_inferior(cfg.alpha) for fs in ok}
    # The references a group is judged against: every candidate on par overall. The best by mean is one of them
    # but not the only one, so a candidate that is "best" by noise has its groups checked against the others.
    references = [fs for fs in ok if on_par_overall[fs.name]]

    records = []
    for fs in ok:
        mean, lo, hi = mean_ci(fs.scores, test_train_ratio, 1 - 2 * cfg.alpha)
        q_lo, q_hi = sorted((s * lo, s * hi))
        ni = overall[fs.name]
        is_best = fs is best
        overall_ok = on_par_overall[fs.name]
        d_lo, d_hi = sorted((s * ni.lower, s * ni.upper)) if np.isfinite(ni.lower) else (0.0, 0.0)
        rec = {
            "name": fs.name, "family": by_name[fs.name].family,
            "quality": {"mean": s * mean, "ci_low": q_lo, "ci_high": q_hi},
            "vs_best": {"diff_mean": s * ni.diff_mean if np.isfinite(ni.diff_mean) else 0.0,
                        "ci_low": d_lo, "ci_high": d_hi,
                        "p_value": 0.0 if is_best else ni.p_value, "non_inferior": bool(overall_ok),
                        "verdict": "non_inferior" if is_best else _verdict(ni, tol)},
            "groups": {}, "cost": costs[fs.name], "interpretable": by_name[fs.name].interpretable,
            "on_par": False, "pareto": False, "rejected_because": None,
        }
        if by_name[fs.name].resolution is not None:  # an image candidate: its input, pixels per side
            rec["resolution"] = by_name[fs.name].resolution
        refs = ([best] if not is_best else []) + ([r for r in references if r is not fs and r is not best]
                                                  if overall_ok else [])
        harm, weakest = _judge_groups(rec, fs, refs, best, group_sizes, test_train_ratio, cfg, s)
        harmed = [g for g, e in rec["groups"].items() if e.get("verdict") == "harm"]
        unsure = [g for g, e in rec["groups"].items() if e.get("verdict") == "inconclusive"]
        failing = harmed + (unsure if cfg.strict_groups else [])
        rec["on_par"] = bool(overall_ok and not failing)
        if not overall_ok:
            rec["rejected_because"] = (f"not on par overall: {metric.name} {rec['vs_best']['diff_mean']:+.4f} vs best, "
                                       f"bound {d_lo if s > 0 else d_hi:+.4f} beyond the {tol:g} tolerance")
        elif harmed:
            worst = min(harmed, key=lambda g: harm[g][1].upper)  # the clearest harm
            ref_name, t = harm[worst]
            more = f" (and {len(harmed) - 1} more group(s))" if len(harmed) > 1 else ""
            rec["rejected_because"] = (f"group {worst}: {s * t.diff_mean:+.4f} {metric.name} vs "
                                       f"{'best' if ref_name == best.name else ref_name}, harm shown: worse than the "
                                       f"{tol:g} tolerance with {100 * (1 - cfg.alpha):.0f}% confidence (bound "
                                       f"{s * t.upper:+.4f}){more}")
        elif failing:
            worst = max(failing, key=lambda g: weakest[g])  # the weakest evidence
            e = rec["groups"][worst]
            more = f" (and {len(failing) - 1} more group(s))" if len(failing) > 1 else ""
            tell = f"; about {e['rows_needed']:,} rows in the group would tell" if e.get("rows_needed") else ""
            rec["rejected_because"] = (f"group {worst}: {e['diff_vs_best']:+.4f} {metric.name} vs best, "
                                       f"not shown within the {tol:g} tolerance (Holm-adjusted p = "
                                       f"{weakest[worst]:.2g}{tell}; --strict-groups){more}")
        records.append(rec)

    mark_pareto(records, metric)
    baseline_on_par = [r["name"] for r in records if r["family"] == "baseline" and r["on_par"]]
    if not cfg.allow_baseline:
        for r in records:
            if r["family"] == "baseline":
                r["eligible"] = False
                if r["on_par"]:
                    r["rejected_because"] = (f"a constant answer, on par under {metric.name}: never recommended "
                                             "unless --allow-baseline")
    keys = COST_PRIORITIES[cfg.cost_priority]
    rank = {c.name: c.rank for c in candidates}
    chosen = recommend(records, cfg.cost_priority, rank)
    if chosen is None:  # nothing that may be recommended is on par: the best of those, said plainly
        chosen = max((r for r in records if r.get("eligible", True)),
                     key=lambda r: (metric.sign * r["quality"]["mean"], -rank[r["name"]]), default=None)
        if chosen is None:
            raise ConfigError("only the constant baseline ran; add candidates or pass --allow-baseline")
    best_rec = next(r for r in records if r["name"] == best.name)
    reason = _reason(chosen, best_rec, records, metric, cfg, keys)
    if baseline_on_par and chosen["family"] != "baseline":
        reason += " " + baseline_note(metric, baseline_on_par[0])
    return {"best": best.name, "recommended": chosen["name"], "candidates": records, "failed": failed,
            "reason": reason}


def _judge_groups(rec: dict, fs: FoldScores, refs: list[FoldScores], best: FoldScores, group_sizes: dict[str, int],
                  test_train_ratio: float, cfg: DecisionConfig, s: float) -> tuple[dict, dict]:
    """Fill ``rec["groups"]``: each group's difference to the best, and its verdict against every reference.

    -> (group -> (reference name, test) of the clearest harm shown, group -> the largest Holm-adjusted p of a
    non-inferiority not shown).
    """
    tol, testable = cfg.tolerance, []
    for g, gs in fs.group_scores.items():
        n = int(group_sizes[g])
        valid = np.isfinite(gs) & np.isfinite(best.group_scores[g])
        entry = {"n": n, "mean": s * float(np.mean(gs[valid])) if valid.any() else None,
                 "diff_vs_best": None, "non_inferior": None, "tested": False}
        if valid.any():
            entry["diff_vs_best"] = s * float(np.mean(gs[valid] - best.group_scores[g][valid]))
        if n < cfg.min_group_size:
            entry["note"] = f"untested: {n} rows < --min-group-size {cfg.min_group_size}"
        elif np.isfinite(gs).sum() < 2:
            entry["note"] = "untested: the metric is undefined in this group on most folds"
        else:
            testable.append(g)
            entry.update(tested=True, non_inferior=True, verdict="non_inferior")  # until a reference says otherwise
        rec["groups"][g] = entry
    harm, weakest, needed = {}, {}, {}
    for ref in refs:
        tests = {g: non_inferiority(fs.group_scores[g] - ref.group_scores[g], tol, test_train_ratio, cfg.alpha)
                 for g in testable}
        tests = {g: t for g, t in tests.items() if t.n_folds >= 2}
        adjusted = holm({g: t.p_value for g, t in tests.items()})
        for g, t in tests.items():
            e = rec["groups"][g]
            if ref is best:
                # bound: the one-sided (1 - alpha) bound of the difference to the best, in metric units, before
                # Holm; harm_bound: the other side, which shows harm when it is beyond the tolerance
                e.update(p_value=t.p_value, bound=s * t.lower, harm_bound=s * t.upper, p_value_holm=adjusted[g])
            # Non-inferiority is a claim about every group at once: Holm. Harm is shown group by group at alpha,
            # uncorrected: more groups give a harmed group more chances to be seen, never fewer.
            if t.upper < -tol and (g not in harm or t.upper < harm[g][1].upper):
                harm[g] = (ref.name, t)
            if adjusted[g] > cfg.alpha:
                e["non_inferior"] = False
                weakest[g] = max(weakest.get(g, 0.0), adjusted[g])
                # rows for the Bonferroni bound (Holm's last step) to clear the margin on the estimate's side
                lower_m = t.diff_mean - (t.diff_mean - t.lower) * _t_ratio(cfg.alpha / len(tests), cfg.alpha,
                                                                           t.n_folds)
                needed.setdefault(g, []).append(rows_needed(e["n"], t.diff_mean, lower_m, t.upper, tol))
    for g in testable:
        e = rec["groups"][g]
        if g in harm:
            e["verdict"] = "harm"
            if harm[g][0] != best.name:
                t = harm[g][1]
                e["harm_vs"] = {"name": harm[g][0], "diff": s * t.diff_mean, "harm_bound": s * t.upper}
        elif not e["non_inferior"]:
            e["verdict"] = "inconclusive"
            e["rows_needed"] = None if None in needed[g] else max(needed[g])
    return harm, weakest


def _verdict(t, tol: float, lower: float | None = None) -> str:
    """harm, non_inferior or inconclusive from a test's one-sided bounds (``lower`` overrides the lower bound)."""
    return verdict(t.lower if lower is None else lower, t.upper, tol) if np.isfinite(t.upper) else "inconclusive"


def _t_ratio(alpha_to: float, alpha_from: float, n_folds: int) -> float:
    """How much wider a one-sided bound at ``alpha_to`` is than one at ``alpha_from``."""
    return t_quantile(1 - alpha_to, n_folds - 1) / t_quantile(1 - alpha_from, n_folds - 1)


def baseline_note(metric: Metric, name: str) -> str:
    """What it means that a constant answer is on par, and which metrics can tell the models apart."""
    if metric.task == "classification":
        return (f"The constant baseline ({name}) is on par too: {metric.name} cannot tell these models from always "
                "giving the same answer; balanced_accuracy, roc_auc or log_loss can (--metric).")
    return (f"The constant baseline ({name}) is on par too: {metric.name} cannot tell these models from predicting "
            "the mean; the features may carry little signal for this target.")


def recommend(records: list[dict], cost_priority: str, rank: dict[str, int]) -> dict | None:
    """The cheapest on-par, eligible record by ``cost_priority``, None if there is none; every other on-par,
    eligible record gets its ``rejected_because``.

    Costs are compared key by key: records level with the cheapest on a key (see ``_level``) go on to the next
    key; among those level on every key, the lower rank (thinner, or tried earlier) wins.
    """
    keys = COST_PRIORITIES[cost_priority]
    pool = [r for r in records if r["on_par"] and r.get("eligible", True)]
    if not pool:
        return None
    for key in keys:
        cheapest = min(pool, key=lambda r: (_sig2(r["cost"][key]), rank[r["name"]]))
        pool = [r for r in pool if _level(r["cost"], cheapest["cost"], key)]
    chosen = min(pool, key=lambda r: rank[r["name"]])
    for r in records:
        if r["on_par"] and r.get("eligible", True) and r is not chosen:
            r["rejected_because"] = _costlier(r, chosen, keys)
    return chosen


def _level(a: dict, b: dict, key: str) -> bool:
    """Two costs are level when they agree to two significant figures, or when both were measured with an
    interval (the p99 latency's) and the intervals overlap: a difference the measurement cannot resolve. An
    interval whose upper end too few calls could bound is open (infinite): level with anything above its lower
    end, never cheaper than anything below it."""
    if _sig2(a[key]) == _sig2(b[key]):
        return True
    ia, ib = a.get(f"{key}_ci"), b.get(f"{key}_ci")
    return bool(ia and ib and None not in (*ia, *ib) and ia[0] <= ib[1] and ib[0] <= ia[1])


def _costlier(r: dict, chosen: dict, keys: tuple[str, ...]) -> str:
    """Why an on-par record lost to ``chosen``: the first cost that is not level (see ``_level``)."""
    level = []
    for key in keys:
        label, unit = COST_LABELS[key]
        a, b = format_cost(r["cost"][key], unit), format_cost(chosen["cost"][key], unit)
        if not _level(r["cost"], chosen["cost"], key):
            tie = f" (level on {', '.join(level)})" if level else ""
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
    untested = [g for g, e in chosen["groups"].items() if not e["tested"]]
    label, unit = COST_LABELS[keys[0]]
    q = lambda r: f"{r['quality']['mean']:.4g}"  # noqa: E731
    if not chosen["on_par"]:
        text = (f"No candidate that may be recommended is on par with the best, {best['name']}, within the "
                f"{cfg.tolerance:g} tolerance and without harm shown in a group; {chosen['name']} has the best "
                f"{metric.name} of them ({q(chosen)}), with this caveat: {chosen['rejected_because']}.")
    elif chosen is best:
        cheaper_rejected = [r for r in records if r is not best and r["rejected_because"]
                            and not r["rejected_because"].startswith(("on par", "a constant answer"))]
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
                f"bound {bound:+.4f} within the {cfg.tolerance:g} tolerance)") + group_sentence(chosen, metric, cfg.tolerance) + "."
        a, b = chosen["cost"][keys[0]], best["cost"][keys[0]]
        if a > 0 and b > a:
            text += f" Its {label} is {format_cost(a, unit)} vs {format_cost(b, unit)} ({b / a:.3g}x lower)"
            sa, sb = chosen["cost"]["size_bytes"], best["cost"]["size_bytes"]
            text += f" and it is {sb / sa:.3g}x smaller." if keys[0] != "size_bytes" and sb > sa else "."
        if chosen["interpretable"]:
            text += " It is also interpretable."
    if untested:
        text += (f" Group(s) {', '.join(untested)} had fewer than {cfg.min_group_size} rows or an undefined metric "
                 "and were not tested.")
    return text


def group_sentence(rec: dict, metric: Metric, tolerance: float) -> str:
    """What the tested groups showed for a candidate on par: all shown on par, or which were too small to tell
    (with the rows each would need, and the estimate where it lies beyond the tolerance)."""
    tested = [g for g, e in rec["groups"].items() if e["tested"]]
    unsure = [g for g in tested if rec["groups"][g].get("verdict") == "inconclusive"]
    if not tested:
        return ""
    if not unsure:
        return f", and shown on par in all {len(tested)} tested group(s)"

    def needs(g):
        e = rec["groups"][g]
        d = e.get("diff_vs_best")
        beyond = f", estimate {d:+.3f}" if d is not None and metric.sign * d < -tolerance else ""
        return f"{g} ~{e['rows_needed']:,}{beyond}" if e.get("rows_needed") else f"{g} (on the margin{beyond})"

    unsure.sort(key=lambda g: metric.sign * (rec["groups"][g].get("diff_vs_best") or 0.0))  # worst estimate first
    listed = ", ".join(needs(g) for g in unsure[:3]) + (f" and {len(unsure) - 3} more" if len(unsure) > 3 else "")
    return (f"; no tested group shows harm, and {len(tested) - len(unsure)} of {len(tested)} show on par: the others "
            f"are too small to tell (rows each would need: {listed})")
