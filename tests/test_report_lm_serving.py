"""The bench-lm and serving sections of report.html/report.md, from real results: ``bench_lm`` on a tiny random
Llama (three engine options), ``bench`` on a served linear model (a sweep with VALID and INVALID runs, a
single-stream run) and on the tiny Llama through the OpenAI API. Every figure's numbers are checked against the
result they came from, in the figure's table, its text and the Markdown."""

import copy
import re

import pytest

from frugalml.report.lm_section import lm_section
from frugalml.report.numbers import count, num, pct, short, times
from frugalml.report.serving_section import VERDICT_STYLE, serving_section
from frugalml.report.page import section_markdown
from frugalml.report.plots import point_id

from lm_models import tiny_folder  # noqa: E402


# ---- the formatting, on literal numbers ----

def test_number_formats():
    assert [num(x) for x in (12333.08, 856.48, 41.23, 1.1579, 0.014607, 9.996, 0, 1.25e-5)] == \
        ["12333", "856", "41.2", "1.16", "0.0146", "10.0", "0", "1.25e-05"]
    assert [num(x) for x in (None, float("nan"), float("inf"), "x", True)] == ["–"] * 5
    assert [pct(x) for x in (0.865, 1.0, 0.99996, 0.0146, 0)] == ["86.5%", "100%", ">99.9%", "1.46%", "0%"]
    assert times(1.7468) == "1.75x" and times(None) == "–"
    assert short(15) == "15" and short(45.0) == "45" and short(2.5) == "2.5" and count(12.0) == "12"


def cell_value(cell: str) -> float:
    """A formatted cell back to a number: "86.5%" -> 0.865, "1.75x" -> 1.75."""
    if cell.endswith("%"):
        return float(cell[:-1]) / 100
    return float(cell.rstrip("x"))


def md_row(cells) -> str:
    return "| " + " | ".join(cells) + " |"


# ---- bench-lm: three engine options on a tiny random Llama ----

OPTIONS = {"float32": {}, "int8": {"quantize": "int8"}, "int8, prompt-lookup 2": {"quantize": "int8",
                                                                                 "prompt_lookup": 2}}


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return tiny_folder(tmp_path_factory.mktemp("lm") / "tiny")[0]


@pytest.fixture(scope="module")
def lm_results(folder, tmp_path_factory):
    from frugalml.runtime.lm.engine import EngineConfig
    from frugalml.runtime.lm.lm_bench import BenchConfig, bench_lm

    cfg = BenchConfig(new_tokens=6, prompts_per_slice=1, batch=2, threads=1)
    with pytest.MonkeyPatch.context() as mp:  # quantized weights cached in tmp, not in ~/.cache
        mp.setenv("FRUGAL_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
        results = [bench_lm(str(folder), EngineConfig(**kw), cfg) for kw in OPTIONS.values()]
    assert [r["label"] for r in results] == list(OPTIONS)
    return results


@pytest.fixture(scope="module")
def lm_sec(lm_results):
    return lm_section(lm_results)


def figure_of(sec, fid):
    found = [f for f in sec.figures if f.id == fid]
    assert len(found) == 1, [f.id for f in sec.figures]
    return found[0]


def test_lm_tradeoff_plots_each_option_with_its_numbers(lm_results, lm_sec):
    fig = figure_of(lm_sec, "lm-tradeoff")
    f32 = lm_results[0]
    md = section_markdown(lm_sec)
    assert len(fig.table.rows) == 3
    for r, row in zip(lm_results, fig.table.rows):
        label, q = r["label"], r["quality"]["overall"]
        assert f'id="{point_id("lm-tradeoff", label)}"' in fig.svg
        ratio = r["decode_tokens_per_s"] / f32["decode_tokens_per_s"]
        expected = [label, num(r["decode_tokens_per_s"]), times(ratio) if r is not f32 else "1x",
                    pct(q["top1_agreement_fraction"]), num(q["kl_mean_nats"]), num(q["kl_max_nats"]),
                    num(r["quality"]["perplexity_ratio"], 4)]
        assert row == expected
        assert cell_value(row[1]) == pytest.approx(r["decode_tokens_per_s"], rel=0.01)
        assert cell_value(row[3]) == pytest.approx(q["top1_agreement_fraction"], abs=0.001)
        assert md_row(row) in md
        # the finding in words: its speed, its ratio to float32, its agreement
        said = f"{label} decodes {num(r['decode_tokens_per_s'])} tokens/s"
        if r is not f32:
            said += f", {times(ratio)} float32"
        assert said + f", keeping {pct(q['top1_agreement_fraction'])} top-1 agreement" in fig.alt
    assert fig.alt in md and fig.title in md
    assert fig.table.columns[2] == "vs float32"


def test_lm_latency_roofline_and_speed_table(lm_results, lm_sec):
    fig = figure_of(lm_sec, "lm-latency")
    md = section_markdown(lm_sec)
    for r, row in zip(lm_results, fig.table.rows):
        assert row == [r["label"], num(r["ttft_ms"]), num(r["ttft_ms_p99"]), num(r["tpot_ms_p50"]),
                       num(r["tpot_ms_p99"])]
        assert r["ttft_ms"] <= r["ttft_ms_p99"]
        assert cell_value(row[4]) == pytest.approx(r["tpot_ms_p99"], rel=0.01)
        for part in ("ttft p50", "ttft p99", "tpot p50", "tpot p99"):
            assert f'id="{point_id("lm-latency", r["label"] + " " + part)}"' in fig.svg
        assert (f"{r['label']} {num(r['ttft_ms'])} ms to the first token (p99 {num(r['ttft_ms_p99'])} ms), then "
                f"{num(r['tpot_ms_p50'])} ms per token (p99 {num(r['tpot_ms_p99'])} ms)") in fig.alt
        assert md_row(row) in md
    speed = lm_sec.tables[0]
    assert speed.columns == ["measure", *OPTIONS]
    rows = {row[0]: row[1:] for row in speed.rows}
    assert rows["roofline fraction"] == [pct(r["roofline_fraction"]) for r in lm_results]
    for r, cell in zip(lm_results, rows["roofline fraction"]):
        assert cell_value(cell) == pytest.approx(r["roofline_fraction"], rel=0.01)
        assert f"{r['label']} decodes at {pct(r['roofline_fraction'])} of its roofline " \
               f"({num(r['roofline_tokens_per_s'])} tokens/s" in " ".join(lm_sec.paragraphs)
    assert rows["total tokens/s, concurrent"] == [num(r["batched"]["total_tokens_per_s"]) for r in lm_results]
    assert rows["concurrent requests (batch)"] == ["2", "2", "2"]
    # speculation is not like for like when batched: no ratio for it
    assert rows["concurrent vs batch 1 (end to end)"][2] == "–" and rows["concurrent vs batch 1 (end to end)"][0] \
        == times(lm_results[0]["batched"]["ratio_to_batch1"])
    assert rows["speculative acceptance"] == ["–", "–", pct(lm_results[2]["acceptance_rate"])]
    assert md_row(["roofline fraction", *rows["roofline fraction"]]) in md
    assert "divided by the weight bytes read per token" in " ".join(lm_sec.paragraphs)
    assert rows["weight MB read per token"] == [num(r["weight_bytes_per_token"] / 1e6) for r in lm_results]
    assert lm_results[0]["machine"] in lm_sec.paragraphs[0]


def test_lm_slices_table_and_points(lm_results, lm_sec):
    fig = figure_of(lm_sec, "lm-slices")
    assert fig.table.columns[-1] == "acceptance"  # the speculative option measured it
    rows = {(row[0], row[1]): row for row in fig.table.rows}
    md = section_markdown(lm_sec)
    for r in lm_results:
        q = r["quality"]
        assert {s for (lab, s) in rows if lab == r["label"]} == {*q["slices"], "overall"}
        for name, v in [*q["slices"].items(), ("overall", q["overall"])]:
            row = rows[(r["label"], name)]
            assert row[2:7] == [str(v["prompts"]), str(v["positions"]), pct(v["top1_agreement_fraction"]),
                                num(v["kl_mean_nats"]), num(v["kl_max_nats"])]
            assert row[7] == pct(v.get("acceptance_rate_mean"))
            assert md_row(row) in md
            if name != "overall":
                assert f'id="{point_id("lm-slices", r["label"] + " " + name)}"' in fig.svg
    spec = lm_results[2]["quality"]["slices"]
    assert all(rows[("int8, prompt-lookup 2", s)][7] != "–" for s in spec)
    assert rows[("int8", "qa")][7] == "–"


def test_lm_section_without_quality_batching_or_slices(lm_results):
    plain, int8, spec = (copy.deepcopy(r) for r in lm_results)
    int8.pop("quality")
    int8.pop("batched")
    spec["label"] = "reference"  # the unoptimised model itself: quality holds perplexity alone
    spec["quality"] = {k: v for k, v in spec["quality"].items() if k.startswith("perplexity_text")} | \
        {"perplexity_reference": 12.5}
    sec = lm_section([plain, int8, spec])
    fig = figure_of(sec, "lm-tradeoff")
    assert point_id("lm-tradeoff", "int8") not in fig.svg  # no quality: not on the plot
    assert point_id("lm-tradeoff", "float32") in fig.svg and point_id("lm-tradeoff", "reference") in fig.svg
    assert "Not plotted, no quality measured: int8." in fig.alt
    assert [row[0] for row in fig.table.rows] == ["float32", "reference"]
    assert fig.table.rows[1][3] == "100% (reference)"
    text = " ".join(sec.paragraphs)
    assert "int8 has no quality measurement" in text and "perplexity 12.5" in text
    assert "int8: not measured with concurrent requests (--batch 1)." in text
    slices = figure_of(sec, "lm-slices")
    assert {row[0] for row in slices.table.rows} == {"float32"}  # only it still has slices
    speed = {row[0]: row[1:] for row in sec.tables[0].rows}
    assert speed["total tokens/s, concurrent"][1] == "–"
    section_markdown(sec)

    # one result alone, nothing optional in it
    bare = {k: v for k, v in lm_results[1].items() if k not in ("quality", "batched", "baseline", "engine")}
    one = lm_section(bare)
    assert [f.id for f in one.figures] == ["lm-latency"]
    assert "no speed-quality plot" in " ".join(one.paragraphs)
    assert "Concurrent requests were not measured" in " ".join(one.paragraphs)
    assert "decode vs" not in section_markdown(one)  # nothing to compare with
    assert lm_section({"label": "x"}).tables and lm_section([]).paragraphs


def test_lm_baseline_is_drawn_and_stated(lm_results):
    r = copy.deepcopy(lm_results[0])
    r["baseline"] = {"name": "transformers generate (float32)", "end_to_end_tokens_per_s": 400.0,
                     "decode_tokens_per_s": 450.0, "ttft_ms": 5.0, "generated_tokens": 30,
                     "identical_greedy_tokens": True, "ratio": r["end_to_end_tokens_per_s"] / 400.0}
    sec = lm_section([r], id="lm2")
    fig = figure_of(sec, "lm2-tradeoff")
    assert 'id="lm2-tradeoff-baseline"' in fig.svg
    assert f"frugalml's float32 is {times(r['baseline']['ratio'])} as fast end to end, with identical greedy " \
           "tokens" in " ".join(sec.paragraphs)
    rows = {row[0]: row[1:] for row in sec.tables[0].rows}
    assert rows["transformers generate tokens/s, end to end"] == ["400"] and rows["identical greedy tokens"] == ["yes"]


# ---- bench: a served linear model, a sweep ----

@pytest.fixture(scope="module")
def predictor(tmp_path_factory):
    """A linear model's folder served on 127.0.0.1, and the rows to send it."""
    from sklearn.linear_model import LogisticRegression

    from conftest import linear_data
    from frugalml.candidates import build_pipeline
    from frugalml.candidates.export import export_onnx
    from frugalml.data import load_task
    from frugalml.runtime.model_dir import save_model_dir
    from frugalml.serve import ServeConfig, running

    root = tmp_path_factory.mktemp("serve")
    df = linear_data(n=200)
    df.to_csv(root / "rows.csv", index=False)
    task = load_task(df, "label")
    pipe = build_pipeline(LogisticRegression(), task.schema).fit(task.X, task.y)
    # ONNX alone: served by ONNX Runtime, without importing skops (seconds)
    save_model_dir(root / "model", schema=task.schema, name="linear", skops_data=None,
                   onnx_data=export_onnx(pipe, task.schema))
    with running(str(root / "model"), ServeConfig(port=0)) as url:
        yield str(root / "model"), url, str(root / "rows.csv")


@pytest.fixture(scope="module")
def sweep(predictor):
    """8 requests per run: at rate q the seeded arrivals span 5.331/q s (seed 0), so the 0.25 s minimum holds up to
    21.3 requests/s: 10 and 20 are VALID, 40 and 30 INVALID on the minimum duration, whatever the machine."""
    from frugalml.serve.loadgen import BenchConfig, bench

    target, url, rows = predictor
    cfg = BenchConfig(scenario="server", sweep=True, qps=10, duration_s=1.0, num_requests=8, slo_p99_ms=1000,
                      min_duration_s=0.25, min_queries=5, sweep_max_runs=4)
    b = bench(target, url=url, config=cfg, data=rows)
    assert [(s["qps"], s["passed"]) for s in b["sweep"]["steps"]] == [(10, True), (20, True), (40, False),
                                                                     (30, False)], b["sweep"]["steps"]
    return b


def test_serving_sweep_points_objective_and_verdicts(sweep):
    sec = serving_section(sweep)
    fig = figure_of(sec, "serving-latency")
    steps = sweep["sweep"]["steps"]
    assert 'id="serving-latency-slo"' in fig.svg
    groups = {}
    for st in steps:
        pid = point_id("serving-latency", f"{st['qps']:g}")
        m = re.search(rf'<g id="{pid}">(.*?)</g>\s*</g>', fig.svg, re.S)
        assert m, pid
        groups[st["qps"]] = m.group(1)
        assert f'id="{pid}-p50"' in fig.svg
    # VALID and INVALID differ in marker shape (the path the marker uses) and in colour, not in colour alone

    def marker(g):  # matplotlib defines a marker's path once and refers to it from every point drawn with it
        ref = re.search(r'xlink:href="#(\w+)"', g).group(1)
        shape = re.search(rf'<path id="{ref}" d="([^"]+)"', fig.svg).group(1)
        return shape, re.search(r"fill: (#\w+)", g).group(1)

    (valid_shape, valid_fill), (invalid_shape, invalid_fill) = marker(groups[10]), marker(groups[40])
    assert valid_shape != invalid_shape and valid_fill != invalid_fill
    assert valid_fill == VERDICT_STYLE[True]["color"].lower() and invalid_fill == VERDICT_STYLE[False]["color"].lower()
    assert marker(groups[20]) == marker(groups[10]) and marker(groups[30]) == marker(groups[40])
    # the table: the plotted numbers, run by run
    md = section_markdown(sec)
    for st, row in zip(steps, fig.table.rows):
        r = st["result"]
        verdict = "VALID" if st["passed"] else "INVALID: " + "; ".join(r["validity"]["reasons"])
        assert row == [f"{st['qps']:g}", short(st["qps"]), num(r["request_throughput"]), num(r["median_e2el_ms"]),
                       num(r["p99_e2el_ms"]), verdict]
        assert cell_value(row[4]) == pytest.approx(r["p99_e2el_ms"], rel=0.01)
        assert md_row(row) in md
        assert f"{num(r['request_throughput'])} requests/s at p99 {num(r['p99_e2el_ms'])} ms" in fig.alt
    assert "min duration 0.25 s" in fig.table.rows[2][-1]
    assert "Objective: p99 at most 1000 ms." in fig.alt and "Highest VALID rate: 20 requests/s." in fig.alt
    text = " ".join(sec.paragraphs)
    assert "The highest VALID rate is 20 requests/s" in text
    assert f"goodput of {num(sweep['sweep']['goodput'])} requests/s" in text
    assert "The lowest INVALID rate, 30 requests/s, failed: min duration 0.25 s" in text
    assert "Objectives: p99 latency at most 1000 ms." in text
    lag = max(s["result"]["generator"]["send_lag_ms_p99"] for s in steps)
    assert f"(p99 {num(lag)} ms)" in text
    details = {row[0]: row for row in sec.tables[0].rows}
    assert details["40"][1:3] == ["8", "8"] and details["10"][-1] == "–"


def test_serving_sweep_that_found_no_rate(sweep):
    b = copy.deepcopy(sweep)
    failed = b["sweep"]["steps"][2]
    b["sweep"].update(start_qps=40, peak_qps=None, goodput=None, steps=[failed])
    b["result"] = None
    sec = serving_section(b)
    assert "No rate met every rule: even the first was INVALID (min duration 0.25 s" in " ".join(sec.paragraphs)
    fig = figure_of(sec, "serving-latency")
    assert point_id("serving-latency", "40") in fig.svg and "Highest VALID" not in fig.alt


def test_serving_single_stream_and_missing_keys(predictor):
    from frugalml.serve.loadgen import BenchConfig, bench

    target, url, rows = predictor
    b = bench(target, url=url, config=BenchConfig(duration_s=0.3, slo_p99_ms=5000), data=rows)
    r = b["result"]
    sec = serving_section(b)
    fig = figure_of(sec, "serving-latency")
    assert f'id="{point_id("serving-latency", "1")}"' in fig.svg and 'id="serving-latency-slo"' in fig.svg
    assert fig.table.rows == [["1", "–", num(r["request_throughput"]), num(r["median_e2el_ms"]),
                               num(r["p99_e2el_ms"]), "not judged"]]
    text = " ".join(sec.paragraphs)
    assert "single-stream scenario is not judged" in text and "within the objective of 5000 ms" in text
    # an old or partial file: no settings, no generator, no validity, no machine
    bare = {"kind": "predictor", "result": {k: v for k, v in r.items() if k not in ("generator", "validity")}}
    sec = serving_section(bare)
    assert "No latency objective was set" in " ".join(sec.paragraphs)
    assert 'id="serving-latency-slo"' not in figure_of(sec, "serving-latency").svg
    assert serving_section({}).paragraphs[-1] == "The bench holds no measured run to plot."
    section_markdown(sec)


# ---- bench: a language model through the OpenAI API ----

def test_serving_language_model_ttft_tpot_against_rate(folder):
    from frugalml.serve import ServeConfig, running
    from frugalml.serve.loadgen import BenchConfig, bench

    with running(str(folder), ServeConfig(port=0, context=256, max_batch_size=4)) as url:
        cfg = BenchConfig(scenario="server", qps=20, duration_s=2.0, num_requests=6, max_tokens=6, slo_ttft_ms=5000,
                          slo_tpot_ms=5000, min_duration_s=0, min_queries=1)
        b = bench(url=url, config=cfg)
    r = b["result"]
    assert r["validity"]["valid"], r["validity"]
    sec = serving_section(b, id="lmserve")
    lat = figure_of(sec, "lmserve-latency")
    assert lat.table.columns[3] == "output tokens/s"
    assert lat.table.rows == [["20", "20", num(r["request_throughput"]), num(r["output_throughput"]),
                               num(r["median_e2el_ms"]), num(r["p99_e2el_ms"]), "VALID"]]
    assert 'id="lmserve-latency-slo"' not in lat.svg  # no E2EL objective: TTFT and TPOT carry them
    tok = figure_of(sec, "lmserve-tokens")
    for gid in ("lmserve-tokens-slo-ttft", "lmserve-tokens-slo-tpot", point_id("lmserve-tokens", "20 ttft"),
                point_id("lmserve-tokens", "20 tpot")):
        assert f'id="{gid}"' in tok.svg
    assert tok.table.rows == [["20", "20", num(r["median_ttft_ms"]), num(r["p99_ttft_ms"]), num(r["median_tpot_ms"]),
                               num(r["p99_tpot_ms"]), "VALID"]]
    assert f"TTFT p99 {num(r['p99_ttft_ms'])} ms, TPOT p99 {num(r['p99_tpot_ms'])} ms (VALID)" in tok.alt
    text = " ".join(sec.paragraphs)
    assert "At 20 requests/s" in text and "the run is VALID" in text and "p99 TTFT at most 5000 ms" in text
    assert md_row(tok.table.rows[0]) in section_markdown(sec)
