"""``frugal report RUN_DIR``: read what a run directory holds and write its report.html and report.md.

A run directory may hold ``decision.json`` (select, compress), ``bench.json`` (frugal bench) and
``bench_lm.json`` (frugal bench-lm, one result per engine option); the report shows whatever is there. Both
reports are written to temporary names and renamed, so a killed render never leaves half a page.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..errors import DataError
from ..version import __version__
from .card import efficiency_card
from .decision_sections import (DEFAULT_REQUESTS_PER_DAY, compress_section, decision_section, num, select_section)
from .markdown import how_measured, render_markdown
from .page import Section, markdown_table, section_markdown

DECISION, BENCH, BENCH_LM = "decision.json", "bench.json", "bench_lm.json"
HTML, MARKDOWN, CARD = "report.html", "report.md", "efficiency_card.md"
# what a decision must hold for this version to draw it; a run written before these existed is refused
NEEDED = {"command": (), "metric": (), "recommended": (), "best": (), "tolerance": (), "higher_is_better": (),
          "candidates": (), "settings": ("alpha", "cost_priority", "seed", "cost"), "data": ("source", "rows"),
          "machine": (), "energy": (), "frugalml_version": ()}
CANDIDATE_NEEDS = ("name", "family", "quality", "vs_best", "cost", "groups", "on_par")


@dataclass
class Run:
    path: Path
    decision: dict | None = None
    bench: dict | None = None
    bench_lm: list[dict] | None = None


def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}") from None
    except json.JSONDecodeError as exc:
        raise DataError(f"{path} is not valid JSON (line {exc.lineno}): is the run complete?") from None


def check_decision(d, path: Path) -> None:
    """Refuse, in one line, a decision this version cannot draw: a file from an older frugalml or another tool."""
    if not isinstance(d, dict) or d.get("command") not in ("select", "compress"):
        raise DataError(f"{path} is not a frugalml select or compress decision")
    missing = [k for k, sub in NEEDED.items() if k not in d] + [
        f"{k}.{s}" for k, sub in NEEDED.items() if isinstance(d.get(k), dict) for s in sub if s not in d[k]]
    cands = d.get("candidates") if isinstance(d.get("candidates"), list) else []
    missing += sorted({f"candidates[].{k}" for c in cands for k in CANDIDATE_NEEDS
                       if not isinstance(c, dict) or k not in c})
    if not missing and not any(c["name"] == d["recommended"] for c in cands):
        missing = [f"the recommended candidate {d['recommended']!r}"]
    if missing:
        raise DataError(f"{path} was written by an older or another format (frugalml "
                        f"{d.get('frugalml_version', 'unknown')}; missing {', '.join(missing[:4])}): re-run the "
                        f"command that made it with frugalml {__version__}")


def read_run(path: str | os.PathLike) -> Run:
    path = Path(path)
    if not path.is_dir():
        raise DataError(f"{path} is not a folder: give a run directory (the --out of select, compress, bench or "
                        "bench-lm)")
    run = Run(path)
    if (path / DECISION).exists():
        run.decision = _read_json(path / DECISION)
        check_decision(run.decision, path / DECISION)
    if (path / BENCH).exists():
        run.bench = _read_json(path / BENCH)
        if not isinstance(run.bench, dict) or "scenario" not in run.bench:
            raise DataError(f"{path / BENCH} is not a frugal bench result")
    if (path / BENCH_LM).exists():
        data = _read_json(path / BENCH_LM)
        results = data.get("results") if isinstance(data, dict) else None
        if not isinstance(results, list) or not all(isinstance(r, dict) and "decode_tokens_per_s" in r
                                                    for r in results):
            raise DataError(f"{path / BENCH_LM} is not a frugal bench-lm result")
        run.bench_lm = results
    if run.decision is None and run.bench is None and run.bench_lm is None:
        raise DataError(f"{path} is not a run directory: it holds none of {DECISION}, {BENCH}, {BENCH_LM}")
    return run


def _requests_per_day(run: Run, override: int | None) -> int:
    if override is not None:
        if override < 1:
            raise DataError(f"--requests-per-day must be at least 1, not {override}")
        return override
    return int(((run.decision or {}).get("settings") or {}).get("requests_per_day") or DEFAULT_REQUESTS_PER_DAY)


def sections(run: Run, requests_per_day: int) -> list[Section]:
    out = []
    d = run.decision
    if d is not None:
        out.append(decision_section(d, requests_per_day))
        out.append(select_section(d) if d["command"] == "select" else compress_section(d))
    if run.bench_lm:
        from .lm_section import lm_section

        out.append(lm_section(run.bench_lm))
    if run.bench:
        from .serving_section import serving_section

        out.append(serving_section(run.bench))
    if d is not None:
        out.append(Section("measured", "How this was measured", how_measured(d)))
        out.append(Section("card", "Efficiency card", ["Markdown to paste into a model card."],
                           card=efficiency_card(d)))
    return out


def _title(run: Run) -> tuple[str, str]:
    d = run.decision
    if d is not None:
        return (f"frugal {d['command']}: {d['data']['source']}",
                f"{d['metric']}, tolerance {d['tolerance']:g}, {d['data']['rows']:,} rows; recommended "
                f"{d['recommended']}")
    if run.bench_lm:
        r = run.bench_lm[0]
        return (f"frugal bench-lm: {r['model']}", ", ".join(f"{x['label']} {num(x['decode_tokens_per_s'], 3)} "
                                                             "tokens/s" for x in run.bench_lm))
    b = run.bench
    return f"frugal bench: {b.get('target') or b.get('url', '')}", f"{b['scenario']} scenario"


def render(run: Run, requests_per_day: int | None = None) -> tuple[str, str]:
    """(report.html, report.md) of a run."""
    import jinja2

    per_day = _requests_per_day(run, requests_per_day)
    secs = sections(run, per_day)
    title, subtitle = _title(run)
    env = jinja2.Environment(loader=jinja2.PackageLoader("frugalml.report", "templates"),
                             autoescape=True, trim_blocks=True, lstrip_blocks=True, undefined=jinja2.StrictUndefined)
    sources = ", ".join(name for name, v in ((DECISION, run.decision), (BENCH, run.bench), (BENCH_LM, run.bench_lm))
                        if v is not None)
    html = env.get_template("report.html.j2").render(title=title, subtitle=subtitle, sections=secs,
                                                    version=__version__, sources=sources)
    by_id = {s.id: s for s in secs}
    # report.md's own tables carry the candidates, groups and measurements; the rest comes from the sections
    md_extra = [section_markdown(s) if s.id not in ("candidates", "variants") else
                "\n".join(line for t in s.tables for line in ("", *markdown_table(t), ""))
                for s in secs if s.id not in ("decision", "measured")]
    if run.decision is not None:
        dec = by_id["decision"]
        savings = [p for p in dec.paragraphs if p.startswith(("What it saves", "Who pays"))]
        md = render_markdown(run.decision, after_reason=[*(x for p in savings for x in (p, "")), *(
            line for t in dec.tables for line in (*markdown_table(t), ""))], extra=md_extra)
    else:
        md = "\n".join([f"# {title}", "", subtitle, "", *md_extra])
    return html, md


def atomic_write(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file in the same folder and a rename."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_reports(path: str | os.PathLike, requests_per_day: int | None = None) -> Path:
    """(Re)write report.html, report.md and (for a decision) efficiency_card.md of the run directory ``path``;
    -> the path of report.html."""
    run = read_run(path)
    html, md = render(run, requests_per_day)
    if run.decision is not None:
        atomic_write(run.path / CARD, efficiency_card(run.decision) + "\n")
    atomic_write(run.path / MARKDOWN, md)
    atomic_write(run.path / HTML, html)
    return run.path / HTML


def save_bench_lm(folder: str | os.PathLike, result: dict) -> Path:
    """Add a bench-lm result to ``folder``'s bench_lm.json (replacing one of the same model and engine option),
    so several engine options of a model are compared on one page; -> the folder."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise DataError(f"--out {folder} is a file; give a folder")
    folder.mkdir(parents=True, exist_ok=True)
    results = []
    if (folder / BENCH_LM).exists():
        try:
            results = read_run(folder).bench_lm or []
        except DataError as exc:
            raise DataError(f"{exc}; choose another --out") from None
    results = [r for r in results if (r["model"], r["label"]) != (result["model"], result["label"])] + [result]
    atomic_write(folder / BENCH_LM, json.dumps({"results": results}, indent=2))
    return folder
