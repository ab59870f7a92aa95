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


def render_markdown(decision: dict, after_reason: list[str] = (), extra: list[str] = ()) -> str:
    """report.md: ``after_reason``, Markdown lines placed under the decision's reason (what it saves, who pays);
    ``extra``, Markdown sections appended (the efficiency card, language-model and serving results)."""
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
        *after_reason,
        *_stability(d),
        "## Candidates",
        "",
        (f"{m} ({direction}) over {st['folds']}x{st['repeats']} folds; on par = non-inferior to the best within "
         f"{d['tolerance']:g} overall (corrected resampled t-test, alpha {st['alpha']}), and no tested group where "
         "harm is shown against a candidate on par overall"
         + (", and non-inferiority shown in every tested group (--strict-groups, Holm across groups)."
            if st.get("strict_groups") else "; a group too small to tell is reported inconclusive, with the rows "
            "that would tell (docs/statistics.md).")
         + ("" if st.get("allow_baseline") else " The constant baseline is never recommended (--allow-baseline).")
         if d["command"] == "select" else
         f"{m} ({direction}) of each variant against the original on the same held-out rows: screened on "
         f"{st.get('screening_rows', st['evaluation_rows'])}, then the variants that held confirmed on the other "
         f"{st.get('confirmation_rows', 0)} rows, most expensive first, stopping at the first that fails; kept = "
         f"the cheapest confirmed, its paired bootstrap ({st.get('n_boot_confirm', st['n_boot'])} resamples) lower "
         f"bound of the difference above -{d['tolerance']:g} overall and in every tested group, each at alpha "
         f"{st['alpha']} (docs/statistics.md); 'worst group' and the per-group table give the difference to the "
         "original, on the rows each variant was last judged on.")
        + " Costs are measured on the deployed artifact (ONNX Runtime where the export is faithful), "
        f"{st['cost']['threads']} thread(s), batch 1 unless stated.",
        "",
        f"| candidate | family | {m} [{100 * (1 - 2 * st['alpha']):.0f}% CI] | vs best [bound] | on par | worst group | p99 ms | native p99 ms "
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
                  + f", and the verdict (on par = non-inferiority within {d['tolerance']:g} shown; HARM = worse "
                  f"than the tolerance, shown; inconclusive = too few rows to tell, with about how many rows in the "
                  "group would; "
                  + (f"p = Holm-adjusted p-value of 'worse than the best by more than {d['tolerance']:g}'; "
                     if d["command"] == "select" else "bootstrap bounds at alpha; ")
                  + f"untested = fewer than {st['min_group_size']} rows).", "",
                  "| candidate | " + " | ".join(f"{g} (n={e['n']})" for g, e in groups.items()) + " |",
                  "|---|" + "---|" * len(groups)]
        for c in d["candidates"]:
            cells = []
            for g in groups:
                e = c["groups"][g]
                verdict = _group_verdict(e)
                diff = f" ({e['diff_vs_best']:+.4f})" if e.get("diff_vs_best") is not None else ""
                p = f", p={e['p_value_holm']:.2g}" if "p_value_holm" in e else ""
                cells.append(f"{_f(e['mean'])}{diff} {verdict}{p}")
            lines.append(f"| {c['name']} | " + " | ".join(cells) + " |")
    if d.get("failed"):
        lines += ["", "## Failed candidates", ""] + [f"- {f['name']}: {f['error']}" for f in d["failed"]]
    if st.get("metric_choice") and d["command"] == "select":
        lines += ["", f"Metric: {m}, {st['metric_choice']}."]
    lines += ["", "## How this was measured", "", *(f"- {b}" for b in how_measured(d)), "", *extra]
    return "\n".join(lines)


def _group_verdict(e: dict) -> str:
    if not e.get("tested"):
        return "untested"
    verdict = e.get("verdict") or ("non_inferior" if e["non_inferior"] else "inconclusive")
    if verdict == "harm":
        vs = f" vs {e['harm_vs']['name']} ({e['harm_vs']['diff']:+.4f})" if e.get("harm_vs") else ""
        return f"HARM{vs}"
    if verdict == "inconclusive":
        return f"inconclusive (~{e['rows_needed']:,} rows)" if e.get("rows_needed") else "inconclusive"
    return "on par"


def _stability(d: dict) -> list[str]:
    st = d.get("stability")
    if not st:
        return []
    others = ", ".join(f"`{name}` {100 * share:.0f}%" for name, share in st["recommended_in_draws"].items()
                       if name != d["recommended"])
    return [f"Stability: `{d['recommended']}` is recommended in {100 * st['same_recommendation']:.0f}% of "
            f"{st['draws']} resamplings of the rows" + (f" (otherwise: {others})" if others else "")
            + " (Poisson bootstrap over the stored out-of-fold predictions, no refit).", ""]


def how_measured(d: dict) -> list[str]:
    """How every number of a select or compress run was measured: one sentence per kind of number."""
    st, cs = d["settings"], d["settings"]["cost"]
    return [
        f"Data: {d['data']['rows']} rows, {d['data']['features']} features, target `{d['data']['target']}`"
        + (f", a sample (--sample, stratified by class) of the {d['data']['sampled_from']} rows with a target; the "
           "deployed model is fitted on the sample too" if d["data"].get("sampled_from") else "")
        + (", read lazily from a Parquet dataset (each fit reads its fold's rows)"
           if d["data"].get("read") == "lazily" else "")
        + (f", {d['data']['dropped_rows']} rows without a target dropped" if d["data"].get("dropped_rows") else "")
        + "".join(f"; column `{c}` left out ({why})" for c, why in (d["data"].get("dropped_columns") or {}).items())
        + ".",
        (f"Quality: repeated {'stratified ' if d['task'] == 'classification' else ''}k-fold, {st['folds']} folds "
         f"x {st['repeats']} repeats, seed {st['seed']}; the same splits for every candidate. Confidence bounds use "
         "the Nadeau-Bengio corrected variance." if d["command"] == "select" else
         f"Quality: the data split in two (seed {st['seed']}): {st['calibration_rows']} calibration rows for "
         f"techniques that need data (distillation), {st['evaluation_rows']} evaluation rows for every comparison."),
        f"Latency: batch-1 calls after warm-up, timed until the p99's 95% interval (order statistics) is within "
        f"{100 * cs.get('latency_precision', 0.05):.0g}% of it, or {cs['latency_calls']:,} calls, or "
        f"{cs['time_budget_s']:g} s (at least 50 calls); latencies whose intervals overlap count as level; "
        f"{cs['threads']} thread(s); 'native p99' is the scikit-learn pipeline's `.predict` on a one-row DataFrame.",
        f"Throughput: best of up to 3 calls at batch {cs['batch_large']} (fewer rows for a model too slow for "
        "that). Peak memory: resident memory added by loading the artifact and predicting that batch, in a process "
        "forked for each model from one probe process.",
        f"Energy ({d['energy']['source']}): {d['energy']['method']}.",
        f"Money: ${cs['usd_per_hour']}/h for a {cs['instance_vcpus']}-vCPU instance, charged per core-second used. "
        f"Carbon: {cs['grid_gco2e_per_kwh']} gCO2e/kWh. Both are settable (--usd-per-hour, --grid-intensity).",
        f"Machine: {d['machine']['cpu']}, {d['machine']['cores']} cores; frugalml {d['frugalml_version']}.",
    ]
