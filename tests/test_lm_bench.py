"""frugal bench-lm on a tiny random Llama folder: every measure present and sane, against references."""

import json

import pytest

import torch
import transformers  # noqa: F401  (an installed extra: a missing one fails, never skips)

from lm_models import cache_in_tmp, tiny_folder  # noqa: E402,F401  (cache_in_tmp: autouse)

KEYS = ("decode_tokens_per_s", "prefill_tokens_per_s", "ttft_ms", "tpot_ms_p50", "tpot_ms_p99", "peak_memory_mb",
        "roofline_fraction")


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return tiny_folder(tmp_path_factory.mktemp("lm") / "m")[0]


def run_json(capsys, *args):
    from frugalml.cli import main

    assert main(["bench-lm", *args, "--json", "--new-tokens", "8", "--prompts-per-slice", "1"]) == 0
    return json.loads(capsys.readouterr().out)


def test_bench_lm_plain_against_transformers(folder, capsys):
    r = run_json(capsys, str(folder), "--batch", "4", "--baseline", "hf", "--prompt", "w1 w2 w3")
    for key in KEYS:
        assert r[key] > 0, key
    assert r["tpot_ms_p50"] <= r["tpot_ms_p99"]
    assert r["roofline_fraction"] == pytest.approx(r["decode_tokens_per_s"] / r["roofline_tokens_per_s"])
    # a tiny model is far from the roofline: the fraction is a fraction
    assert 0 < r["roofline_fraction"] < 1 and 1 < r["bandwidth_gb_s"] < 10_000
    assert r["prompts"] == 6  # one per built-in slice, and the user's prompt
    assert r["baseline"]["identical_greedy_tokens"] is True and r["baseline"]["ratio"] > 0
    b = r["batched"]
    assert b["batch"] == 4 and b["generated_tokens"] > 0 and 0 < b["prefill_share"] < 1
    assert b["decode_tokens_per_s"] > 0 and 1 <= b["mean_running"] <= 4 and b["decode_ratio_to_batch1"] > 0
    assert "acceptance_rate" not in r and r["quality"]["perplexity_reference"] > 1


def test_bench_lm_quantized_and_speculative_report_quality(folder, capsys):
    r = run_json(capsys, str(folder), "--quantize", "int8", "--prompt-lookup", "2", "--batch", "2")
    assert 0 <= r["acceptance_rate"] <= 1
    # batching does not speculate: its rate is not set against speculative batch-1 rates
    assert r["batched"]["decode_tokens_per_s"] > 0 and r["batched"]["decode_ratio_to_batch1"] is None
    q = r["quality"]
    assert set(q["slices"]) >= {"qa", "summarise", "code", "chat", "extract"}
    overall = q["overall"]
    assert 0.5 < overall["top1_agreement_fraction"] <= 1 and overall["kl_mean_nats"] >= 0
    assert 0 <= overall["acceptance_rate_mean"] <= 1
    fp32 = run_json(capsys, str(folder), "--batch", "1", "--no-quality")
    assert r["weight_bytes_per_token"] < fp32["weight_bytes_per_token"] / 3.5 and "quality" not in fp32


def test_bench_lm_bad_settings(folder, capsys):
    from frugalml.cli import main

    for extra in (["--batch", "0"], ["--baseline", "vllm"], ["--new-tokens", "1"], ["--quantize", "fp8"]):
        assert main(["bench-lm", str(folder), *extra]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error:") and len(err.strip().splitlines()) == 1
