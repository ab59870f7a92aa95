"""frugal serve --replicas 2 behind Ray Serve, against a real `frugal serve` process with a local Ray (one start
for the module): answers equal frugalml.load's and the one-process server's, both replicas answer, bad requests
get the same errors, SIGTERM stops Serve and the Ray it started; bad --replicas/--executor are one-line errors.
(--executor ray:// against a `ray start --head` cluster was checked by hand: SIGTERM during the start and while
serving exits 0 and leaves no Serve on the cluster; as a test it took a minute of CI and failed now and then
to connect.)"""

import asyncio
import json
import os
import signal
import subprocess
import sys
import time

import httpx
import numpy as np
import pytest

import frugalml
from conftest import free_port, linear_data, linear_run
from frugalml.serve import ServeConfig, running
from frugalml.serve.replicas import REPLICA_HEADER

ROW = {"x1": 1.0, "x2": 1.0, "x3": 0.0, "colour": "red", "region": "north"}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return linear_run(tmp_path_factory.mktemp("serve-ray") / "run")


def rows_of(df) -> list[dict]:
    return json.loads(df.drop(columns=["label"]).to_json(orient="records"))


@pytest.fixture(scope="module")
def cluster(run_dir, tmp_path_factory):
    """(url, the `frugal serve --replicas 2` process); the last test stops it with SIGTERM."""
    pytest.importorskip("ray.serve")
    port = free_port()
    log = tmp_path_factory.mktemp("serve-ray-log") / "stderr.txt"
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    with open(log, "w") as err:
        proc = subprocess.Popen([sys.executable, "-m", "frugalml.cli", "serve", str(run_dir), "--replicas", "2",
                                 "--port", str(port), "--max-wait-ms", "5"], stderr=err, env=env, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while f"at {url} " not in log.read_text():  # printed once every replica answered /healthz 200
            assert proc.poll() is None, log.read_text()[-2000:]
            assert time.monotonic() < deadline, log.read_text()[-2000:]
            time.sleep(0.2)
        yield url, proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.fixture(scope="module")
def single(run_dir):
    with running(str(run_dir), ServeConfig(port=0, max_wait_ms=5)) as url:
        yield url


@pytest.mark.slow
def test_ready_means_both_replicas_answer_healthz(cluster):
    url, _ = cluster
    seen = set()
    for _ in range(60):
        r = httpx.get(f"{url}/healthz")
        assert r.status_code == 200 and r.json()["status"] == "ok"
        seen.add(r.headers[REPLICA_HEADER])
        if len(seen) == 2:
            break
    assert len(seen) == 2


@pytest.mark.slow
def test_answers_equal_the_loaded_model_and_the_single_server(run_dir, cluster, single):
    url, _ = cluster
    df = linear_data(n=40, seed=5)
    df.loc[3, "x2"] = np.nan  # a missing number travels as null
    model = frugalml.load(run_dir)
    r = httpx.post(f"{url}/v1/predict", json={"rows": rows_of(df)})
    assert r.status_code == 200
    body = r.json()
    assert set(body) == {"predictions", "probabilities", "classes"}
    assert body["predictions"] == model.predict(df).tolist()
    np.testing.assert_allclose(body["probabilities"], model.predict_proba(df), rtol=1e-6)
    assert body["classes"] == ["no", "yes"]
    assert body == httpx.post(f"{single}/v1/predict", json={"rows": rows_of(df)}).json()


@pytest.mark.slow
def test_concurrent_requests_spread_over_both_replicas_and_each_gets_its_own_answer(run_dir, cluster):
    url, _ = cluster
    df = linear_data(n=64, seed=7)
    want = frugalml.load(run_dir).predict_proba(df)[:, 1]

    async def go():
        async with httpx.AsyncClient(base_url=url, limits=httpx.Limits(max_connections=64), timeout=30) as c:
            return await asyncio.gather(*(c.post("/v1/predict", json={"rows": [row]}) for row in rows_of(df)))

    answers = asyncio.run(go())
    assert all(a.status_code == 200 for a in answers)
    np.testing.assert_allclose([a.json()["probabilities"][0][1] for a in answers], want, rtol=1e-6)
    by_replica = {}
    for a in answers:
        by_replica[a.headers[REPLICA_HEADER]] = by_replica.get(a.headers[REPLICA_HEADER], 0) + 1
    assert len(by_replica) == 2, by_replica


@pytest.mark.slow
def test_bad_requests_get_the_single_servers_errors(cluster, single):
    url, _ = cluster
    big = json.dumps({"rows": [ROW] * 100000})
    cases = [
        ("POST", "/v1/predict", {"json": {"rows": [{**ROW, "x1": "a lot"}]}}),
        ("POST", "/v1/predict", {"json": {"rows": [{**ROW, "x9": 2}]}}),
        ("POST", "/v1/predict", {"json": {"rows": []}}),
        ("POST", "/v1/predict", {"content": b'{"rows": [', "headers": {"content-type": "application/json"}}),
        ("POST", "/v1/predict", {"content": big, "headers": {"content-type": "application/json"}}),
        ("GET", "/v1/nothing", {}),
        ("GET", "/v1/predict", {}),
    ]
    for method, path, kw in cases:
        mine, theirs = httpx.request(method, f"{url}{path}", **kw), httpx.request(method, f"{single}{path}", **kw)
        assert 400 <= mine.status_code < 500 and mine.status_code == theirs.status_code, (path, mine.text)
        assert mine.json() == theirs.json()
    from prometheus_client.parser import text_string_to_metric_families

    metrics = httpx.get(f"{url}/metrics")  # one replica's own counts, as one process's
    assert REPLICA_HEADER in metrics.headers
    assert "frugal_requests" in {f.name for f in text_string_to_metric_families(metrics.text)}


@pytest.mark.slow
def test_sigterm_stops_serve_and_the_ray_it_started_and_exits_0(cluster):  # last: it stops the module's server
    import psutil

    url, proc = cluster
    started = psutil.Process(proc.pid).children(recursive=True)  # gcs_server, raylet, the replicas, ...
    names = " ".join(p.name() for p in started)
    assert "raylet" in names and names.count("ServeRepli") == 2, names
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 0
    gone, alive = psutil.wait_procs(started, timeout=10)
    assert not alive, [p.info if hasattr(p, "info") else p.pid for p in alive]
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{url}/healthz", timeout=2)


def test_bad_replicas_and_executors_are_one_line_errors(run_dir, capsys):
    from frugalml.cli import main
    from frugalml.errors import ConfigError
    from frugalml.serve.replicas import serve_replicas

    errs = []
    for args, says in ((["--replicas", "0"], "--replicas must be at least 1"),
                       (["--replicas", "2", "--executor", "spark://somewhere:7077"], "ray://HOST:PORT"),
                       (["--replicas", "2", "--executor", "ray://nowhere"], "ray://HOST:PORT"),
                       (["--replicas", "2", "--executor", f"ray://127.0.0.1:{free_port()}"], "cannot reach Ray")):
        assert main(["serve", str(run_dir), *args]) == 2
        errs.append(capsys.readouterr().err)
        assert says in errs[-1] and len(errs[-1].strip().splitlines()) == 1, errs[-1]
    assert all(e.startswith("error:") and "Traceback" not in e for e in errs)
    with pytest.raises(ConfigError, match="predictors"):
        serve_replicas("model.gguf", ServeConfig(), 2)
