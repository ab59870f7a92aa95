"""Screen, then confirm: how compress controls the error over every variant and chain it tries.

The search (search.py) tries many variants and chains (18 on a MiniLM model) and keeps those whose
bootstrap bound holds. Each bound alone is wrong with probability alpha at most, but with k variants the
chance that some truly worse one holds grows with k, and the cheapest that holds is the one kept. So:

1. Rows. The evaluation rows are split in two halves with a fixed seed, stratified by target and group
   (by target alone, or by group alone, where the finer strata have fewer than two rows): *screening* rows
   and *confirmation* rows.
2. Screen. The search runs exactly as before, on the screening rows only. It claims nothing: it only
   decides which variants are worth confirming, with 400 bootstrap draws (a noisy screen costs power, never
   error).
3. Order. The variants that held on the screening rows and are cheaper than the original are ordered by the
   cost priority (``selection.decide.recommend``'s own rule, applied again and again: costs to two
   significant figures, overlapping latency intervals level, then search order), from the most expensive
   to the cheapest. The order is a function of the screening rows and of the measured costs;
   the confirmation rows' labels and the variants' predictions on them play no part in it.
4. Confirm. In that order, each variant is tested on the confirmation rows at full level alpha: the overall
   bound and every tested group's bound, each at alpha, all above -tolerance. The first
   variant that fails stops the sequence; the kept variant is the cheapest one confirmed before the stop
   (the last confirmed), the original if none (``recommend`` picks among the original and the confirmed:
   any pick among confirmed claims keeps the error control).

Why the family-wise error is at most alpha, whatever the number of variants and chains screened: it is the
fixed-sequence principle (Maurer, Hothorn & Lehmacher 1995). Hypotheses tested in an order fixed in
advance, each at level alpha, stopping at the first that is not rejected: a false claim needs the first
true null in the order to be rejected (nothing after it is reached otherwise), which happens with
probability alpha at most. The order is fixed once the screening rows are known; the confirmation rows are
other rows, independent of them, so the argument holds given the screening, hence overall. Each variant's
hypothesis ("worse than the original by more than the tolerance, overall or in some tested group") is
rejected only when every one of its bounds clears -tolerance, each at level alpha: a level-alpha test
(intersection-union, Berger 1982): the claim is false only if one of its parts is, and that part's bound
clears the margin with probability alpha at most. No split of alpha across groups is needed for it (a
Bonferroni split halved the power to keep an equal variant with two 500-row groups, 38% -> 23%). The price:
the per-group verdicts are each at alpha, not at alpha for all groups at once.

Bootstrap draws: confirmation uses max(n_boot, 2000, ceil(20 / alpha)) draws, so every quantile used rests
on at least 20 draws of the tail and the bound moves by a small fraction of its standard error from one seed
to another.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Callable

import numpy as np

from ..evaluation.metrics import Metric
from .search import SearchConfig, compare

SCREEN_BOOT = 400  # screening draws: fast; the screen makes no error claim
MIN_BOOT = 2000  # confirmation draws, at least
TAIL_DRAWS = 20  # draws beyond every quantile used in confirmation, at least
ERROR_CONTROL = "screen-then-confirm, fixed sequence"


def screen_boot(n_boot: int) -> int:
    return min(n_boot, SCREEN_BOOT)


def confirm_boot(n_boot: int, alpha: float) -> int:
    """Draws for a confirmation: the alpha quantile rests on at least TAIL_DRAWS draws."""
    return max(n_boot, MIN_BOOT, math.ceil(TAIL_DRAWS / alpha))


def split_rows(y: np.ndarray, groups: dict[str, np.ndarray], kind: str,
               seed: int) -> tuple[np.ndarray, np.ndarray, str]:
    """Positions of the screening and confirmation halves of the evaluation rows, and what they are
    stratified by: target and groups, target, groups or nothing (the finest whose strata all have two rows)."""
    from sklearn.model_selection import train_test_split

    n = len(y)
    target = np.asarray(y) if kind == "classification" else np.digitize(y, np.quantile(y, [0.25, 0.5, 0.75]))
    member = np.column_stack([m for m in groups.values()]) if groups else np.zeros((n, 0), bool)
    strata = [("target and groups", np.column_stack([target, member])), ("target", target[:, None]),
              ("groups", member)]
    for label, key in strata[1:] if not groups else strata:
        if key.shape[1] == 0:
            continue
        _, code, counts = np.unique(key, axis=0, return_inverse=True, return_counts=True)
        if counts.min() >= 2 and len(counts) <= n // 2:
            screen, conf = train_test_split(np.arange(n), test_size=0.5, random_state=seed, stratify=code.ravel())
            return np.sort(screen), np.sort(conf), label
    screen, conf = train_test_split(np.arange(n), test_size=0.5, random_state=seed)
    return np.sort(screen), np.sort(conf), "nothing"


def cheapest_first(records: list[dict], indices: list[int], cost_priority: str, rank: dict[str, int]) -> list[int]:
    """``indices`` of ``records`` ordered cheapest first by ``selection.decide.recommend``'s own rule (its pick,
    then its pick among the rest, ...), so the sequence follows whatever "cheaper" means there (costs to two
    significant figures, latency intervals that overlap count as level, then search order)."""
    from ..selection.decide import recommend

    left, ordered = list(indices), []
    while left:
        copies = [dict(records[k], on_par=True, eligible=True) for k in left]  # recommend writes on what it sees
        chosen = recommend(copies, cost_priority, rank)
        k = next(k for k, c in zip(left, copies) if c is chosen)
        ordered.append(k)
        left.remove(k)
    return ordered


def _screening(rec: dict, rows: int, n_boot: int, higher_is_better: bool) -> dict:
    v = rec["vs_best"]
    return {"on_par": rec["on_par"], "quality_mean": rec["quality"]["mean"], "diff_mean": v["diff_mean"],
            "bound": v["ci_low"] if higher_is_better else v["ci_high"], "rows": rows, "n_boot": n_boot,
            "rejected_because": rec["rejected_because"]}


def confirm(records: list[dict], outputs_of: Callable[[int], dict], y: np.ndarray, groups: dict[str, np.ndarray],
            metric: Metric, kind: str, n_classes: int | None, cfg: SearchConfig, cost_priority: str,
            rank: dict[str, int], screening_rows: int,
            progress: Callable[[str, int, int, str], None] | None = None) -> dict:
    """Confirm the screened ``records`` (the original first; each with ``name`` and ``cost``) on the
    confirmation rows, in place: the variants tested get the confirmation rows' numbers, every record gets
    its ``screening`` summary and ``confirmation`` record, and ``on_par`` ends true only for the original and
    the variants confirmed. ``outputs_of(k)``: record k's outputs on the confirmation rows (asked only for the
    original and the variants tested). ``progress("confirm", done, total, what)``: ``what`` the variant tested.
    -> what was done, for the decision's settings."""
    tested_groups = sum(int(m.sum() >= cfg.min_group_size) for m in groups.values())
    ccfg = replace(cfg, n_boot=confirm_boot(cfg.n_boot, cfg.alpha))
    s_boot = screen_boot(cfg.n_boot)
    for rec in records:
        rec["screening"] = _screening(rec, screening_rows, s_boot, metric.higher_is_better)
        rec["evaluated_on"] = "screening"
        rec["confirmation"] = {"tested": False, "order": None, "held": None}
    original = records[0]
    ref = outputs_of(0)
    original.update(compare(metric, y, ref, ref, groups, kind, n_classes, ccfg), evaluated_on="confirmation")
    original["confirmation"]["note"] = "the reference"
    held = [k for k in range(1, len(records)) if records[k]["screening"]["on_par"]]
    ranking = cheapest_first(records, [0] + held, cost_priority, rank)
    order = ranking[:ranking.index(0)][::-1]  # cheaper than the original, the most expensive first
    for k in range(1, len(records)):
        rec = records[k]
        if not rec["screening"]["on_par"]:
            rec["rejected_because"] = f"screening: {rec['screening']['rejected_because']}"
        elif k not in order:
            rec["on_par"] = False
            rec["rejected_because"] = (f"not tested: held on the screening rows but is not cheaper than the "
                                       f"original by {cost_priority}")
    stopped_at, confirmed = None, []
    for pos, k in enumerate(order):
        rec = records[k]
        rec["confirmation"]["order"] = pos + 1
        if progress and stopped_at is None:
            progress("confirm", pos, len(order), rec["name"])
        if stopped_at is not None:
            rec["on_par"] = False
            rec["rejected_because"] = f"not tested: the fixed sequence stopped at {stopped_at}"
            continue
        rec.update(compare(metric, y, ref, outputs_of(k), groups, kind, n_classes, ccfg), evaluated_on="confirmation")
        rec["confirmation"].update(tested=True, held=rec["on_par"])
        if rec["on_par"]:
            confirmed.append(rec["name"])
        else:
            rec["rejected_because"] = f"confirmation: {rec['rejected_because']}"
            stopped_at = rec["name"]
        if progress:
            progress("confirm", pos + 1, len(order), rec["name"])
    return {"screened": len(records) - 1, "held_screening": len(held), "rows": len(y),
            "order": [records[k]["name"] for k in order],
            "confirmed": confirmed, "stopped_at": stopped_at, "n_boot_screen": s_boot, "n_boot_confirm": ccfg.n_boot,
            "tested_groups": tested_groups}


def screen_then_confirm(metric: Metric, y: np.ndarray, groups: dict[str, np.ndarray], kind: str,
                        n_classes: int | None, outputs: list[dict], costs: list[dict], cfg: SearchConfig,
                        cost_priority: str = "latency",
                        names: list[str] | None = None) -> tuple[list[dict], dict, dict]:
    """The procedure on outputs already computed (no models): ``outputs[0]`` is the original's, the others
    the variants', each on all of ``y``'s rows, with their ``costs`` (a dict with the cost priority's keys).
    Every variant is screened (the search's cheapest-first stops and chains are left out). -> (records,
    the chosen record, what confirmation did)."""
    from ..selection.decide import recommend

    screen, conf, split_by = split_rows(y, groups, kind, cfg.seed)
    names = names or ["original"] + [f"v{k}" for k in range(1, len(outputs))]

    def part(out: dict, pos: np.ndarray) -> dict:
        return {key: value[pos] for key, value in out.items()}

    scfg = replace(cfg, n_boot=screen_boot(cfg.n_boot))
    g_screen, g_conf = ({g: m[pos] for g, m in groups.items()} for pos in (screen, conf))
    ref = part(outputs[0], screen)
    records = []
    for k, (out, cost) in enumerate(zip(outputs, costs)):
        rec = compare(metric, y[screen], ref, part(out, screen), g_screen, kind, n_classes, scfg)
        records.append(dict(rec, name=names[k], cost=cost))
    rank = {r["name"]: k for k, r in enumerate(records)}
    info = confirm(records, lambda k: part(outputs[k], conf), y[conf], g_conf, metric, kind, n_classes, cfg,
                   cost_priority, rank, len(screen))
    info["split_stratified_by"] = split_by
    return records, recommend(records, cost_priority, rank), info
