"""frugal bench: its arithmetic on synthetic timestamps with known answers, then the scenarios against real
servers on 127.0.0.1 (a predictor run directory, a tiny random Llama through the OpenAI API), the command line
and its errors."""

import json

import numpy as np
import pytest

import frugalml
from conftest import linear_data
from frugalml.cli import main
from frugalml.errors import ConfigError, DataError, FrugalError
from frugalml.serve import ServeConfig, running
from frugalml.serve import bench_stats as bs
from frugalml.serve.bench_stats import Shot, summarize
from frugalml.serve.loadgen import BenchConfig, bench, data_of_run, detect


# ---- the arithmetic ----

def test_tpot_and_itl_on_known_timestamps():
    assert bs.tpot_s(e2el_s=1.0, ttft_s=0.2, output_tokens=5) == pytest.approx(0.2)
    assert bs.tpot_s(1.0, 0.2, 1) is None and bs.tpot_s(1.0, 0.2, 0) is None  # vLLM leaves these out
    assert bs.itl_s([0.1, 0.15, 0.3, 0.31]) == pytest.approx([0.05, 0.15, 0.01])
    assert bs.itl_s([0.1]) == []


def lm_shot(sent, chunk_times, tokens, first_text=None):
    s = Shot(scheduled=sent, started=sent, sent=sent, done=chunk_times[-1] + 0.001, outcome="completed",
             status=200, first_chunk=chunk_times[0], chunks=list(chunk_times), text_chunks=len(chunk_times),
             output_tokens=tokens, input_tokens=4)
    s.first_content = first_text if first_text is not None else chunk_times[0]
    return s


def test_summary_of_a_language_model_run_uses_vllm_definitions():
    shots = [lm_shot(0.0, [0.10, 0.12, 0.14, 0.16, 0.18], 5, first_text=0.12),  # ttft 100 ms, tpot 20 ms
             lm_shot(1.0, [1.30, 1.50], 2),  # ttft 300 ms, tpot 200 ms
             lm_shot(2.0, [2.05], 1),  # one token: no TPOT; goodput counts it as 0
             Shot(scheduled=3.0, started=3.0, sent=3.0, done=3.01, outcome="rejected", status=429, error="429: full")]
    cfg = BenchConfig(scenario="offline", slo_ttft_ms=200, slo_tpot_ms=50)
    r = summarize(shots, 4.0, cfg, "language_model")
    assert (r["sent"], r["completed"], r["rejected"], r["failed"]) == (4, 3, 1, 0)
    assert r["statuses"] == {"200": 3, "429": 1} and r["errors"] == [{"message": "429: full", "count": 1}]
    assert r["mean_ttft_ms"] == pytest.approx((100 + 300 + 50) / 3)
    assert r["mean_ttft_content_ms"] == pytest.approx((120 + 300 + 50) / 3)  # the first text came later
    assert r["n_tpot"] == 2 and r["mean_tpot_ms"] == pytest.approx((20 + 200) / 2)
    assert r["n_itl"] == 4 + 1 and r["max_itl_ms"] == pytest.approx(200)
    assert r["mean_e2el_ms"] == pytest.approx((180 + 500 + 50) / 3)
    assert r["total_output_tokens"] == 8 and r["total_input_tokens"] == 12
    assert r["request_throughput"] == pytest.approx(3 / 4.0) and r["output_throughput"] == pytest.approx(2.0)
    assert r["request_goodput"] == pytest.approx(2 / 4.0)  # the second request misses both objectives
    assert r["p50_ttft_ms"] == pytest.approx(np.percentile([100, 300, 50], 50))  # linear, as vLLM


def test_quantile_ci_is_the_textbook_order_statistic_interval():
    assert bs.quantile_ci(np.arange(100), 50) == (39, 60)  # ranks 40 and 61 for n = 100
    assert bs.quantile_ci(np.arange(368), 99)[1] == 367  # the maximum bounds p99 from n = 368 at 95 %
    assert bs.quantile_ci(np.arange(367), 99)[1] is None
    assert bs.quantile_ci([], 99) == (None, None)
    rng = np.random.default_rng(1)  # coverage: the true p90 of U(0, 1) is 0.9
    hits = [lo <= 0.9 <= hi for lo, hi in (bs.quantile_ci(rng.random(200), 90) for _ in range(300))]
    assert np.mean(hits) >= 0.92


def test_stats_are_in_ms_ordered_and_json_safe():
    s = bs.stats_ms("e2el", [0.001, 0.002, 0.003, 0.010])
    assert s["mean_e2el_ms"] == pytest.approx(4.0) and s["median_e2el_ms"] == pytest.approx(2.5)
    assert s["p50_e2el_ms"] <= s["p90_e2el_ms"] <= s["p99_e2el_ms"] <= s["max_e2el_ms"] == pytest.approx(10)
    empty = bs.stats_ms("ttft", [])
    assert empty["n_ttft"] == 0 and empty["p99_ttft_ms"] is None
    json.dumps(empty, allow_nan=False)


def test_poisson_arrivals_are_seeded_at_the_mean_rate():
    a = bs.poisson_arrivals(50.0, 200.0, seed=3)
    assert np.array_equal(a, bs.poisson_arrivals(50.0, 200.0, seed=3))
    assert not np.array_equal(a[:20], bs.poisson_arrivals(50.0, 200.0, seed=4)[:20])
    assert len(a) / 200.0 == pytest.approx(50.0, rel=0.03) and np.all(np.diff(a) > 0) and a[-1] < 200.0
    gaps = np.diff(a)
    assert gaps.std() / gaps.mean() == pytest.approx(1.0, rel=0.05)  # exponential gaps: CV 1
    assert len(bs.poisson_arrivals(50.0, 200.0, seed=3, limit=7)) == 7


def test_objectives_and_goodput():
    o = bs.Objectives(p99_ms=100)
    assert o.good(0.099, None, None) and not o.good(0.101, None, None)
    o = bs.Objectives(ttft_ms=50, tpot_ms=10)
    assert o.good(1.0, 0.04, None)  # a one-token answer: TPOT 0
    assert not o.good(1.0, 0.04, 0.011) and not o.good(1.0, 0.06, 0.001)
    assert bs.goodput(30, 10.0) == 3.0 and not bs.Objectives().given


def test_sweep_doubles_until_a_failure_then_bisects():
    ran = []

    def measure(qps):
        ran.append(qps)
        return qps <= 37.0, {"qps": qps}

    peak, steps = bs.find_peak(measure, 5.0, precision=0.05, max_runs=20)
    assert ran[:4] == [5.0, 10.0, 20.0, 40.0]  # widen: 40 fails
    assert 37.0 * 0.95 <= peak <= 37.0  # bisected to within 5 %
    assert all(ok == (q <= 37.0) for q, ok, _ in steps)
    assert bs.find_peak(measure, 50.0)[0] is None  # the start must pass
    assert len(bs.find_peak(lambda q: (True, None), 1.0, max_runs=4)[1]) == 4  # bounded


def test_validity_lists_every_failed_rule():
    summary = {"sent": 200, "completed": 190, "failed": 4, "rejected": 6, "p99_e2el_ms": 30.0}
    v = bs.validity(summary, bs.Objectives(p99_ms=20), bs.Rules(min_duration_s=10, min_queries=300), window_s=4.0)
    assert not v.valid
    reasons = " | ".join(v.to_json()["reasons"])
    assert "p99 latency" in reasons and "errors" in reasons and "min duration" in reasons and "min queries" in reasons
    ok = bs.validity({**summary, "failed": 0, "rejected": 1}, bs.Objectives(p99_ms=40), bs.Rules(1, 10), 4.0)
    assert ok.valid, ok.to_json()


def test_config_refuses_bad_settings():
    for kwargs, match in [({"scenario": "closed"}, "unknown --scenario"), ({"scenario": "server", "qps": 0}, "--qps"),
                          ({"scenario": "server"}, "needs a rate"), ({"scenario": "server", "sweep": True}, "--sweep"),
                          ({"qps": 3.0}, "server scenario"), ({"concurrency": 0}, "--concurrency")]:
        with pytest.raises(ConfigError, match=match):
            BenchConfig(**kwargs).check()


# ---- a predictor, served for real ----

@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A run made from a CSV file, so bench finds its rows through decision.json."""
    from frugalml.evaluation import CostConfig

    root = tmp_path_factory.mktemp("bench")
    linear_data(n=300).to_csv(root / "rows.csv", index=False)
    frugalml.select(str(root / "rows.csv"), "label", candidates=["linear"], folds=2, repeats=1, out=root / "run",
                    cost=CostConfig(latency_calls=50, time_budget_s=0.01, batch_large=50, memory_probe=False))
    return root / "run"


@pytest.fixture(scope="module")
def server(run_dir):
    with running(str(run_dir), ServeConfig(port=0)) as url:
        yield url


def counts_add_up(r):
    assert r["completed"] + r["failed"] + r["rejected"] == r["sent"] > 0
    assert sum(r["statuses"].values()) <= r["sent"]


def ordered(r, metric):
    assert r[f"p50_{metric}_ms"] <= r[f"p90_{metric}_ms"] <= r[f"p99_{metric}_ms"] <= r[f"max_{metric}_ms"]
    lo, hi = r[f"p99_{metric}_ms_ci95"]
    assert lo is None or lo <= r[f"max_{metric}_ms"]


def test_kind_is_detected(server):
    assert detect(server, {}) == ("predictor", None)


def test_single_stream_has_one_request_in_flight_and_writes_bench_json(run_dir, server):
    r = bench(str(run_dir), url=server, config=BenchConfig(duration_s=1.0))
    run = r["result"]
    counts_add_up(run)
    ordered(run, "e2el")
    assert run["generator"]["max_in_flight"] == 1 and run["failed"] == run["rejected"] == 0
    assert r["kind"] == "predictor" and r["endpoint"] == "/v1/predict" and r["server"] == "external"
    saved = json.loads((run_dir / "bench.json").read_text())
    assert saved["result"] == run and saved["settings"]["scenario"] == "single-stream"
    # the run directory's report now shows the load beside the decision
    assert r["report"] == str(run_dir / "report.html")
    page = (run_dir / "report.html").read_text()
    assert '<section id="decision"' in page and '<section id="serving"' in page and 'id="serving-latency"' in page


def test_offline_keeps_concurrency_requests_in_flight(run_dir, server):
    r = bench(str(run_dir), url=server, config=BenchConfig(scenario="offline", duration_s=1.0, concurrency=4,
                                                           rows_per_request=3))["result"]
    counts_add_up(r)
    ordered(r, "e2el")
    assert 1 < r["generator"]["max_in_flight"] <= 4
    assert r["rows_per_s"] == pytest.approx(3 * r["request_throughput"])


def test_server_scenario_sends_the_seeded_schedule(run_dir, server):
    cfg = BenchConfig(scenario="server", qps=40, duration_s=2.0, slo_p99_ms=2000, min_duration_s=1, min_queries=10)
    r = bench(str(run_dir), url=server, config=cfg)["result"]
    counts_add_up(r)
    assert r["sent"] == len(bs.poisson_arrivals(40, 2.0, seed=0))  # open loop: every arrival is sent
    assert r["scheduled_qps"] == pytest.approx(40, rel=0.25) and r["achieved_qps"] == pytest.approx(40, rel=0.35)
    assert r["validity"]["valid"], r["validity"]
    assert r["request_goodput"] <= r["request_throughput"]
    short = bench(str(run_dir), url=server, config=BenchConfig(scenario="server", qps=20, duration_s=0.5,
                                                               slo_p99_ms=2000, concurrency=2))["result"]
    assert not short["validity"]["valid"]
    assert any("min duration" in x for x in short["validity"]["reasons"])
    assert any("min queries" in x for x in short["validity"]["reasons"])
    assert short["generator"]["max_in_flight"] <= 2 and "client_queue_ms_p99" in short["generator"]


def test_sweep_returns_a_rate_that_meets_the_objective(run_dir, server, tmp_path):
    cfg = BenchConfig(scenario="server", sweep=True, qps=10, duration_s=1.0, slo_p99_ms=1000, min_duration_s=0.5,
                      min_queries=5, sweep_precision=0.5, sweep_max_runs=3)
    r = bench(str(run_dir), url=server, config=cfg, out=tmp_path)
    s = r["sweep"]
    assert s["peak_qps"] is not None and [st["qps"] for st in s["steps"]][:2] == [10, 20]
    assert r["result"]["target_qps"] == s["peak_qps"] and r["result"]["p99_e2el_ms"] <= 1000
    assert r["result"]["validity"]["valid"] and s["goodput"] == r["result"]["request_goodput"]
    assert json.loads((tmp_path / "bench.json").read_text())["sweep"]["peak_qps"] == s["peak_qps"]
    hopeless = bench(str(run_dir), url=server, config=BenchConfig(
        scenario="server", sweep=True, qps=10, duration_s=0.5, slo_p99_ms=0.001, min_duration_s=0, min_queries=1))
    assert hopeless["sweep"]["peak_qps"] is None and hopeless["result"] is None


def test_url_alone_sends_the_data_columns(server, run_dir):
    with pytest.raises(DataError, match="--data"):
        bench(url=server, config=BenchConfig(duration_s=0.3))
    r = bench(url=server, config=BenchConfig(duration_s=0.5), data=str(run_dir.parent / "rows.csv"))
    assert r["result"]["completed"] > 0 and r["result"]["failed"] == 0  # the label rides along, ignored
    assert "file" not in r


def test_data_of_run_says_what_to_give(tmp_path):
    (tmp_path / "decision.json").write_text(json.dumps({"data": {"source": "dataframe"}}))
    with pytest.raises(DataError, match="give --data"):
        data_of_run(tmp_path)


def test_rejections_are_counted_not_retried(run_dir):
    """A server with room for one waiting request, flooded by 32 clients: 429s are counted as rejections."""
    cfg = BenchConfig(scenario="offline", duration_s=1.0, concurrency=32)
    r = bench(str(run_dir), config=cfg, serve_config=ServeConfig(port=0, max_batch_size=1, max_wait_ms=0,
                                                                 max_queue=1), out=run_dir.parent / "flood")
    run = r["result"]
    counts_add_up(run)
    assert r["server"] == "in-process"
    assert run["rejected"] > 0 and run["statuses"].get("429") == run["rejected"]


# ---- the command line ----

def test_cli_table_and_json(run_dir, server, tmp_path, capsys):
    assert main(["bench", str(run_dir), "--duration-s", "0.5", "--out", str(tmp_path)]) == 0  # served here
    out = capsys.readouterr().out
    assert "latency" in out and "single-stream" in out and "written:" in out
    assert f"report: {tmp_path / 'report.html'}" in out  # a folder of its own: a page with the load only
    page = (tmp_path / "report.html").read_text()
    assert '<section id="serving"' in page and '<section id="decision"' not in page
    load = ["bench", "--url", server, "--data", str(run_dir.parent / "rows.csv"), "--qps", "20", "--duration-s", "1",
            "--slo-p99-ms", "1500"]
    assert main([*load, "--min-duration-s", "0.5", "--min-queries", "5", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["scenario"] == "server" and r["result"]["validity"]["valid"]
    assert main(load) == 0
    out = capsys.readouterr().out
    assert "Result is          : INVALID" in out and "min duration 10 s" in out


@pytest.mark.parametrize("args, match", [
    (["--scenario", "closed-loop", "--url", "http://127.0.0.1:9"], "unknown --scenario"),
    (["--qps", "0", "--url", "http://127.0.0.1:9"], "--qps must be above 0"),
    (["--sweep", "--url", "http://127.0.0.1:9"], "--sweep needs an objective"),
    (["--scenario", "server", "--url", "http://127.0.0.1:9"], "needs a rate"),
    (["--url", "http://127.0.0.1:9"], "cannot reach http://127.0.0.1:9"),
    ([], "give a TARGET"),
])
def test_cli_bad_input_is_one_error_line(args, match, capsys):
    assert main(["bench", *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and match in err and len(err.strip().splitlines()) == 1


def test_cli_target_that_cannot_be_served(tmp_path, capsys):
    assert main(["bench", str(tmp_path)]) == 2
    assert "neither a frugalml run directory" in capsys.readouterr().err


# ---- a language model through the OpenAI API ----

@pytest.fixture(scope="module")
def lm(tmp_path_factory):
    from lm_models import tiny_folder

    root = tmp_path_factory.mktemp("bench_lm")
    folder, _, _ = tiny_folder(root / "tiny")
    prompts = root / "prompts.jsonl"
    prompts.write_text("\n".join(json.dumps({"prompt": " ".join(f"w{(7 * i + j) % 250}" for j in range(3 + i % 5))})
                                 for i in range(12)) + "\n")
    with running(str(folder), ServeConfig(port=0, context=256, max_batch_size=4)) as url:
        yield str(folder), url, str(prompts)


def test_lm_streaming_counts_tokens_from_usage(lm):
    folder, url, prompts = lm
    assert detect(url, {}) == ("language_model", "tiny")
    cfg = BenchConfig(scenario="offline", concurrency=3, num_requests=8, max_tokens=12, duration_s=30)
    r = bench(folder, url=url, config=cfg, data=prompts)
    run = r["result"]
    counts_add_up(run)
    assert run["completed"] == 8 and run["usage_missing"] == 0
    assert run["total_output_tokens"] == 8 * 12  # no end-of-sequence in this vocabulary: max_tokens each
    assert run["total_input_tokens"] > 0
    assert run["total_token_throughput"] == pytest.approx(
        (run["total_input_tokens"] + run["total_output_tokens"]) / run["duration"])
    # TPOT = (E2EL - TTFT) / (tokens - 1) per request, so the means obey it too
    assert run["mean_tpot_ms"] == pytest.approx((run["mean_e2el_ms"] - run["mean_ttft_ms"]) / 11, rel=1e-9)
    assert run["max_ttft_ms"] <= run["max_e2el_ms"] and run["mean_ttft_ms"] <= run["mean_ttft_content_ms"]
    assert run["n_itl"] >= 8 * 11 and run["generator"]["max_in_flight"] <= 3
    for metric in ("ttft", "tpot", "itl", "e2el"):
        ordered(run, metric)
    assert r["model"] == "tiny" and r["endpoint"] == "/v1/chat/completions" and "file" not in r


def test_lm_server_scenario_with_token_objectives(lm, capsys):
    folder, url, prompts = lm
    cfg = BenchConfig(scenario="server", qps=5, duration_s=1.5, max_tokens=6, api="completions", slo_ttft_ms=5000,
                      slo_tpot_ms=5000, min_duration_s=1, min_queries=2)
    run = bench(url=url, config=cfg, data=prompts)["result"]
    counts_add_up(run)
    assert run["validity"]["valid"], run["validity"]
    assert run["request_goodput"] == pytest.approx(run["request_throughput"])  # generous objectives: all good
    assert main(["bench", "--url", url, "--duration-s", "0.5", "--max-tokens", "4"]) == 0  # the built-in prompts
    assert "TTFT text" in capsys.readouterr().out


def test_lm_bad_prompts_file(lm, tmp_path):
    folder, url, _ = lm
    bad = tmp_path / "p.jsonl"
    bad.write_text('{"prompt": "w1"}\n{"text": "w2"}\n')
    with pytest.raises(FrugalError, match="p.jsonl:2"):
        bench(url=url, config=BenchConfig(duration_s=0.3), data=str(bad))
