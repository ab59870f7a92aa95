"""The summary table printed after a run (rich)."""

from __future__ import annotations


def print_summary(decision: dict, console=None) -> None:
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    if not console.is_terminal:
        console.width = max(console.width, 120)  # a pipe or a log file: don't squeeze the table to 80 columns
    d = decision
    t = Table(title=f"frugal {d['command']}: {d['metric']} ({'higher' if d['higher_is_better'] else 'lower'} is better), "
                    f"tolerance {d['tolerance']:g}")
    for col in ("candidate", d["metric"], "vs best", "on par", "p99 ms", "native p99 ms", "size kB", "verdict"):
        t.add_column(col, justify="left" if col in ("candidate", "verdict") else "right",
                     no_wrap=col == "candidate")
    for c in d["candidates"]:
        style = "bold green" if c["name"] == d["recommended"] else ("dim" if not c["on_par"] else "")
        cost = c["cost"]
        t.add_row(c["name"], f"{c['quality']['mean']:.4f}", f"{c['vs_best']['diff_mean']:+.4f}",
                  "yes" if c["on_par"] else "no", f"{cost['latency_ms_p99']:.3g}",
                  f"{cost.get('native_latency_ms_p99', float('nan')):.3g}", f"{cost['size_bytes'] / 1e3:,.1f}",
                  short_verdict(c, d["recommended"]),
                  style=style)
    console.print(t)
    for f in d.get("failed", []):
        console.print(f"[red]failed[/red] {f['name']}: {f['error']}")
    console.print(f"[bold]recommended:[/bold] {d['recommended']} — {d['reason']}")
    st = d.get("stability")
    if st:
        console.print(f"[bold]stability:[/bold] the same recommendation in {100 * st['same_recommendation']:.0f}% of "
                      f"{st['draws']} resamplings of the rows")


def short_verdict(c: dict, recommended: str) -> str:
    """A few words; report.md carries the whole reason."""
    why = c["rejected_because"] or ""
    if c["name"] == recommended:
        return "recommended"
    if why.startswith("group "):
        return ("harms " if "harm shown" in why else "fails ") + why.split(":")[0]
    if why.startswith("a constant answer"):
        return "on par, constant answer"
    if why.startswith(("not on par overall", "quality drops")):
        return "not on par"
    return "on par, costlier" if why.startswith("on par") else why[:40]


def print_lm_bench(r: dict, console=None) -> None:
    """frugal bench-lm: speed, then quality per slice."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    if not console.is_terminal:
        console.width = max(console.width, 120)

    def f(x, spec=".1f"):
        return "-" if x is None or x != x else format(x, spec)

    t = Table(title=f"frugal bench-lm {r['model']} ({r['label']}), {r['threads']} threads")
    for col in ("measure", "value", "note"):
        t.add_column(col, justify="right" if col == "value" else "left")
    t.add_row("decode tokens/s (batch 1)", f(r["decode_tokens_per_s"]),
              f"{f(r['roofline_fraction'], '.0%')} of the roofline ({f(r['roofline_tokens_per_s'])} tokens/s: "
              f"{r['weight_bytes_per_token'] / 1e6:.3g} MB per token at {f(r['bandwidth_gb_s'])} GB/s)")
    t.add_row("prefill tokens/s", f(r["prefill_tokens_per_s"]), f"{r['prompt_tokens']} prompt tokens, {r['prompts']} prompts")
    t.add_row("time to first token ms p50 / p99", f"{f(r['ttft_ms'])} / {f(r.get('ttft_ms_p99'))}", "")
    t.add_row("time per output token ms p50 / p99", f"{f(r['tpot_ms_p50'])} / {f(r['tpot_ms_p99'])}", "")
    t.add_row("end-to-end tokens/s", f(r["end_to_end_tokens_per_s"]), f"{r['generated_tokens']} tokens generated")
    if "acceptance_rate" in r:
        t.add_row("speculative acceptance", f(r["acceptance_rate"], ".2f"), "guessed tokens the model kept")
    if "batched" in r:
        b = r["batched"]
        vs, vs_decode = "not speculating, unlike batch 1", "not speculating"  # no like-for-like batch-1 rate
        if b["ratio_to_batch1"] is not None:
            vs, vs_decode = f"{f(b['ratio_to_batch1'])}x batch 1", f"{f(b['decode_ratio_to_batch1'])}x batch-1 decode"
        t.add_row(f"total tokens/s, {b['batch']} concurrent", f(b["total_tokens_per_s"]),
                  f"{vs}; {b['requests']} requests, continuous batching, "
                  f"{f(b['prefill_share'], '.0%')} of the time in prefills")
        t.add_row(f"decode tokens/s, {b['batch']} concurrent", f(b["decode_tokens_per_s"]),
                  f"{vs_decode}; {f(b['mean_running'])} running on average")
    if "baseline" in r:
        b = r["baseline"]
        t.add_row(b["name"] + " tokens/s", f(b["end_to_end_tokens_per_s"]),
                  f"frugalml {b['ratio']:.2f}x; identical greedy tokens: {b['identical_greedy_tokens']}")
    t.add_row("peak memory MB", f(r["peak_memory_mb"], ".0f"), "resident, while generating")
    if r.get("compile_s") is not None:
        t.add_row("compile s", f(r["compile_s"]), "once, before the first request")
    console.print(t)
    q = r.get("quality")
    if not q:
        return
    if "slices" not in q:
        console.print(f"perplexity {q['perplexity_reference']:.2f} on {q['perplexity_text_tokens']} held-out tokens "
                      f"({q['perplexity_text_source']}); nothing optimised to compare")
        return
    t = Table(title="quality against the unoptimised model (float32, plain decoding)")
    cols = ["slice", "prompts", "positions", "top-1 agreement", "KL mean", "KL max"]
    with_acc = "acceptance_rate_mean" in q["overall"]
    if with_acc:
        cols.append("acceptance")
    for col in cols:
        t.add_column(col, justify="left" if col == "slice" else "right")
    for name, s in [*q["slices"].items(), ("overall", q["overall"])]:
        row = [name, str(s["prompts"]), str(s["positions"]), f(s["top1_agreement_fraction"], ".3f"),
               f(s["kl_mean_nats"], ".4f"), f(s["kl_max_nats"], ".3f")]
        if with_acc:
            row.append(f(s["acceptance_rate_mean"], ".2f"))
        t.add_row(*row, style="bold" if name == "overall" else "")
    console.print(t)
    console.print(f"perplexity {q['perplexity_candidate']:.2f} vs {q['perplexity_reference']:.2f} unoptimised "
                  f"(x{q['perplexity_ratio']:.3f}) on {q['perplexity_text_tokens']} held-out tokens "
                  f"({q['perplexity_text_source']})")
