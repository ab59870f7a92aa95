"""frugal serve for predictors, against real servers on 127.0.0.1: answers equal frugalml.load's, dynamic
batching gathers concurrent requests, and bad input, floods, tokens and SIGTERM get the right answer."""

import asyncio
import json
import signal
import subprocess
import sys
import time

import httpx
import numpy as np
import pandas as pd
import pytest

import frugalml
from conftest import free_port, linear_data, linear_run
from frugalml.serve import ServeConfig, running
from frugalml.serve.batcher import DynamicBatcher, QueueFull


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return linear_run(tmp_path_factory.mktemp("serve") / "run")


def rows_of(df: pd.DataFrame) -> list[dict]:
    return json.loads(df.drop(columns=["label"]).to_json(orient="records"))


@pytest.fixture(scope="module")
def server(run_dir):
    with running(str(run_dir), ServeConfig(port=0, max_batch_size=64, max_wait_ms=5)) as url:
        yield url


def test_answers_equal_the_loaded_model_in_request_order(run_dir, server):
    df = linear_data(n=40, seed=5)
    df.loc[3, "x2"] = np.nan  # a missing number travels as null
    model = frugalml.load(run_dir)
    r = httpx.post(f"{server}/v1/predict", json={"rows": rows_of(df)})
    assert r.status_code == 200
    body = r.json()
    assert body["predictions"] == model.predict(df).tolist()
    np.testing.assert_allclose(body["probabilities"], model.predict_proba(df), rtol=1e-6)
    assert body["classes"] == ["no", "yes"]


def test_concurrent_requests_are_batched_and_each_gets_its_own_answer(run_dir, server):
    df = linear_data(n=96, seed=7)
    rows = rows_of(df)
    want = frugalml.load(run_dir).predict_proba(df)[:, 1]

    async def go():
        async with httpx.AsyncClient(base_url=server, limits=httpx.Limits(max_connections=96)) as c:
            return await asyncio.gather(*(c.post("/v1/predict", json={"rows": [row]}) for row in rows))

    before = batches(server)
    answers = asyncio.run(go())
    assert all(a.status_code == 200 for a in answers)
    np.testing.assert_allclose([a.json()["probabilities"][0][1] for a in answers], want, rtol=1e-6)
    calls, rows_run = (b - a for a, b in zip(before, batches(server)))
    assert rows_run == 96 and calls < 96 / 2  # gathered: far fewer runtime calls than requests


def batches(url) -> tuple[float, float]:
    """(runtime calls, rows) so far, from /metrics."""
    from prometheus_client.parser import text_string_to_metric_families

    families = {f.name: f for f in text_string_to_metric_families(httpx.get(f"{url}/metrics").text)}
    samples = {s.name: s.value for s in families["frugal_batch_size"].samples}
    return samples["frugal_batch_size_count"], samples["frugal_batch_size_sum"]


@pytest.mark.parametrize("body, status, names", [
    ({"rows": [{"x1": "a lot", "x2": 1, "x3": 0, "colour": "red", "region": "north"}]}, 422, "rows.0.x1"),
    ({"rows": [{"x1": 1, "x2": 1, "colour": "red", "region": "north"}]}, 422, "rows.0.x3"),  # missing
    ({"rows": [{"x1": 1, "x2": 1, "x3": 0, "colour": "red", "region": "north", "x9": 2}]}, 422, "rows.0.x9"),
    ({"rows": [{"x1": 1, "x2": 1, "x3": 0, "colour": ["red"], "region": "north"}]}, 422, "rows.0.colour"),
    ({"rows": []}, 422, "rows"),
    ({"rows": {"x1": 1}}, 422, "rows"),
    ({"records": []}, 422, "rows"),
    ([1, 2], 422, None),
])
def test_bad_bodies_name_the_field(server, body, status, names):
    r = httpx.post(f"{server}/v1/predict", json=body)
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert error["code"] == status and (names is None or names in error["message"])


def test_malformed_json_oversize_bodies_and_unknown_routes(server):
    r = httpx.post(f"{server}/v1/predict", content=b'{"rows": [', headers={"content-type": "application/json"})
    assert r.status_code == 400 and "JSON" in r.json()["error"]["message"]
    big = json.dumps({"rows": [{"x1": 1.0, "x2": 1.0, "x3": 0.0, "colour": "red", "region": "n"}] * 100000})
    r = httpx.post(f"{server}/v1/predict", content=big, headers={"content-type": "application/json"})
    assert r.status_code == 413 and "--max-body-bytes" in r.json()["error"]["message"]
    assert httpx.get(f"{server}/v1/nothing").status_code == 404
    assert httpx.get(f"{server}/v1/predict").status_code == 405
    row = {"x1": 1.0, "x2": 1.0, "x3": 0.0, "colour": "red", "region": "north"}
    assert httpx.post(f"{server}/v1/predict", json={"rows": [row]}).status_code == 200  # still serving


def test_the_target_column_may_ride_along_and_unseen_categories_are_answered(server):
    row = {"x1": 0.3, "x2": -1.0, "x3": 2.0, "colour": "mauve", "region": None, "label": "yes"}
    r = httpx.post(f"{server}/v1/predict", json={"rows": [row]})
    assert r.status_code == 200 and r.json()["predictions"][0] in ("yes", "no")


def test_metrics_are_prometheus_text_with_frugal_names(server):
    from prometheus_client.parser import text_string_to_metric_families

    httpx.post(f"{server}/v1/predict", json={"rows": [{"x1": 1}]})
    names = {f.name for f in text_string_to_metric_families(httpx.get(f"{server}/metrics").text)}
    assert {"frugal_requests", "frugal_request_duration_seconds", "frugal_batch_size", "frugal_queue_wait_seconds",
            "frugal_queue_depth", "frugal_requests_rejected", "frugal_inference_seconds"} <= names
    text = httpx.get(f"{server}/metrics").text
    assert 'frugal_requests_total{route="/v1/predict",status="422"}' in text


def test_a_token_is_required_when_set_and_compared_whole(run_dir):
    with running(str(run_dir), ServeConfig(port=0, token="s3cret-token")) as url:
        row = {"x1": 1.0, "x2": 1.0, "x3": 0.0, "colour": "red", "region": "north"}
        for headers in ({}, {"Authorization": "Bearer s3cret"}, {"Authorization": "Bearer s3cret-token2"},
                        {"Authorization": "s3cret-token"}):
            r = httpx.post(f"{url}/v1/predict", json={"rows": [row]}, headers=headers)
            assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
        assert httpx.get(f"{url}/metrics").status_code == 401
        assert httpx.get(f"{url}/healthz").status_code == 200  # probes need no token
        ok = httpx.post(f"{url}/v1/predict", json={"rows": [row]}, headers={"Authorization": "Bearer s3cret-token"})
        assert ok.status_code == 200


# -- the batcher alone: what it gathers, when it closes a batch, what it refuses ----------------------------------

def run_batcher(jobs, **kw):
    calls = []

    def predict(rows):
        calls.append(list(rows))
        if "bad" in rows:
            raise ValueError("bad row")
        time.sleep(0.01)
        return [f"answer {r}" for r in rows]

    async def go():
        b = DynamicBatcher(predict, **kw)
        b.start()
        try:
            return await asyncio.gather(*(b.submit(j) for j in jobs), return_exceptions=True)
        finally:
            await b.stop()

    return asyncio.run(go()), calls


def test_batches_cap_rows_not_requests_and_answers_go_back_in_order():
    jobs = [[f"{i}.{k}" for k in range(i % 3 + 1)] for i in range(20)]
    answers, calls = run_batcher(jobs, max_batch_size=5, max_wait_ms=50)
    assert answers == [[f"answer {r}" for r in j] for j in jobs]
    assert max(map(len, calls)) <= 5 and sum(map(len, calls)) == sum(map(len, jobs))
    assert len(calls) < len(jobs)


def test_a_request_larger_than_the_batch_runs_alone():
    answers, calls = run_batcher([["a"], list("bcdefgh"), ["i"]], max_batch_size=4, max_wait_ms=20)
    assert answers[1] == [f"answer {r}" for r in "bcdefgh"] and list("bcdefgh") in calls


def test_a_failing_request_fails_alone():
    answers, calls = run_batcher([["a"], ["bad"], ["c"]], max_batch_size=8, max_wait_ms=50)
    assert answers[0] == ["answer a"] and answers[2] == ["answer c"]
    assert isinstance(answers[1], ValueError)


def test_the_timer_starts_at_the_first_request():
    async def go():
        b = DynamicBatcher(lambda rows: rows, max_batch_size=100, max_wait_ms=100)
        b.start()
        t0 = time.perf_counter()
        first = asyncio.ensure_future(b.submit(["a"]))
        await asyncio.sleep(0.06)
        second = asyncio.ensure_future(b.submit(["b"]))  # joins the open batch: both answered at ~100 ms
        await asyncio.gather(first, second)
        took = time.perf_counter() - t0
        await b.stop()
        return took

    assert 0.09 < asyncio.run(go()) < 0.16


def test_a_full_queue_refuses_at_once_with_a_retry_time():
    async def go():
        b = DynamicBatcher(lambda rows: (time.sleep(0.2), rows)[1], max_batch_size=1, max_wait_ms=0, max_queue=2)
        b.start()
        pending = [asyncio.ensure_future(b.submit([0]))]
        await asyncio.sleep(0.05)  # running
        pending += [asyncio.ensure_future(b.submit([i])) for i in (1, 2)]
        await asyncio.sleep(0.01)  # two waiting: the queue is full
        t0 = time.perf_counter()
        with pytest.raises(QueueFull) as full:
            await b.submit(["late"])
        refused_in = time.perf_counter() - t0
        await asyncio.gather(*pending)
        await b.stop()
        return refused_in, full.value.retry_after_s

    refused_in, retry = asyncio.run(go())
    assert refused_in < 0.01 and retry >= 1


# -- a real `frugal serve` process: a flood, then SIGTERM -----------------------------------------------------------

def rss_mb(pid: int) -> float:
    import psutil

    return psutil.Process(pid).memory_info().rss / 2**20


@pytest.mark.slow
def test_a_flood_gets_429s_never_5xx_memory_stays_bounded_and_sigterm_exits_0(run_dir):
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "frugalml.cli", "serve", str(run_dir), "--port", str(port),
                             "--max-queue", "16", "--max-batch-size", "8"], stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        from frugalml.serve.server import wait_ready

        wait_ready(url, 60, alive=lambda: proc.poll() is None)
        row = {"x1": 1.0, "x2": 1.0, "x3": 0.0, "colour": "red", "region": "north"}

        async def flood(n=3000, clients=128):
            statuses, sem = [], asyncio.Semaphore(clients)
            async with httpx.AsyncClient(base_url=url, limits=httpx.Limits(max_connections=clients), timeout=30) as c:
                async def one(i):
                    async with sem:
                        r = await c.post("/v1/predict", json={"rows": [row] * (1 + i % 4)})
                        statuses.append((r.status_code, r.headers.get("retry-after")))
                await asyncio.gather(*(one(i) for i in range(n)))
            return statuses

        asyncio.run(flood(500))  # warm: allocator pools and caches settle
        before = rss_mb(proc.pid)
        statuses = asyncio.run(flood())
        after = rss_mb(proc.pid)
        codes = [s for s, _ in statuses]
        assert len(codes) == 3000 and set(codes) <= {200, 429}
        assert codes.count(200) > 0 and codes.count(429) > 0  # 128 clients against a queue of 16
        assert all(retry is not None and int(retry) >= 1 for s, retry in statuses if s == 429)
        assert after - before < 50, (before, after)
        assert httpx.post(f"{url}/v1/predict", json={"rows": [row]}).status_code == 200  # still serving
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def test_bad_targets_and_options_are_one_line_errors(tmp_path, capsys):
    from frugalml.cli import main

    assert main(["serve", str(tmp_path / "nowhere")]) == 2
    assert "not found" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["serve", str(tmp_path / "empty")]) == 2
    assert main(["serve", str(tmp_path / "empty"), "--max-queue", "0"]) == 2
    (tmp_path / "token").write_text("")
    assert main(["serve", str(tmp_path / "empty"), "--token-file", str(tmp_path / "token")]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and all(line.startswith("error:") for line in err.strip().splitlines())


def test_predict_with_proba_equals_predict_and_predict_proba_on_both_runtimes(run_dir):
    df = linear_data(n=30, seed=9)
    for native in (False, True):
        model = frugalml.load(run_dir, native=native)
        labels, proba = model.predict_with_proba(df)
        assert labels.tolist() == model.predict(df).tolist()
        np.testing.assert_allclose(proba, model.predict_proba(df), rtol=1e-12)


def test_the_openapi_document_declares_the_error_envelope(server):
    doc = httpx.get(f"{server}/openapi.json").json()
    responses = doc["paths"]["/v1/predict"]["post"]["responses"]
    assert {"413", "422", "429"} <= set(responses)
    ref = responses["422"]["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]
    assert set(doc["components"]["schemas"][ref]["properties"]) == {"error"}
