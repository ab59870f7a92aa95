"""report.html and report.md of real select and compress runs: the decision first, a point for every candidate in
every plot, the group view, the same facts in the Markdown, re-rendering, and bad run directories refused."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest

import frugalml
from conftest import group_harm_data
from frugalml.evaluation import CostConfig
from frugalml.report.card import efficiency_card
from frugalml.report.decision_sections import frontier
from frugalml.report.plots import point_id

FRUGAL = Path(sys.executable).with_name("frugal")
COST = CostConfig(latency_calls=50, time_budget_s=0.02, batch_large=100, memory_probe=False)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A select run with a group where a linear model fails, and a compress run of its recommendation."""
    root = tmp_path_factory.mktemp("report")
    data = root / "harm.csv"
    group_harm_data(n=1500).to_csv(data, index=False)
    sel = frugalml.select(str(data), "y", groups=["g"], candidates=["dummy", "linear", "decision_tree", "random_forest"],
                          folds=4, repeats=1, stability_draws=20, out=root / "select", cost=COST,
                          requests_per_day=2_000_000)
    comp = frugalml.compress(root / "select", str(data), "y", groups=["g"], out=root / "compress", cost=COST,
                             n_boot=2000, requests_per_day=50_000_000)
    return {"data": data, "select": sel, "compress": comp}


class Tables(HTMLParser):
    """Every <table> of a page as rows of cell texts, keyed by the table's id; and every element id."""

    def __init__(self):
        super().__init__()
        self.tables, self.ids, self._t, self._row, self._cell = {}, set(), None, None, None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if a.get("id"):
            self.ids.add(a["id"])
        if tag == "table":
            self._t = self.tables.setdefault(a.get("id"), [])
        elif tag == "tr" and self._t is not None:
            self._row = []
        elif tag in ("td", "th") and self._row is not None:
            self._cell = ""

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self._row.append(" ".join(self._cell.split()))
            self._cell = None
        elif tag == "tr" and self._row is not None:
            self._t.append(self._row)
            self._row = None
        elif tag == "table":
            self._t = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell += data


def parse_html(text: str) -> Tables:
    p = Tables()
    p.feed(text)
    return p


def md_tables(text: str) -> list[list[list[str]]]:
    """The Markdown tables of a document, each as rows of cells (the separator row dropped)."""
    tables, cur = [], None
    for line in text.splitlines():
        if line.startswith("|"):
            cells = [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]
            if cur is None:
                cur = []
                tables.append(cur)
            if not all(set(c) <= {"-"} for c in cells):
                cur.append(cells)
        else:
            cur = None
    return tables


def read(run, name):
    return (run.run_dir / name).read_text()


@pytest.mark.parametrize("command", ["select", "compress"])
def test_the_page_puts_the_decision_first_with_its_savings(runs, command):
    d = runs[command].decision
    html = read(runs[command], "report.html")
    page = parse_html(html)
    sections = re.findall(r'<section id="([\w-]+)"', html)
    assert sections[0] == "decision" and "card" in sections
    cands = {c["name"]: c for c in d["candidates"]}
    rec, best = cands[d["recommended"]], cands[d["best"]]
    first = html[html.index('<section id="decision"'):html.index("</section>")]
    assert d["reason"][:60] in first
    costs = {row[0]: row[1:] for row in page.tables["decision-table-1"][1:]}
    assert set(costs) == {"p99 latency", "size", "peak memory", "energy", "money", "carbon"}
    per_day = d["settings"]["requests_per_day"]
    per_year = per_day * 365 / 1e6
    if rec is not best:  # a yearly saving at the run's own --requests-per-day, counted from decision.json
        usd = (best["cost"]["usd_per_1m"] - rec["cost"]["usd_per_1m"]) * per_year
        assert f"at {per_day:,} predictions a day (--requests-per-day): ${usd:,.2f}" in first
        assert page.tables["decision-table-2"][1] == ["$", f"{best['cost']['usd_per_1m'] * per_year:,.2f}",
                                                      f"{rec['cost']['usd_per_1m'] * per_year:,.2f}", f"{usd:,.2f}"]
        assert costs["p99 latency"][1].startswith(f"{rec['cost']['latency_ms_p99']:.3g} ms")
        assert costs["size"][2].endswith("x less")  # compression made it smaller
    else:  # nothing saved: the cheapest other candidate, what it would save and at what quality
        other = min((c for c in d["candidates"] if c is not rec and c["family"] != "baseline"),
                    key=lambda c: c["cost"]["latency_ms_p99"])
        usd = (rec["cost"]["usd_per_1m"] - other["cost"]["usd_per_1m"]) * per_year
        assert f"The cheapest other candidate by latency, {other['name']}, would save ${usd:,.2f}" in first
        assert costs["p99 latency"][0].startswith(f"{rec['cost']['latency_ms_p99']:.3g} ms")
        assert costs["p99 latency"][1].startswith(f"{other['cost']['latency_ms_p99']:.3g} ms")
    if command == "select":
        assert f"Recommended: {d['recommended']}" in first and d["settings"]["requests_per_day"] == 2_000_000
    else:
        assert f"Kept: {d['recommended']}" in first and rec is not best


def test_every_plot_has_a_point_for_every_candidate_and_the_group_view_marks_harm(runs):
    d = runs["select"].decision
    page = parse_html(read(runs["select"], "report.html"))
    names = [c["name"] for c in d["candidates"]]
    for fig in ["pareto", "costs-latency_ms_p99", "costs-size_bytes", "costs-energy_j_per_1k"]:
        assert {point_id(fig, n) for n in names} <= page.ids, fig
    for g in d["groups"] and d["candidates"][0]["groups"]:
        assert {point_id(f"groups-{g}", n) for n in names} <= page.ids
    assert {"pareto-frontier", "pareto-tolerance", "groups"} <= page.ids
    # the pareto table beside the plot: every candidate, its quality and verdict
    table = {row[0]: row for row in page.tables["pareto-table"][1:]}
    assert set(table) == set(names)
    for c in d["candidates"]:
        assert table[c["name"]][1].startswith(f"{c['quality']['mean']:.4g} [")
        assert table[c["name"]][3] == ("yes" if c["on_par"] else "no")
    # the group view: linear cannot learn group B's XOR, and the page says harm there
    groups = {row[0]: row[1:] for row in page.tables["groups-table"]}
    header = groups.pop("candidate")
    b = next(k for k, h in enumerate(header) if h.startswith("g=B"))
    linear_b = next(c for c in d["candidates"] if c["name"] == "linear")["groups"]["g=B"]
    assert linear_b["verdict"] == "harm" and "harm shown" in groups["linear"][b]


def test_frontier_keeps_only_points_better_than_every_cheaper_one():
    pts = [(1, 0.5), (2, 0.7), (3, 0.6), (4, 0.9), (5, 0.9)]
    assert frontier(pts, True) == [(1, 0.5), (2, 0.7), (4, 0.9)]
    assert frontier([(1, 3.0), (2, 1.0), (3, 2.0)], False) == [(1, 3.0), (2, 1.0)]


def test_the_markdown_states_the_same_facts(runs):
    d = runs["select"].decision
    html, md = read(runs["select"], "report.html"), read(runs["select"], "report.md")
    page, tables = parse_html(html), md_tables(md)
    assert f"**Recommended: `{d['recommended']}`**" in md
    # the savings tables are the same cells
    for t in (page.tables["decision-table-1"], page.tables.get("decision-table-2")):
        if t is not None:
            assert t in tables
    # each candidate's quality and on-par verdict
    cand = next(t for t in tables if t[0][0] == "candidate" and "on par" in t[0])
    rows = {r[0].strip("*"): r for r in cand[1:]}
    on_par = cand[0].index("on par")
    for c in d["candidates"]:
        assert rows[c["name"]][2].startswith(f"{c['quality']['mean']:.4g} [")
        assert rows[c["name"]][on_par] == ("yes" if c["on_par"] else "no")
    # each candidate's verdict in each group: the same word in both reports
    words = {"on par": "on par", "HARM": "harm shown", "inconclusive": "inconclusive", "untested": "untested"}
    md_groups = next(t for t in tables if t[0][0] == "candidate" and t[0][1].startswith("g="))
    html_groups = page.tables["groups-table"]
    for md_row, html_row in zip(md_groups[1:], html_groups[1:]):
        assert md_row[0] == html_row[0]
        for md_cell, html_cell in zip(md_row[1:], html_row[1:]):
            word = next(w for w in words if w in md_cell)
            assert words[word] in html_cell, (md_row[0], md_cell, html_cell)
    # the efficiency card, verbatim in both, naming the decision and the environment
    card = efficiency_card(d)
    assert card in md and card in html and read(runs["select"], "efficiency_card.md") == card + "\n".replace("&#39;", "'").replace("&#34;", '"').replace("&amp;", "&")
    assert f"**Decision**: {d['recommended']}" in card and "scikit-learn" in card and d["machine"]["cpu"] in card


def test_compress_page_shows_every_variant_with_the_guard_and_flip_rates(runs):
    d = runs["compress"].decision
    html, md = read(runs["compress"], "report.html"), read(runs["compress"], "report.md")
    page = parse_html(html)
    names = [c["name"] for c in d["candidates"]]
    assert len(names) > 2
    for fig in ("variants-size_bytes", "variants-latency_ms_p99"):
        assert {point_id(fig, n) for n in names} <= page.ids
    table = {row[0]: row for row in page.tables["variants-table"][1:]}
    assert set(table) == set(names)
    for c in d["candidates"]:
        guard = "kept" if c["name"] == d["recommended"] else ("held" if c["on_par"] else "rejected")
        assert table[c["name"]][4] == guard
        assert table[c["name"]][8] == f"{100 * c['vs_best']['flip_rate']:.1f}%"
    flips = page.tables["variants-table-1"]
    assert flips[0] == ["variant", "g=A", "g=B"]
    assert flips in md_tables(md)
    assert f"Kept: {d['recommended']}" in html


def test_report_rerenders_the_same_page_and_counts_savings_at_a_new_traffic(runs, tmp_path):
    run = tmp_path / "copy"
    shutil.copytree(runs["select"].run_dir, run)
    before = (run / "report.html").read_text()
    (run / "report.html").unlink()
    r = subprocess.run([str(FRUGAL), "report", str(run)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == f"report: {run / 'report.html'}"
    assert (run / "report.html").read_text() == before
    d = runs["select"].decision
    rec, best = (next(c for c in d["candidates"] if c["name"] == n) for n in (d["recommended"], d["best"]))
    if rec is not best:
        r = subprocess.run([str(FRUGAL), "report", str(run), "--requests-per-day", "1000"], capture_output=True,
                           text=True)
        assert r.returncode == 0, r.stderr
        usd = (best["cost"]["usd_per_1m"] - rec["cost"]["usd_per_1m"]) * 1000 * 365 / 1e6
        assert f"at 1,000 predictions a day (--requests-per-day): ${usd:,.2f}" in (run / "report.html").read_text()
    assert not list(run.glob(".report*"))  # no temporary file left behind


def _frugal_report(path) -> subprocess.CompletedProcess:
    return subprocess.run([str(FRUGAL), "report", str(path)], capture_output=True, text=True)


@pytest.mark.parametrize("damage, message", [
    ("empty", "is not a run directory"),
    ("older", "was written by an older or another format"),
    ("truncated", "is not valid JSON"),
    ("bench_lm", "is not a frugal bench-lm result"),
])
def test_report_refuses_what_it_cannot_draw_in_one_line_and_writes_nothing(runs, tmp_path, damage, message):
    run = tmp_path / "run"
    if damage == "empty":
        run.mkdir()
    else:
        shutil.copytree(runs["select"].run_dir, run)
        d = json.loads((run / "decision.json").read_text())
        if damage == "older":  # a run from before the costs carried their settings, and candidates their groups
            del d["settings"]["cost"]
            for c in d["candidates"]:
                del c["groups"]
            (run / "decision.json").write_text(json.dumps(d))
        elif damage == "truncated":
            (run / "decision.json").write_text(json.dumps(d)[:500])
        else:
            (run / "bench_lm.json").write_text(json.dumps({"results": [{"model": "x"}]}))
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    r = _frugal_report(run)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and r.stderr.startswith("error: ")
    assert message in r.stderr and "Traceback" not in r.stderr
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before


def test_report_on_a_file_or_a_missing_folder(tmp_path):
    (tmp_path / "f.txt").write_text("x")
    for path in (tmp_path / "f.txt", tmp_path / "missing"):
        r = _frugal_report(path)
        assert r.returncode == 2 and "is not a folder" in r.stderr and r.stderr.count("\n") == 1


# ---- in a real browser: headless Chromium (make chromium), through the DevTools protocol (tests/browser.py) ----

ROOT = Path(__file__).resolve().parents[1]
SHOTS = Path(os.environ.get("FRUGAL_SCREENSHOTS", ROOT / "runs" / "screenshots"))
PHONE = {"overflow": "document.documentElement.scrollWidth - window.innerWidth",
         "svgs": "document.querySelectorAll('main svg').length"}
PRINT = {"nav": "getComputedStyle(document.querySelector('nav')).display"}


@pytest.fixture(scope="module")
def lm_run(tmp_path_factory):
    """frugal bench-lm --out, twice into one folder (float32, then int8 with prompt lookup): one page for both."""
    from frugalml.cli import main
    from lm_models import tiny_folder

    root = tmp_path_factory.mktemp("lm-report")
    folder = tiny_folder(root / "tiny")[0]
    out = root / "bench-lm"
    fast = ["--new-tokens", "4", "--prompts-per-slice", "1", "--batch", "2", "--threads", "1", "--json"]
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FRUGAL_CACHE_DIR", str(root / "cache"))
        assert main(["bench-lm", str(folder), "--out", str(out), *fast]) == 0
        assert main(["bench-lm", str(folder), "--out", str(out), "--quantize", "int8", "--prompt-lookup", "2",
                     *fast]) == 0
    return out


def check_in_browser(html: Path, shot: str) -> Tables:
    """Open a report as a person would: no request leaves the page, nothing is refused or thrown, it fits a phone
    and prints without its navigation; -> the DOM as the browser built it. Saves a full-page screenshot."""
    from browser import external_requests, open_page

    SHOTS.mkdir(parents=True, exist_ok=True)
    page = open_page(html, screenshot=SHOTS / f"{shot}.png")
    assert page.requests == [page.url] and not external_requests(page) and not page.failed
    assert not page.console, page.console  # a CSP refusal or a script error would be logged here
    png = page.screenshot.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and int.from_bytes(png[20:24], "big") > 1500  # the whole page, tall
    phone = open_page(html, width=390, height=844, evaluate=PHONE)
    assert phone.values["overflow"] <= 0 and phone.values["svgs"] >= 2  # no sideways scrolling of the page
    assert open_page(html, media="print", evaluate=PRINT).values["nav"] == "none"
    dom = parse_html(page.dom)
    assert "main" in dom.ids and all(f'class="table" role="region" tabindex="0"' in m  # keyboard-scrollable tables
                                     for m in re.findall(r"<div[^>]*class=\"table\"[^>]*>", page.dom))
    return dom


def test_select_report_in_a_browser(runs):
    d = runs["select"].decision
    dom = check_in_browser(runs["select"].run_dir / "report.html", "report-select")
    names = [c["name"] for c in d["candidates"]]
    for fig in ["pareto", "costs-latency_ms_p99", "costs-size_bytes", "costs-energy_j_per_1k"]:
        assert {point_id(fig, n) for n in names} <= dom.ids
    for g in d["candidates"][0]["groups"]:
        assert {point_id(f"groups-{g}", n) for n in names} <= dom.ids
    decision = dom.tables["decision-table-1"]
    assert f"{d['recommended']} (recommended" in " ".join(decision[0])


def test_compress_report_in_a_browser(runs):
    d = runs["compress"].decision
    dom = check_in_browser(runs["compress"].run_dir / "report.html", "report-compress")
    names = [c["name"] for c in d["candidates"]]
    assert {point_id("variants-size_bytes", n) for n in names} <= dom.ids
    assert {r[0] for r in dom.tables["variants-table"][1:]} == set(names)


def test_bench_lm_report_in_a_browser(lm_run):
    results = json.loads((lm_run / "bench_lm.json").read_text())["results"]
    assert [r["label"] for r in results] == ["float32", "int8, prompt-lookup 2"]
    dom = check_in_browser(lm_run / "report.html", "report-bench-lm")
    assert {point_id("lm-tradeoff", r["label"]) for r in results} <= dom.ids
    assert "frugal bench-lm" in (lm_run / "report.md").read_text()
