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
                  _verdict(c, d["recommended"]),
                  style=style)
    console.print(t)
    for f in d.get("failed", []):
        console.print(f"[red]failed[/red] {f['name']}: {f['error']}")
    console.print(f"[bold]recommended:[/bold] {d['recommended']} — {d['reason']}")


def _verdict(c: dict, recommended: str) -> str:
    """A few words; report.md carries the whole reason."""
    why = c["rejected_because"] or ""
    if c["name"] == recommended:
        return "recommended"
    if why.startswith("group "):
        return "fails " + why.split(":")[0]
    if why.startswith(("not on par overall", "quality drops")):
        return "not on par"
    return "on par, costlier" if why.startswith("on par") else why[:40]
