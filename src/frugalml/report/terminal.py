"""The summary table printed after a run (rich)."""

from __future__ import annotations


def print_summary(decision: dict, console=None) -> None:
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    d = decision
    t = Table(title=f"frugal {d['command']}: {d['metric']} ({'higher' if d['higher_is_better'] else 'lower'} is better), "
                    f"tolerance {d['tolerance']:g}")
    for col in ("candidate", d["metric"], "vs best", "on par", "p99 ms", "native p99 ms", "size kB", "verdict"):
        t.add_column(col, justify="left" if col in ("candidate", "verdict") else "right")
    for c in d["candidates"]:
        style = "bold green" if c["name"] == d["recommended"] else ("dim" if not c["on_par"] else "")
        cost = c["cost"]
        t.add_row(c["name"], f"{c['quality']['mean']:.4f}", f"{c['vs_best']['diff_mean']:+.4f}",
                  "yes" if c["on_par"] else "no", f"{cost['latency_ms_p99']:.3g}",
                  f"{cost.get('native_latency_ms_p99', float('nan')):.3g}", f"{cost['size_bytes'] / 1e3:.3g}",
                  "recommended" if c["name"] == d["recommended"] else (c["rejected_because"] or "")[:70],
                  style=style)
    console.print(t)
    for f in d.get("failed", []):
        console.print(f"[red]failed[/red] {f['name']}: {f['error']}")
    console.print(f"[bold]recommended:[/bold] {d['recommended']} — {d['reason']}")
