"""report.md: the table a person reads first, the per-group view, and how everything was measured."""

from __future__ import annotations


def _f(x, digits: int = 4) -> str:
    if x is None:
        return "–"
    if isinstance(x, float) and x != x:
        return "n/a"
    return f"{x:.{digits}g}"


def _size(b: float) -> str:
    for unit, f in (("MB", 1e6), ("kB", 1e3)):
        if b >= f:
            return f"{b / f:.3g} {unit}"
    return f"{b:.0f} B"


def render_markdown(decision: dict) -> str:
    d = decision
    m = d["metric"]
    direction = "higher is better" if d["higher_is_better"] else "lower is better"
    st = d["settings"]
    lines = [
        f"# frugalml {d['command']}: {d['data']['source']}",
        "",
        f"**Recommended: `{d['recommended']}`** (best {m}: `{d['best']}`)",
        "",
        d["reason"],
        "",
        "## Candidates",
        "",
        (f"{m} ({direction}) over {st['folds']}x{st['repeats']} folds; on par = non-inferior to the best within "
         f"{d['tolerance']:g}, overall and in every tested group (corrected resampled t-test, alpha {st['alpha']}, "
         "Holm across groups)." if d["command"] == "select" else
         f"{m} ({direction}) of each variant against the original on the same {st['evaluation_rows']} held-out "
         f"rows; kept = paired bootstrap ({st['n_boot']} resamples) lower bound of the difference above "
         f"-{d['tolerance']:g} overall (alpha {st['alpha']}) and in every tested group (Bonferroni); 'worst "
         "group' and the per-group table give the difference to the original.")
        + " Costs are measured on the deployed artifact (ONNX Runtime where the export is faithful), "
        f"{st['cost']['threads']} thread(s), batch 1 unless stated.",
        "",
        f"| candidate | family | {m} [95% CI] | vs best [bound] | on par | worst group | p99 ms | native p99 ms "
        "| size | params | peak MB | rows/s (batch) | energy J/1k | $ / 1M | gCO2e / 1M | Pareto | format | why not |",
        "|" + "---|" * 18,
    ]
    for c in d["candidates"]:
        q, v, cost = c["quality"], c["vs_best"], c["cost"]
        bound = v["ci_low"] if d["higher_is_better"] else v["ci_high"]
        tested = [(g, e) for g, e in c["groups"].items() if e.get("tested")]
        worst = min(tested, key=lambda ge: (1 if d["higher_is_better"] else -1) * (ge[1]["diff_vs_best"] or 0.0),
                    default=None)
        worst_txt = f"{worst[0]} {worst[1]['diff_vs_best']:+.4f}" if worst and worst[1]["diff_vs_best"] is not None else "–"
        name = f"**{c['name']}**" if c["name"] == d["recommended"] else c["name"]
        lines.append(
            f"| {name} | {c['family']}{' (interpretable)' if c['interpretable'] else ''} | {_f(q['mean'])} "
            f"[{_f(q['ci_low'])}, {_f(q['ci_high'])}] | {v['diff_mean']:+.4f} [{bound:+.4f}] | "
            f"{'yes' if c['on_par'] else 'no'} | {worst_txt} | {_f(cost['latency_ms_p99'], 3)} | "
            f"{_f(cost.get('native_latency_ms_p99'), 3)} | {_size(cost['size_bytes'])} | {cost['params']:,} | "
            f"{_f(cost['peak_memory_mb'], 3)} | {cost['throughput_rows_per_s']:,.0f} | {_f(cost['energy_j_per_1k'], 3)} | "
            f"{_f(cost['usd_per_1m'], 3)} | {_f(cost['gco2e_per_1m'], 3)} | {'yes' if c['pareto'] else ''} | "
            f"{cost.get('format', '')} | {c['rejected_because'] or 'recommended'} |")
    groups = d["candidates"][0]["groups"]
    if groups:
        lines += ["", "## Per group", "",
                  f"Each cell: mean {m} in the group, difference to the "
                  + ("best candidate" if d["command"] == "select" else "original")
                  + f", and the verdict (ok = non-inferior within {d['tolerance']:g}; FAIL = not shown; "
                  + (f"p = Holm-adjusted p-value of 'worse by more than {d['tolerance']:g}'; "
                     if d["command"] == "select" else "bootstrap bounds at alpha / groups (Bonferroni); ")
                  + f"untested = fewer than {st['min_group_size']} rows).", "",
                  "| candidate | " + " | ".join(f"{g} (n={e['n']})" for g, e in groups.items()) + " |",
                  "|---|" + "---|" * len(groups)]
        for c in d["candidates"]:
            cells = []
            for g in groups:
                e = c["groups"][g]
                verdict = "untested" if not e.get("tested") else ("ok" if e["non_inferior"] else "FAIL")
                diff = f" ({e['diff_vs_best']:+.4f})" if e.get("diff_vs_best") is not None else ""
                p = f", p={e['p_value_holm']:.2g}" if "p_value_holm" in e else ""
                cells.append(f"{_f(e['mean'])}{diff} {verdict}{p}")
            lines.append(f"| {c['name']} | " + " | ".join(cells) + " |")
    if d.get("failed"):
        lines += ["", "## Failed candidates", ""] + [f"- {f['name']}: {f['error']}" for f in d["failed"]]
    cs = st["cost"]
    lines += [
        "", "## How this was measured", "",
        f"- Data: {d['data']['rows']} rows, {d['data']['features']} features, target `{d['data']['target']}`"
        + (f", {d['data']['dropped_rows']} rows without a target dropped" if d["data"].get("dropped_rows") else "")
        + "".join(f"; column `{c}` left out ({why})" for c, why in (d["data"].get("dropped_columns") or {}).items())
        + ".",
        (f"- Quality: repeated {'stratified ' if d['task'] == 'classification' else ''}k-fold, {st['folds']} folds "
         f"x {st['repeats']} repeats, seed {st['seed']}; the same splits for every candidate. Confidence bounds use "
         "the Nadeau-Bengio corrected variance." if d["command"] == "select" else
         f"- Quality: the data split in two (seed {st['seed']}): {st['calibration_rows']} calibration rows for "
         f"techniques that need data (distillation), {st['evaluation_rows']} evaluation rows for every comparison."),
        f"- Latency: batch-1 calls after warm-up (p50/p99 of up to {cs['latency_calls']} calls), "
        f"{cs['threads']} thread(s); 'native p99' is the scikit-learn pipeline's `.predict` on a one-row DataFrame.",
        f"- Throughput: best of 3 calls at batch {cs['batch_large']}. Peak memory: resident memory added by loading "
        "the artifact and predicting that batch, in a fresh process.",
        f"- Energy ({d['energy']['source']}): {d['energy']['method']}.",
        f"- Money: ${cs['usd_per_hour']}/h for a {cs['instance_vcpus']}-vCPU instance, charged per core-second used. "
        f"Carbon: {cs['grid_gco2e_per_kwh']} gCO2e/kWh. Both are settable (--usd-per-hour, --grid-intensity).",
        f"- Machine: {d['machine']['cpu']}, {d['machine']['cores']} cores; frugalml {d['frugalml_version']}.",
        "",
    ]
    return "\n".join(lines)
