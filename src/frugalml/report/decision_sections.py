"""The sections of a select or compress report: the decision in plain words, the trade-off plots, the groups.

Everything here reads ``decision.json`` only, so an old run re-renders the same page.
"""

from __future__ import annotations

import math

from ..selection.decide import COST_PRIORITIES
from .page import Figure, Section, Table
from .plots import GREY, MARKERS, PALETTE, RECOMMENDED, figure, point_id, to_svg
from .terminal import short_verdict

DEFAULT_REQUESTS_PER_DAY = 1_000_000

# the costs a decision carries, as (key, label, unit, formatter)
COSTS = {
    "latency_ms_p99": ("p99 latency", "ms"),
    "size_bytes": ("size", "bytes"),
    "peak_memory_mb": ("peak memory", "MB"),
    "energy_j_per_1k": ("energy", "J per 1k predictions"),
    "usd_per_1m": ("money", "$ per 1M predictions"),
    "gco2e_per_1m": ("carbon", "gCO2e per 1M predictions"),
}


def num(x, digits: int = 4) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "–"
    return f"{x:.{digits}g}"


def signed(x) -> str:
    return "–" if x is None else f"{x:+.4f}"


def size(b) -> str:
    if b is None:
        return "–"
    for unit, f in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if b >= f:
            return f"{b / f:.3g} {unit}"
    return f"{b:.0f} B"


def cost_text(key: str, value) -> str:
    return size(value) if key == "size_bytes" else f"{num(value, 3)} {COSTS[key][1]}"


def _ratio(a, b) -> str:
    """How many times less ``a`` is than ``b``, in words."""
    if not a or not b or a != a or b != b:
        return ""
    r = b / a
    return f"{r:.3g}x less" if r >= 1.05 else (f"{1 / r:.3g}x more" if r <= 1 / 1.05 else "level")


def by_name(d: dict) -> dict[str, dict]:
    return {c["name"]: c for c in d["candidates"]}


# ---------------------------------------------------------------------------------------------------- decision


def decision_section(d: dict, requests_per_day: int) -> Section:
    """The decision first, in plain words: what is recommended, what was best, the rule, why, and what it saves."""
    cands = by_name(d)
    rec, best = cands[d["recommended"]], cands[d["best"]]
    m, tol = d["metric"], d["tolerance"]
    st = d["settings"]
    what = "candidate" if d["command"] == "select" else "variant"
    paras = [
        f"Recommended: {rec['name']} ({rec['family']}). " + (
            f"Best {m}: {best['name']} ({num(best['quality']['mean'])}); the recommended one scores "
            f"{num(rec['quality']['mean'])}, {signed(rec['vs_best']['diff_mean'])} against it."
            if rec is not best else f"It also has the best {m} ({num(best['quality']['mean'])}).")
        if d["command"] == "select" else
        f"Kept: {rec['name']}, against the original model ({num(best['quality']['mean'])} {m} on the same rows; "
        f"the kept one {num(rec['quality']['mean'])}, {signed(rec['vs_best']['diff_mean'])}).",
        f"The rule: a {what} is on par when its {m} is shown to be within {tol:g} of the "
        f"{'best' if d['command'] == 'select' else 'original'} overall and no user group shows harm "
        f"({'higher' if d['higher_is_better'] else 'lower'} is better, alpha {st['alpha']}); among those on par, "
        f"the cheapest by {st['cost_priority']} is recommended.",
        f"Why: {d['reason']}",
    ]
    stab = d.get("stability")
    if stab:
        paras.append(f"Stability: the same recommendation in {100 * stab['same_recommendation']:.0f}% of "
                     f"{stab['draws']} resamplings of the rows.")
    per_year = requests_per_day * 365 / 1e6
    # against the best; when the recommended one is the best, against the cheapest other one: what it would save
    # and what it would cost in quality
    other = best
    if rec is best:
        key = COST_PRIORITIES[st["cost_priority"]][0]
        pool = [c for c in d["candidates"] if c is not rec and c["family"] != "baseline" and c["cost"].get(key)]
        other = min(pool, key=lambda c: c["cost"][key], default=None)
    tables = []
    if other is not None:
        usd = (other["cost"].get("usd_per_1m") or 0) - (rec["cost"].get("usd_per_1m") or 0)
        co2 = (other["cost"].get("gco2e_per_1m") or 0) - (rec["cost"].get("gco2e_per_1m") or 0)
        energy = ((other["cost"].get("energy_j_per_1k") or 0) - (rec["cost"].get("energy_j_per_1k") or 0)) * 1e3
        if other is best:
            paras.append(
                f"What it saves against {best['name']}, at {requests_per_day:,} predictions a day "
                f"(--requests-per-day): ${usd * per_year:,.2f}, {co2 * per_year / 1e3:,.3g} kg CO2e and "
                f"{energy * per_year / 3.6e6:,.3g} kWh a year "
                f"(p99 latency {_ratio(rec['cost']['latency_ms_p99'], best['cost']['latency_ms_p99'])}, "
                f"size {_ratio(rec['cost']['size_bytes'], best['cost']['size_bytes'])}).")
            paras.append("Who pays: " + _who_pays(d, rec))
        else:
            paras.append(
                f"What it saves: nothing, as it is also the best. The cheapest other {what} by "
                f"{st['cost_priority']}, {other['name']}, would save ${-usd * per_year:,.2f} and "
                f"{-co2 * per_year / 1e3:,.3g} kg CO2e a year at {requests_per_day:,} predictions a day "
                f"(--requests-per-day), at {signed(other['vs_best']['diff_mean'])} {m}"
                + (f" ({short_verdict(other, d['recommended'])})." if not other["on_par"] else "."))
        ref = "best" if d["command"] == "select" else "original"
        cols = ([f"{other['name']} ({ref})", f"{rec['name']} (recommended)", f"recommended vs {ref}"]
                if other is best else
                [f"{rec['name']} (recommended, {ref})", f"{other['name']} (cheapest other)",
                 "cheapest other vs recommended"])
        rows = []
        for key, (label, unit) in COSTS.items():
            a, b = rec["cost"].get(key), other["cost"].get(key)
            rows.append([label, cost_text(key, b), cost_text(key, a), _ratio(a, b)] if other is best else
                        [label, cost_text(key, a), cost_text(key, b), _ratio(b, a)])
        tables.append(Table(["measure", *cols], rows,
                            caption=f"Costs measured on the deployed artifact, {st['cost']['threads']} thread(s), "
                            f"batch 1; money at ${st['cost']['usd_per_hour']}/h for {st['cost']['instance_vcpus']} "
                            f"vCPUs, carbon at {st['cost']['grid_gco2e_per_kwh']} gCO2e/kWh."))
        if other is best:
            tables.append(Table(["per year", f"{best['name']}", f"{rec['name']}", "saved"], [
                ["$", f"{best['cost'].get('usd_per_1m', 0) * per_year:,.2f}",
                 f"{rec['cost'].get('usd_per_1m', 0) * per_year:,.2f}", f"{usd * per_year:,.2f}"],
                ["kg CO2e", f"{best['cost'].get('gco2e_per_1m', 0) * per_year / 1e3:,.3g}",
                 f"{rec['cost'].get('gco2e_per_1m', 0) * per_year / 1e3:,.3g}", f"{co2 * per_year / 1e3:,.3g}"],
            ], caption=f"At {requests_per_day:,} predictions a day."))
    else:
        paras.append(f"What it saves: nothing, as it is also the best, and there is no other {what} to compare.")
    return Section("decision", "The decision", paras, tables=tables)


def worst_group(d: dict, c: dict) -> tuple[str, dict] | None:
    """The tested group where candidate ``c``'s quality moves most against the best (or the original)."""
    tested = [(g, e) for g, e in c["groups"].items() if e.get("tested") and e.get("diff_vs_best") is not None]
    sign = 1 if d["higher_is_better"] else -1
    return min(tested, key=lambda ge: sign * ge[1]["diff_vs_best"], default=None)


def _who_pays(d: dict, rec: dict) -> str:
    """Where the recommended one's quality moves most, by group: the people a saving is paid by."""
    worst = worst_group(d, rec)
    if worst is None:
        return (f"{signed(rec['vs_best']['diff_mean'])} {d['metric']} overall; no group was declared "
                "(--group), so nobody's share of it is known." if not rec["groups"] else
                f"{signed(rec['vs_best']['diff_mean'])} {d['metric']} overall; no group was large enough to test.")
    g, e = worst
    untested = [g for g, e in rec["groups"].items() if not e.get("tested")]
    return (f"{signed(rec['vs_best']['diff_mean'])} {d['metric']} overall; the largest change is in {g} "
            f"({signed(e['diff_vs_best'])}, n={e['n']}, {_verdict(e)})."
            + (f" Too small to test: {', '.join(untested)}." if untested else ""))


def _verdict(e: dict) -> str:
    if not e.get("tested"):
        return "untested"
    v = e.get("verdict") or ("non_inferior" if e.get("non_inferior") else "inconclusive")
    return {"non_inferior": "on par", "harm": "harm shown", "inconclusive": "inconclusive"}.get(v, v)


# ---------------------------------------------------------------------------------------------------- select


def _interval(e: dict) -> tuple[float, float] | None:
    """A group's (or the overall) interval of the difference: compress stores it, select its one-sided bounds."""
    if e.get("ci_low") is not None and e.get("ci_high") is not None:
        return e["ci_low"], e["ci_high"]
    if e.get("bound") is not None and e.get("harm_bound") is not None:
        return tuple(sorted((e["bound"], e["harm_bound"])))
    return None


def _style(c: dict, d: dict, k: int) -> dict:
    """One candidate's marker: its own shape and colour; grey when not on par; the recommended one ringed."""
    on = c["on_par"]
    chosen = c["name"] == d["recommended"]
    return {"marker": MARKERS[k % len(MARKERS)], "color": PALETTE[k % len(PALETTE)] if on else GREY,
            "edgecolors": "#000000" if chosen else "none", "linewidths": 2 if chosen else 0, "s": 130 if chosen else 45,
            "zorder": 4 if chosen else 3}


def frontier(points: list[tuple[float, float]], higher_is_better: bool) -> list[tuple[float, float]]:
    """The cost-quality frontier: sorted by cost, each point better than every cheaper one."""
    out, best = [], -math.inf
    s = 1 if higher_is_better else -1
    for x, y in sorted(points):
        if s * y > best:
            out.append((x, y))
            best = s * y
    return out


def quality_floor(d: dict) -> float:
    """The quality axis' far end: past the worst candidate that is not a constant baseline, so the candidates
    that matter are not squeezed into a corner by one that predicts a constant."""
    s = 1 if d["higher_is_better"] else -1
    qs = [c["quality"]["mean"] for c in d["candidates"] if c["family"] != "baseline"] or \
        [c["quality"]["mean"] for c in d["candidates"]]
    best, worst = max(s * q for q in qs), min(s * q for q in qs)
    return s * (worst - 0.08 * max(best - worst, d["tolerance"]))


def _tradeoff(ax, d: dict, key: str, fig_id: str, with_ci: bool, annotate: bool) -> None:
    cands = d["candidates"]
    best_q = by_name(d)[d["best"]]["quality"]["mean"]
    s = 1 if d["higher_is_better"] else -1
    edge = quality_floor(d)
    pts = []
    if not any((c["cost"].get(key) or 0) > 0 for c in cands):
        ax.text(0.5, 0.5, f"{COSTS[key][0]}: not measured", ha="center", va="center", transform=ax.transAxes,
                color="#555555")
    for k, c in enumerate(cands):
        x, q = c["cost"].get(key), c["quality"]
        if x is None or not x > 0:
            continue
        pts.append((x, q["mean"]))
        y, style = q["mean"], _style(c, d, k)
        if s * (y - edge) < 0:  # far worse than the rest (a constant baseline): drawn on the edge, pointing out
            y, style["marker"] = edge, "v" if s > 0 else "^"
        elif with_ci and q.get("ci_low") is not None:
            lo, hi = sorted((q["ci_low"], q["ci_high"]))
            ax.plot([x, x], [max(lo, edge) if s > 0 else lo, hi if s > 0 else min(hi, edge)], color=style["color"],
                    lw=1, zorder=2)
        ax.scatter([x], [y], gid=point_id(fig_id, c["name"]), label=c["name"], **style)
        if annotate:
            ax.annotate(c["name"], (x, y), textcoords="offset points", xytext=(6, 4), fontsize=7, color="#333333")
    f = [(x, (y if s * (y - edge) >= 0 else edge)) for x, y in frontier(pts, d["higher_is_better"])]
    if len(f) > 1:
        ax.step([p[0] for p in f], [p[1] for p in f], where="post", color="#555555", lw=1, ls="--", zorder=1,
                gid=f"{fig_id}-frontier")
    ax.axhline(best_q - s * d["tolerance"], color="#555555", lw=0.8, ls=":", gid=f"{fig_id}-tolerance")
    ax.set_xscale("log")
    if any(s * (c["quality"]["mean"] - edge) < 0 for c in cands):
        ax.annotate("(below: points off the scale, at the edge)", (0.01, 0.01), xycoords="axes fraction",
                    fontsize=6.5, color="#555555")
    ax.set_xlabel(f"{COSTS[key][0]} ({COSTS[key][1]}, log scale)")
    ax.set_ylabel(d["metric"])


def pareto_figure(d: dict, key: str) -> Figure:
    fig_id = "pareto"
    label, unit = COSTS[key]
    rec, best = by_name(d)[d["recommended"]], by_name(d)[d["best"]]
    with figure(7.2, 4.2) as (fig, ax):
        _tradeoff(ax, d, key, fig_id, with_ci=True, annotate=True)
        ax.set_title(f"{d['metric']} against {label}: the frontier dashed, the tolerance dotted, "
                     "the recommended ringed", fontsize=9)
        alt = (f"{d['metric']} against {label} for {len(d['candidates'])} candidates. The recommended "
               f"{rec['name']} ({num(rec['quality']['mean'])}, {cost_text(key, rec['cost'].get(key))}) against the "
               f"best {best['name']} ({num(best['quality']['mean'])}, {cost_text(key, best['cost'].get(key))}); "
               f"on par: {', '.join(c['name'] for c in d['candidates'] if c['on_par'])}.")
        svg = to_svg(fig, fig_id, alt)
    rows = [[c["name"], f"{num(c['quality']['mean'])} [{num(c['quality'].get('ci_low'))}, "
             f"{num(c['quality'].get('ci_high'))}]", cost_text(key, c["cost"].get(key)),
             "yes" if c["on_par"] else "no", "yes" if c.get("pareto") else "",
             short_verdict(c, d["recommended"])] for c in d["candidates"]]
    return Figure(fig_id, f"{d['metric']} against {label}", svg, alt,
                  Table(["candidate", f"{d['metric']} [CI]", label, "on par", "Pareto", "verdict"], rows))


def small_multiples(d: dict) -> Figure:
    fig_id = "costs"
    keys = ["latency_ms_p99", "size_bytes", "peak_memory_mb", "energy_j_per_1k"]
    with figure(7.2, 5.4, ncols=2, nrows=2) as (fig, axes):
        for ax, key in zip(axes.flat, keys):
            _tradeoff(ax, d, key, f"{fig_id}-{key}", with_ci=False, annotate=False)
            ax.set_title(COSTS[key][0], fontsize=9)
        fig.tight_layout()
        handles, labels = axes.flat[0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, 0), ncol=min(5, len(labels)),
                   fontsize=7, frameon=False)
        cheapest = {key: min((c for c in d["candidates"] if c["cost"].get(key)), key=lambda c: c["cost"][key],
                             default=None) for key in keys}
        alt = ("The same candidates against each cost: " + "; ".join(
            f"{COSTS[k][0]}: cheapest {c['name']} ({cost_text(k, c['cost'][k])})" for k, c in cheapest.items() if c)
            + ".")
        svg = to_svg(fig, fig_id, alt)
    rows = [[c["name"], num(c["quality"]["mean"])] + [cost_text(k, c["cost"].get(k)) for k in keys]
            for c in d["candidates"]]
    return Figure(fig_id, "Every cost", svg, alt,
                  Table(["candidate", d["metric"]] + [COSTS[k][0] for k in keys], rows))


def groups_figure(d: dict, fig_id: str = "groups") -> Figure | None:
    """Per group: each candidate's difference to the best (or the original) with its interval; harm marked,
    inconclusive hollow, untested grey."""
    groups = list(d["candidates"][0]["groups"]) if d["candidates"] else []
    if not groups:
        return None
    cands = d["candidates"]
    tol, s = d["tolerance"], (1 if d["higher_is_better"] else -1)
    ref = "the best" if d["command"] == "select" else "the original"
    ncols = min(3, len(groups))
    nrows = math.ceil(len(groups) / ncols)
    with figure(7.2, 0.6 + nrows * (0.35 + 0.22 * len(cands)), ncols=ncols, nrows=nrows) as (fig, axes):
        for k, ax in enumerate(axes.flat):
            if k >= len(groups):
                ax.axis("off")
                continue
            g = groups[k]
            for j, c in enumerate(cands):
                e = c["groups"][g]
                y = len(cands) - 1 - j
                diff = e.get("diff_vs_best")
                if diff is None:
                    continue
                v = _verdict(e)
                colour = GREY if v == "untested" else RECOMMENDED if v == "harm shown" else PALETTE[0]
                ci = _interval(e)
                if ci:
                    ax.plot(ci, [y, y], color=colour, lw=1.2)
                marker = "X" if v == "harm shown" else "o"
                ax.scatter([diff], [y], marker=marker, s=36, zorder=3, gid=point_id(f"{fig_id}-{g}", c["name"]),
                           facecolors="none" if v == "inconclusive" else colour, edgecolors=colour)
            ax.axvline(0, color="#555555", lw=0.8)
            ax.axvline(-s * tol, color="#555555", lw=0.8, ls=":")
            ax.set_yticks(range(len(cands)), [c["name"] for c in reversed(cands)] if k % ncols == 0 else [])
            n = cands[0]["groups"][g]["n"]
            ax.set_title(f"{g} (n={n})", fontsize=8)
            ax.tick_params(labelsize=7)
        fig.supxlabel(f"{d['metric']} difference to {ref} (dotted: the tolerance; X: harm shown; hollow: "
                      "inconclusive; grey: untested)", fontsize=8)
        rec = by_name(d)[d["recommended"]]
        failing = [g for g in groups if _verdict(rec["groups"][g]) in ("harm shown", "inconclusive")]
        alt = (f"{d['metric']} difference to {ref} in each of {len(groups)} groups. For the recommended "
               f"{rec['name']}: " + ", ".join(f"{g} {signed(rec['groups'][g].get('diff_vs_best'))} "
                                                f"({_verdict(rec['groups'][g])})" for g in groups) + "."
               + (f" Not shown on par for it: {', '.join(failing)}." if failing else ""))
        svg = to_svg(fig, fig_id, alt)
    rows = []
    for c in cands:
        cells = []
        for g in groups:
            e = c["groups"][g]
            ci = _interval(e)
            cells.append(f"{signed(e.get('diff_vs_best'))}" + (f" [{ci[0]:+.4f}, {ci[1]:+.4f}]" if ci else "")
                         + f" {_verdict(e)}" + (f" (~{e['rows_needed']:,} rows)" if e.get("tested") and
                                                 e.get("rows_needed") else ""))
        rows.append([c["name"]] + cells)
    return Figure(fig_id, f"Per group: the difference to {ref}", svg, alt,
                  Table(["candidate"] + [f"{g} (n={cands[0]['groups'][g]['n']})" for g in groups], rows))


def select_section(d: dict) -> Section:
    key = COST_PRIORITIES[d["settings"]["cost_priority"]][0]
    figs = [pareto_figure(d, key), small_multiples(d)]
    g = groups_figure(d)
    if g:
        figs.append(g)
    paras = [f"{len(d['candidates'])} candidates, {d['settings']['folds']} folds x {d['settings']['repeats']} "
             f"repeats (seed {d['settings']['seed']}), {d['data']['rows']:,} rows. Quality intervals are "
             f"{100 * (1 - 2 * d['settings']['alpha']):.0f}% (Nadeau-Bengio corrected). The cost on the x axis is "
             f"the one --cost-priority ranks by ({d['settings']['cost_priority']})."]
    if d.get("failed"):
        paras.append("Failed: " + "; ".join(f"{f['name']}: {f['error']}" for f in d["failed"]))
    tables = []
    if any("resolution" in c for c in d["candidates"]):
        paras += resolution_notes(d)
        tables.append(resolution_table(d))
    return Section("candidates", "Candidates: quality against cost", paras, figs, tables)


def resolution_table(d: dict) -> Table:
    """Image candidates by family and input resolution: quality, latency (decoding included), energy, and the
    bytes of one decoded image the model reads."""
    rows, channels = [], int(d["data"].get("image_channels") or 1)
    for c in sorted((c for c in d["candidates"] if "resolution" in c), key=lambda c: (c["family"], c["resolution"])):
        r, cost = c["resolution"], c["cost"]
        rows.append([c["name"], f"{r} px", num(c["quality"]["mean"]), signed(c["vs_best"]["diff_mean"]),
                     cost_text("latency_ms_p99", cost.get("latency_ms_p99")),
                     f"{num(cost.get('energy_j_per_1k'), 3)} J", size(r * r * channels)])
    return Table(["candidate", "input", d["metric"], "vs best", "p99 latency", "energy per 1k", "pixels read"], rows,
                 caption="Each image candidate at each input resolution; latency includes decoding and resizing "
                 "the encoded image, as a served image arrives.")


def resolution_notes(d: dict) -> list[str]:
    """For each family tried at several resolutions: what its lowest one costs in quality and saves in latency."""
    out = []
    families: dict[str, list[dict]] = {}
    for c in d["candidates"]:
        if "resolution" in c:
            families.setdefault(c["family"], []).append(c)
    for family, cs in families.items():
        if len(cs) < 2:
            continue
        lo, hi = min(cs, key=lambda c: c["resolution"]), max(cs, key=lambda c: c["resolution"])
        diff = lo["quality"]["mean"] - hi["quality"]["mean"]
        out.append(f"{family} at {lo['resolution']} px instead of {hi['resolution']} px: {signed(diff)} "
                   f"{d['metric']}, p99 latency "
                   f"{_ratio(lo['cost'].get('latency_ms_p99'), hi['cost'].get('latency_ms_p99'))}, energy "
                   f"{_ratio(lo['cost'].get('energy_j_per_1k'), hi['cost'].get('energy_j_per_1k'))}, "
                   f"{(hi['resolution'] / lo['resolution']) ** 2:.3g}x fewer pixels per image.")
    return out


# ---------------------------------------------------------------------------------------------------- compress


def compress_figure(d: dict) -> Figure:
    fig_id = "variants"
    cands = d["candidates"]
    names = {c["name"]: c for c in cands}
    with figure(7.2, 3.6, ncols=2) as (fig, axes):
        for ax, key in zip(axes.flat, ["size_bytes", "latency_ms_p99"]):
            # a chain: an arrow from the variant it compressed again to the result
            for c in cands:
                chain = c.get("technique", {}).get("chain") or []
                if len(chain) > 1:
                    parent = next((p for p in cands if (p.get("technique", {}).get("chain") or []) == chain[:-1]),
                                  None)
                    if parent and parent["cost"].get(key) and c["cost"].get(key):
                        ax.annotate("", (c["cost"][key], c["quality"]["mean"]),
                                    (parent["cost"][key], parent["quality"]["mean"]),
                                    arrowprops={"arrowstyle": "->", "color": "#777777", "lw": 0.8})
            _tradeoff(ax, d, key, f"{fig_id}-{key}", with_ci=True, annotate=False)
            ax.set_title(COSTS[key][0], fontsize=9)
        fig.tight_layout()
        handles, labels = axes.flat[0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, 0), ncol=3, fontsize=6.5,
                   frameon=False)
        kept = names[d["recommended"]]
        held = [c["name"] for c in cands if c["on_par"] and c["name"] != "original"]
        alt = (f"{len(cands)} variants on the size and latency against {d['metric']} planes. Kept: {kept['name']} "
               f"({num(kept['quality']['mean'])}, {size(kept['cost']['size_bytes'])}, "
               f"{num(kept['cost']['latency_ms_p99'], 3)} ms p99). Held the guard: {', '.join(held) or 'none'}.")
        svg = to_svg(fig, fig_id, alt)
    rows = []
    for c in cands:
        vs = c["vs_best"]
        change = vs.get("flip_rate", vs.get("mean_abs_change"))
        chain = " -> ".join(t["name"] for t in (c.get("technique", {}).get("chain") or [])) or "none"
        rows.append([c["name"], chain, num(c["quality"]["mean"]), signed(vs["diff_mean"]),
                     "kept" if c["name"] == d["recommended"] else ("held" if c["on_par"] else "rejected"),
                     c.get("evaluated_on", ""), size(c["cost"]["size_bytes"]), num(c["cost"]["latency_ms_p99"], 3),
                     "–" if change is None else (f"{100 * change:.1f}%" if "flip_rate" in vs else num(change, 3)),
                     c.get("rejected_because") or ""])
    change_label = "flipped" if d["task"] == "classification" else "mean change"
    return Figure(fig_id, "Every variant tried: size and latency against quality", svg, alt,
                  Table(["variant", "chain", d["metric"], "vs original", "guard", "judged on", "size", "p99 ms",
                         change_label, "why not"], rows))


def flips_table(d: dict) -> Table | None:
    groups = list(d["candidates"][0]["groups"]) if d["candidates"] else []
    if not groups or d["task"] != "classification":
        return None
    rows = [[c["name"]] + [("–" if c["groups"][g].get("flip_rate") is None else
                            f"{100 * c['groups'][g]['flip_rate']:.1f}%") for g in groups] for c in d["candidates"]]
    return Table(["variant"] + groups, rows, caption="Predictions flipped against the original, per group: who "
                 "sees a different answer after compression.")


def compress_section(d: dict) -> Section:
    st = d["settings"]
    paras = [f"Every variant was judged against the original on the same rows: screened on {st['screening_rows']:,},"
             f" then what held was confirmed on the other {st['confirmation_rows']:,} rows, most expensive first, "
             f"stopping at the first that failed ({st.get('error_control', '')})."]
    figs = [compress_figure(d)]
    g = groups_figure(d, "variant-groups")
    if g:
        figs.append(g)
    flips = flips_table(d)
    return Section("variants", "Variants: what compression did", paras, figs, [flips] if flips else [])
