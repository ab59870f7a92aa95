"""``frugal bench``'s terminal output: the counts and rates, a latency table, the generator's own overhead, the
Server scenario's LoadGen-style VALID/INVALID block, and the sweep's steps."""

from __future__ import annotations

ROWS = {  # metric key -> label, in the order shown
    "predictor": [("e2el", "latency")],
    "language_model": [("ttft", "TTFT"), ("ttft_content", "TTFT text"), ("tpot", "TPOT"), ("itl", "ITL"),
                       ("e2el", "E2EL")],
}


_CI = "p99 95% CI: distribution-free, from order statistics (- : too few requests to bound)"
_CAPTION = {
    "predictor": f"send -> answer read. {_CI}",
    "language_model": "vLLM's definitions: TTFT to the first chunk with choices (TTFT text: to the first "
                      "non-empty text), TPOT = (E2EL - TTFT)/(tokens - 1), ITL between chunks, E2EL to the last "
                      f"chunk. {_CI}",
}


def print_bench(result: dict, console) -> None:
    where = result["url"] + (" (served here for the run)" if result["server"] == "in-process" else "")
    console.print(f"[bold]frugal bench[/bold] {result['target'] or ''} {result['kind'].replace('_', ' ')} "
                  f"{result['model'] or ''} at {where}: {result['scenario']} scenario, {result['endpoint']}")
    if "sweep" in result:
        _print_sweep(result["sweep"], console)
    if result["result"] is not None:
        print_run(result["result"], result["kind"], console)
    if result.get("file"):
        console.print(f"written: {result['file']}")
    if result.get("report") or result.get("report_error"):
        console.print(f"report: {result['report']}" if result.get("report") else
                      f"no report: {result['report_error']}")


def print_run(r: dict, kind: str, console) -> None:
    from rich.table import Table

    console.print(f"requests: {r['sent']} sent, {r['completed']} completed, {r['failed']} failed, "
                  f"{r['rejected']} rejected (429/503) in {r['duration']:.2f} s")
    rate = f"throughput: {r['request_throughput']:.2f} requests/s"
    if kind == "predictor":
        rate += f" ({r['rows_per_s']:.1f} rows/s)"
    else:
        rate += (f", {r['output_throughput']:.1f} output tokens/s, {r['total_token_throughput']:.1f} total "
                 f"tokens/s ({r['total_input_tokens']} in, {r['total_output_tokens']} out)")
    if r.get("request_goodput") is not None:
        rate += f"; goodput {r['request_goodput']:.2f} requests/s"
    console.print(rate)
    t = Table(title="latency, ms", caption=_CAPTION[kind])
    for col in ("metric", "n", "mean", "median", "p90", "p99", "p99 95% CI", "max"):
        t.add_column(col, justify="left" if col == "metric" else "right")
    for key, label in ROWS[kind]:
        lo, hi = r[f"p99_{key}_ms_ci95"]
        t.add_row(label, str(r[f"n_{key}"]), *(_ms(r.get(f"{s}_{key}_ms")) for s in ("mean", "median", "p90", "p99")),
                  f"[{_ms(lo)}, {_ms(hi)}]", _ms(r.get(f"max_{key}_ms")))
    console.print(t)
    g = r["generator"]
    line = (f"generator: send lag p50 {_ms(g['send_lag_ms_p50'])} ms, p99 {_ms(g['send_lag_ms_p99'])} ms; "
            f"{100 * g['cpu_share']:.0f} % of a core; at most {g['max_in_flight']} in flight")
    if "client_queue_ms_mean" in g:
        line += f"; client queue mean {_ms(g['client_queue_ms_mean'])} ms, p99 {_ms(g['client_queue_ms_p99'])} ms"
    console.print(line)
    if "validity" in r:
        _print_validity(r, console)
    if r["errors"]:
        console.print("errors: " + "; ".join(f"{e['count']} x {e['message']}" for e in r["errors"]))
    for w in r["warnings"]:
        console.print(f"[yellow]warning:[/yellow] {w}")


def _print_validity(r: dict, console) -> None:
    v = r["validity"]
    rule = "=" * 56
    lines = [rule, "Server scenario (MLPerf LoadGen rules)", rule,
             f"Target QPS         : {r['target_qps']:g}",
             f"Scheduled QPS      : {r['scheduled_qps']:.2f} ({r['sent']} arrivals over {r['window_s']:.1f} s)",
             f"Completed QPS      : {r['achieved_qps']:.2f}",
             f"Result is          : {'VALID' if v['valid'] else 'INVALID'}"]
    lines += [f"  {'[ok]  ' if c['ok'] else '[FAIL]'} {c['rule']}: {c['detail']}" for c in v["checks"]]
    console.print("\n".join(lines), highlight=False, markup=False)


def _print_sweep(s: dict, console) -> None:
    from rich.table import Table

    t = Table(title=f"sweep: the rate doubles from {s['start_qps']:g} qps until a run fails, then is bisected")
    for col in ("qps", "completed/s", "p99 latency ms", "p99 TTFT ms", "p99 TPOT ms", "errors", "result"):
        t.add_column(col, justify="right")
    for step in s["steps"]:
        r = step["result"]
        verdict = "VALID" if step["passed"] else "INVALID: " + "; ".join(r["validity"]["reasons"])
        t.add_row(f"{step['qps']:.2f}", f"{r['achieved_qps']:.2f}", _ms(r.get("p99_e2el_ms")),
                  _ms(r.get("p99_ttft_ms")), _ms(r.get("p99_tpot_ms")), str(r["failed"] + r["rejected"]), verdict)
    console.print(t)
    if s["peak_qps"] is None:
        console.print(f"[bold]no rate met the objective[/bold]: even {s['start_qps']:g} qps failed; start lower "
                      "with --qps (and lengthen --duration-s so the run still holds --min-queries)")
    else:
        console.print(f"[bold]peak: {s['peak_qps']:.2f} qps[/bold] met every rule; goodput there "
                      f"{s['goodput']:.2f} requests/s")


def _ms(x) -> str:
    return "-" if x is None else f"{x:.2f}"
