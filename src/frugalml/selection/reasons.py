"""The reason text a decision carries, beyond select's own (``decide``): compress's verdict on its variants, and
the note an unstable selection gets."""

from __future__ import annotations

from .decide import COST_LABELS, COST_PRIORITIES, format_cost
from .stability import STABLE


def unstable_note(stable: dict | None, recommended: str) -> str:
    """The sentence added to select's reason when resampling the rows often recommends another candidate; ''
    when the decision is stable (or stability was not measured)."""
    if not stable or stable["same_recommendation"] >= STABLE:
        return ""
    others = [f"{name} {100 * share:.0f}%" for name, share in stable["recommended_in_draws"].items()
              if name != recommended]
    return (f" The decision is not stable: resampling the rows recommends {recommended} in "
            f"only {100 * stable['same_recommendation']:.0f}% of {stable['draws']} draws "
            f"({', '.join(others[:3])}); more rows would settle it.")


def compress_reason(chosen: dict, records: list[dict], metric, tolerance: float, cost_priority: str,
                     confirmed: dict | None = None) -> str:
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
