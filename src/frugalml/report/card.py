"""The efficiency card: a Markdown block to paste into a model card, saying what was compared, how, the
decision, its evidence and the environment it was measured in."""

from __future__ import annotations

from .decision_sections import COSTS, by_name, cost_text, num, signed, worst_group


def efficiency_card(d: dict) -> str:
    cands = by_name(d)
    rec, best = cands[d["recommended"]], cands[d["best"]]
    st, data = d["settings"], d["data"]
    m = d["metric"]
    ref = "best candidate" if d["command"] == "select" else "original model"
    groups = ", ".join(d.get("groups") or []) or "none declared"
    if d["command"] == "select":
        compared = (f"{len(d['candidates'])} candidates ({', '.join(c['name'] for c in d['candidates'])}), "
                    f"repeated k-fold: {st['folds']} folds x {st['repeats']} repeats, seed {st['seed']}")
        test = "corrected resampled t-test (Nadeau-Bengio), Holm across groups"
    else:
        compared = (f"the model {data.get('model', '')} and {len(d['candidates']) - 1} compressed variants, on "
                    f"{st['evaluation_rows']:,} held-out rows (screened on {st['screening_rows']:,}, confirmed on "
                    f"{st['confirmation_rows']:,}), seed {st['seed']}")
        test = "paired bootstrap, screen then confirm in a fixed sequence"
    worst = worst_group(d, rec)
    costs = "; ".join(f"{COSTS[k][0]} {cost_text(k, rec['cost'].get(k))} (vs {cost_text(k, best['cost'].get(k))})"
                      for k in ("latency_ms_p99", "size_bytes", "energy_j_per_1k", "usd_per_1m", "gco2e_per_1m"))
    mach = d.get("machine", {})
    env = d.get("environment") or {}
    packages = ", ".join(f"{k} {v}" for k, v in (env.get("packages") or {}).items() if v)
    stab = d.get("stability")
    lines = [
        f"### Efficiency card: {rec['name']}",
        "",
        f"- **Task**: {d['task']} of `{data['target']}` on {data['source']} ({data['rows']:,} rows"
        + (f", sampled from {data['sampled_from']:,}" if data.get("sampled_from") else "") + "); "
        f"user groups: {groups}.",
        f"- **Compared**: {compared}.",
        f"- **How**: {m} ({'higher' if d['higher_is_better'] else 'lower'} is better); on par = shown within "
        f"{d['tolerance']:g} of the {ref} overall and without harm shown in any group ({test}, alpha "
        f"{st['alpha']}); costs measured on the deployed artifact, batch 1, {st['cost']['threads']} thread(s); "
        f"among those on par the cheapest by {st['cost_priority']}.",
        f"- **Decision**: {rec['name']} ({rec['family']}); the {ref} is {best['name']}.",
        f"- **Evidence**: {m} {num(rec['quality']['mean'])} [{num(rec['quality'].get('ci_low'))}, "
        f"{num(rec['quality'].get('ci_high'))}], {signed(rec['vs_best']['diff_mean'])} vs {best['name']} "
        f"[{signed(rec['vs_best'].get('ci_low'))}, {signed(rec['vs_best'].get('ci_high'))}]"
        + (f"; largest group change {worst[0]} {signed(worst[1]['diff_vs_best'])} (n={worst[1]['n']})" if worst else "")
        + (f"; the same decision in {100 * stab['same_recommendation']:.0f}% of {stab['draws']} resamplings"
           if stab else "") + f". Costs: {costs}.",
        f"- **Environment**: {mach.get('cpu', 'unknown CPU')}, {mach.get('cores', '?')} cores, Python "
        f"{mach.get('python', '?')} on {mach.get('platform', '?')}; frugalml {d['frugalml_version']}"
        + (f"; {packages}" if packages else "") + f"; energy {d['energy']['source']}.",
    ]
    return "\n".join(lines)
