"""``frugal bench``: load a server the way MLPerf LoadGen and ``vllm bench serve`` do, and say what it sustained.

The target is served in this process for the run (``running``), or measured where it already runs (``url``:
frugal's own server, vLLM, llama.cpp's ``llama-server``, TGI). Its kind is asked, not assumed: a language model
lists itself at ``GET /v1/models`` (OpenAI's list), a predictor answers ``POST /v1/predict``.

Scenarios (LoadGen's names):

- ``single-stream``: one request at a time, the next sent when the previous completes (latency percentiles);
- ``offline``: every request issued at once, ``concurrency`` of them in flight (throughput);
- ``server``: open-loop Poisson arrivals at ``qps`` from a seeded generator; VALID when the objectives' p99 hold
  over a long enough run with enough queries (``bench_stats.validity``); ``sweep`` finds the highest such rate.

Each run lasts ``duration_s`` (and at most ``num_requests``), then waits for the requests in flight. The client
never retries: a 429 or 503 is counted as a rejection, anything else not 200 as a failure. The generator
measures itself: how late it sent each request (send lag), how long requests waited for a ``concurrency`` slot
(client queue time), and its own CPU time; it warns when it may have been the bottleneck.

What a run's requests add up to (metric definitions, percentiles, validity, the rate search) is ``bench_stats``;
the table is ``bench_table``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import platform
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..errors import ConfigError, DataError, need
from ..version import __version__
from . import bench_stats as bs
from .bench_stats import Shot

SCENARIOS = ("single-stream", "offline", "server")
SERVE_SETTINGS = ("max_batch_size", "max_wait_ms", "max_queue", "threads", "context")  # of the server started here
BENCH_FILE = "bench.json"


@dataclass(frozen=True)
class BenchConfig:
    """One bench: the scenario and its load, the objectives, the payload. Times in seconds, objectives in ms."""

    scenario: str = "single-stream"
    qps: float | None = None  # server: the arrival rate; with sweep, the rate the search starts from
    sweep: bool = False  # server: find the highest rate that stays VALID
    duration_s: float = 10.0
    num_requests: int | None = None  # at most this many requests per run (None: as many as the duration allows)
    concurrency: int | None = None  # requests in flight at most (offline: default 32; server: None = open loop)
    slo_p99_ms: float | None = None
    slo_ttft_ms: float | None = None
    slo_tpot_ms: float | None = None
    rows_per_request: int = 1  # predictors
    max_tokens: int = 64  # language models: fixed, temperature 0
    api: str = "chat"  # language models: "chat" (/v1/chat/completions) or "completions" (/v1/completions)
    seed: int = 0
    timeout_s: float = 120.0  # a request still unanswered after this fails
    min_duration_s: float = 10.0  # server: LoadGen's minimum run (of the arrival window)
    min_queries: int = 100  # server: LoadGen's minimum completed queries
    sweep_precision: float = 0.05  # sweep: stop bisecting when the bracket is within 5 % of its lower end
    sweep_max_runs: int = 12
    token: str | None = None  # bearer token for a server that wants one

    def check(self) -> None:
        if self.scenario not in SCENARIOS:
            raise ConfigError(f"unknown --scenario {self.scenario!r}; choose {', '.join(SCENARIOS)}")
        if self.qps is not None and not self.qps > 0:
            raise ConfigError(f"--qps must be above 0, not {self.qps}")
        if self.scenario == "server" and self.qps is None and not self.sweep:
            raise ConfigError("the server scenario needs a rate: --qps Q, or --sweep to find the highest")
        if self.scenario != "server" and (self.qps is not None or self.sweep):
            raise ConfigError(f"--qps and --sweep apply to the server scenario, not {self.scenario}")
        if self.sweep and not self.objectives.given:
            raise ConfigError("--sweep needs an objective to meet: --slo-p99-ms, or --slo-ttft-ms / --slo-tpot-ms")
        if not self.duration_s > 0 or not self.timeout_s > 0:
            raise ConfigError("--duration-s and --timeout-s must be above 0")
        for name in ("num_requests", "concurrency"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be at least 1")
        if self.rows_per_request < 1 or self.max_tokens < 1 or self.min_queries < 0 or self.min_duration_s < 0:
            raise ConfigError("--rows and --max-tokens must be at least 1, --min-queries and --min-duration-s >= 0")
        if self.api not in ("chat", "completions"):
            raise ConfigError(f"api must be chat or completions, not {self.api!r}")
        for name in ("slo_p99_ms", "slo_ttft_ms", "slo_tpot_ms"):
            if getattr(self, name) is not None and not getattr(self, name) > 0:
                raise ConfigError(f"--{name.replace('_', '-')} must be above 0")

    @property
    def objectives(self) -> bs.Objectives:
        return bs.Objectives(self.slo_p99_ms, self.slo_ttft_ms, self.slo_tpot_ms)

    @property
    def rules(self) -> bs.Rules:
        return bs.Rules(self.min_duration_s, self.min_queries)

    def to_json(self) -> dict:
        out = asdict(self)
        out.pop("token")
        return out


# ---- what is sent ----

@dataclass
class Payload:
    """The pre-encoded request bodies of one target, cycled through, and how to read the answers."""

    kind: str  # "predictor" | "language_model"
    path: str  # the route
    bodies: list[bytes]
    model: str | None = None
    rows_per_request: int = 1


def detect(url: str, headers: dict, trust_env: bool = True) -> tuple[str, str | None]:
    """-> ("language_model", model id) when GET /v1/models lists a model; ("predictor", None) when POST
    /v1/predict exists; else a ConfigError that says what was found."""
    import httpx

    try:
        with httpx.Client(base_url=url, headers=headers, timeout=10, trust_env=trust_env) as c:
            r = c.get("/v1/models")
            if r.status_code in (401, 403):
                raise ConfigError(f"{url} refused the request ({r.status_code}); give its token with --token-file")
            if r.status_code == 200:
                listing = _json(r)
                data = listing.get("data") if isinstance(listing, dict) else None
                if isinstance(data, list) and data and isinstance(data[0], dict) and "id" in data[0]:
                    return "language_model", str(data[0]["id"])
            p = c.post("/v1/predict", json={"rows": []})
            if p.status_code not in (404, 405):
                return "predictor", None
    except httpx.TransportError as exc:
        raise ConfigError(f"cannot reach {url}: {_describe(exc)}; is the server running?") from None
    raise ConfigError(f"{url} answers neither GET /v1/models (a language model) nor POST /v1/predict (a "
                      "frugalml predictor); check the URL")


def predictor_payload(frame, columns: list[str] | None, rows_per_request: int, seed: int,
                      n_bodies: int = 512) -> Payload:
    """Bodies of /v1/predict: rows sampled with replacement (seeded) from ``frame``, the model's feature
    columns when known (else every column of the data)."""
    if columns is not None:
        missing = [c for c in columns if c not in frame.columns]
        if missing:
            raise DataError(f"the data lacks column(s) {', '.join(map(repr, missing))} that the model reads")
        frame = frame[columns]
    if len(frame) == 0:
        raise DataError("the data has no rows to send")
    records = json.loads(frame.to_json(orient="records"))  # NaN -> null, numpy -> JSON numbers
    pick = np.random.default_rng(seed).integers(0, len(records), size=(n_bodies, rows_per_request))
    bodies = [json.dumps({"rows": [records[i] for i in row]}).encode() for row in pick]
    return Payload("predictor", "/v1/predict", bodies, rows_per_request=rows_per_request)


def lm_payload(model: str, prompts: list[str], config: BenchConfig) -> Payload:
    """Streaming OpenAI bodies, one per prompt in a seeded order: temperature 0, fixed max_tokens, the usage
    trailer asked for (its completion_tokens is what the token rates count)."""
    order = np.random.default_rng(config.seed).permutation(len(prompts))
    common = {"model": model, "max_tokens": config.max_tokens, "temperature": 0, "stream": True,
              "stream_options": {"include_usage": True}}
    if config.api == "chat":
        path = "/v1/chat/completions"
        bodies = [{**common, "messages": [{"role": "user", "content": prompts[i]}]} for i in order]
    else:
        path = "/v1/completions"
        bodies = [{**common, "prompt": prompts[i]} for i in order]
    return Payload("language_model", path, [json.dumps(b).encode() for b in bodies], model=model)


def read_prompts(data: str | None) -> list[str]:
    """Prompts from a JSONL file of {"prompt": ...} lines, or the engine's built-in prompt set."""
    if data is None:
        from ..runtime.lm.prompts import PROMPTS

        return [p for slice_ in PROMPTS.values() for p in slice_]
    path = Path(data)
    if not path.is_file():
        raise DataError(f"--data {data} not found; give a JSONL file of {{\"prompt\": ...}} lines")
    prompts = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError:
            raise DataError(f"{data}:{n} is not JSON; each line must be {{\"prompt\": \"...\"}}") from None
        if not isinstance(item, dict) or not isinstance(item.get("prompt"), str) or not item["prompt"].strip():
            raise DataError(f"{data}:{n} has no \"prompt\" text; each line must be {{\"prompt\": \"...\"}}")
        prompts.append(item["prompt"])
    if not prompts:
        raise DataError(f"--data {data} holds no prompt")
    return prompts


def data_of_run(folder: Path) -> str:
    """The data a run directory was made from, as decision.json records it, if it is still at hand."""
    for d in (folder, folder.parent):
        path = d / "decision.json"
        if path.is_file():
            try:
                source = json.loads(path.read_text())["data"]["source"]
            except (ValueError, KeyError, TypeError):
                break
            if isinstance(source, str) and (source.startswith("builtin:") or Path(source).is_file()):
                return source
            raise DataError(f"no --data given, and the rows the run used ({source}) are not at hand; give --data "
                            "(CSV, Parquet or builtin:NAME) with the model's columns")
    raise DataError(f"no --data given and {folder} records no data; give --data (CSV, Parquet or builtin:NAME) "
                    "with the model's columns")


# ---- sending ----

REJECTED = (429, 503)


async def _send(client, payload: Payload, i: int, shot: Shot) -> None:
    body = payload.bodies[i % len(payload.bodies)]
    headers = {"content-type": "application/json"}
    if payload.kind == "predictor":
        shot.sent = _now()
        r = await client.post(payload.path, content=body, headers=headers)
        shot.done = _now()
        _judge(shot, r.status_code, r.content)
        return
    async with client.stream("POST", payload.path, content=body, headers=headers) as r:
        if r.status_code != 200:
            content = await r.aread()
            shot.done = _now()
            return _judge(shot, r.status_code, content)
        ended = False
        async for line in r.aiter_lines():
            if not line.startswith("data:"):
                continue  # blank separators, comments (keep-alives), event names
            data = line[5:].strip()
            if data == "[DONE]":
                ended = True
                break
            now = _now()
            try:
                msg = json.loads(data)
            except json.JSONDecodeError:
                shot.error = "a stream message is not JSON"
                break
            if "error" in msg:
                err = msg["error"]
                shot.error = str(err.get("message", err) if isinstance(err, dict) else err)[:200]
                break
            if msg.get("usage"):
                shot.output_tokens = msg["usage"].get("completion_tokens")
                shot.input_tokens = msg["usage"].get("prompt_tokens")
            choices = msg.get("choices")
            if choices:
                shot.chunks.append(now)
                if shot.first_chunk is None:
                    shot.first_chunk = now
                c = choices[0]
                text = c.get("text") if "text" in c else (c.get("delta") or {}).get("content")
                if text:
                    shot.text_chunks += 1
                    if shot.first_content is None:
                        shot.first_content = now
        shot.done = _now()
        shot.status = 200
        if ended and shot.error is None and shot.chunks:
            shot.outcome = "completed"
        elif shot.error is None:
            shot.error = "the stream ended without [DONE]" if not ended else "the stream carried no token"


def _judge(shot: Shot, status: int, content: bytes) -> None:
    shot.status = status
    if status == 200:
        shot.outcome = "completed"
        return
    shot.outcome = "rejected" if status in REJECTED else "failed"
    try:
        err = json.loads(content)
        err = err.get("error", err) if isinstance(err, dict) else err
        message = (err.get("message") or err.get("detail")) if isinstance(err, dict) else err
    except ValueError:
        message = content[:200].decode("utf-8", "replace")
    shot.error = f"{status}: {str(message)[:200]}"


_now = time.perf_counter  # every time of a run (a Shot's) is read from this clock, in seconds


def _describe(exc: Exception) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class _Run:
    """One run of a scenario over an open client: fires requests, keeps their shots and the in-flight count."""

    def __init__(self, client, payload: Payload, config: BenchConfig):
        self.client, self.payload, self.config = client, payload, config
        self.shots: list[Shot] = []
        self.in_flight = self.max_in_flight = 0

    async def fire(self, shot: Shot) -> None:
        import httpx

        i = len(self.shots)
        self.shots.append(shot)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            await asyncio.wait_for(_send(self.client, self.payload, i, shot), self.config.timeout_s)
        except (asyncio.TimeoutError, httpx.TimeoutException):
            shot.outcome, shot.error = "failed", f"no answer within {self.config.timeout_s:g} s (--timeout-s)"
        except httpx.HTTPError as exc:
            shot.outcome, shot.error = "failed", _describe(exc)
        finally:
            self.in_flight -= 1
            if math.isnan(shot.sent):
                shot.sent = shot.started
            if math.isnan(shot.done):
                shot.done = _now()

    def more(self, deadline: float) -> bool:  # deadline: on the _now clock
        limit = self.config.num_requests
        return _now() < deadline and (limit is None or len(self.shots) < limit)

    async def closed_loop(self, deadline: float) -> None:
        """One worker: send, wait for the answer, send the next (single-stream; offline runs several)."""
        free_at = _now()
        while self.more(deadline):
            shot = Shot(scheduled=free_at, started=_now())
            await self.fire(shot)
            free_at = shot.done

    async def open_loop(self, t0: float, arrivals: np.ndarray) -> None:
        """Server: each request sent at its arrival time, whatever is still in flight (up to a concurrency
        limit, beyond which it waits for a slot: client queue time)."""
        slots = asyncio.Semaphore(self.config.concurrency) if self.config.concurrency else None
        tasks = []

        async def one(shot: Shot) -> None:
            shot.started = _now()
            if slots is None:
                return await self.fire(shot)
            async with slots:
                await self.fire(shot)

        for a in arrivals:
            delay = t0 + a - _now()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.ensure_future(one(Shot(scheduled=t0 + float(a)))))
        await asyncio.gather(*tasks)


def _run_label(config: BenchConfig, qps: float | None) -> str:
    return f"qps {qps:g}: " if qps is not None else f"{config.scenario}: "


async def _tick(run: _Run, config: BenchConfig, qps: float | None, t0: float, progress, every_s: float = 0.2):
    """Report a run while it lasts: requests done of --num-requests, else seconds of --duration-s."""
    head = _run_label(config, qps)
    while True:
        finished = len(run.shots) - run.in_flight
        if config.num_requests is not None:
            done, total = finished, config.num_requests
        else:
            done, total = min(_now() - t0, config.duration_s), config.duration_s
        tail = f", {run.in_flight} in flight" if run.in_flight else ""
        progress("run", done, total, f"{head}{finished} requests{tail}")
        await asyncio.sleep(every_s)


async def _run_once(url: str, headers: dict, trust_env: bool, payload: Payload, config: BenchConfig,
                    qps: float | None, progress=None) -> dict:
    import httpx

    open_ended = config.scenario == "server" and not config.concurrency
    limits = httpx.Limits(max_connections=None if open_ended else (config.concurrency or 32),
                          max_keepalive_connections=1000)
    transport = httpx.AsyncHTTPTransport(retries=0, limits=limits)  # no retries: a rejection is counted
    timeout = httpx.Timeout(config.timeout_s, connect=10)
    async with httpx.AsyncClient(base_url=url, headers=headers, transport=transport, timeout=timeout,
                                 follow_redirects=False, trust_env=trust_env) as client:
        probe = Shot(scheduled=_now(), started=_now())  # checks the body is accepted and opens a connection
        try:
            await asyncio.wait_for(_send(client, payload, 0, probe), config.timeout_s)
        except (asyncio.TimeoutError, httpx.HTTPError) as exc:
            probe.error = _describe(exc) if not isinstance(exc, asyncio.TimeoutError) else "no answer in time"
        if probe.outcome != "completed":
            raise ConfigError(f"the server at {url} did not answer a first request to {payload.path} properly "
                              f"({probe.error}); nothing was measured")
        run = _Run(client, payload, config)
        cpu0, t0 = time.thread_time(), _now()
        window, deadline = config.duration_s, t0 + config.duration_s
        ticker = asyncio.ensure_future(_tick(run, config, qps, t0, progress)) if progress else None
        if config.scenario == "single-stream":
            await run.closed_loop(deadline)
        elif config.scenario == "offline":
            await asyncio.gather(*(run.closed_loop(deadline) for _ in range(config.concurrency or 32)))
        else:
            arrivals = bs.poisson_arrivals(qps, config.duration_s, config.seed, config.num_requests)
            if config.num_requests is not None and len(arrivals) == config.num_requests and len(arrivals):
                window = float(arrivals[-1])  # cut short by the request count
            await run.open_loop(t0, arrivals)
        elapsed = _now() - t0
        cpu = time.thread_time() - cpu0
        if ticker is not None:
            ticker.cancel()
            total = config.num_requests if config.num_requests is not None else config.duration_s
            progress("run", total, total, f"{_run_label(config, qps)}{len(run.shots)} requests")
    return bs.summarize(run.shots, elapsed, config, payload.kind, payload.rows_per_request, qps=qps, window_s=window,
                        cpu_s=cpu, max_in_flight=run.max_in_flight)


# ---- the whole bench ----

def bench(target: str | None = None, *, url: str | None = None, config: BenchConfig = BenchConfig(),
          data: str | None = None, serve_config=None, out: str | Path | None = None, progress=None) -> dict:
    """Measure TARGET (served here for the run) or the server at ``url``; -> the bench.json dict, also written
    into the run directory when TARGET is one, or to ``out`` (a folder, or a file ending in .json).

    ``progress(stage, done, total, what)``, optional: "start" while the server starts here, then "run" several
    times a second during each run (requests done of ``num_requests``, else seconds of ``duration_s``; ``what``:
    "qps 12.5: 340 requests" in the server scenario)."""
    from .app import ServeConfig, is_language_model, model_folder
    from .server import running

    config.check()
    need("httpx", "frugal bench", "serve")
    if target is None and url is None:
        raise ConfigError("give a TARGET to serve for the bench, or --url of a running server")
    folder = None if target is None or is_language_model(target) else model_folder(target)
    headers = {"Authorization": f"Bearer {config.token}"} if config.token else {}
    serve_config = serve_config or ServeConfig(port=0)
    with contextlib.ExitStack() as stack:
        in_process = url is None
        if in_process:
            if progress:
                progress("start", 0, 1, f"serving {target}")
            url = stack.enter_context(running(target, serve_config))
            if progress:
                progress("start", 1, 1, f"serving {target}")
        else:
            url = url.rstrip("/")
            if not url.startswith(("http://", "https://")):
                raise ConfigError(f"--url must start with http:// or https://, not {url!r}")
        trust_env = not in_process  # a proxy from the environment never stands between us and our own server
        kind, model = detect(url, headers, trust_env)
        payload = _payload(kind, model, folder, data, config)

        def measure(qps):
            return _run_async(lambda: _run_once(url, headers, trust_env, payload, config, qps, progress))

        result = {"frugalml_version": __version__, "command": "bench",
                  "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "target": target, "url": url,
                  "server": "in-process" if in_process else "external", "kind": kind,
                  "model": model or (_meta(folder).get("candidate") if folder else None), "endpoint": payload.path,
                  "scenario": config.scenario, "settings": config.to_json(),
                  "serve_settings": {k: getattr(serve_config, k) for k in SERVE_SETTINGS} if in_process else None,
                  "machine": {"cores": os.cpu_count(), "platform": platform.platform()}}
        if config.sweep:
            start = config.qps or max(1.0, config.min_queries / config.duration_s)
            peak, steps = bs.find_peak(lambda q: _passed(measure(q)), start, config.sweep_precision,
                                       config.sweep_max_runs)
            at_peak = next((r for q, ok, r in steps if q == peak and ok), None)
            result["sweep"] = {"start_qps": start, "peak_qps": peak,
                               "goodput": at_peak["request_goodput"] if at_peak else None,
                               "steps": [{"qps": q, "passed": ok, "result": r} for q, ok, r in steps]}
            result["result"] = at_peak
        else:
            result["result"] = measure(config.qps)
    path = bench_path(target, out)
    if path is not None:
        _write_json(path, result)
        result["file"] = str(path)
        if path.name == BENCH_FILE:  # in a run directory: its report shows the load next to what else it holds
            from ..errors import FrugalError
            from ..report.render import write_reports

            try:
                result["report"] = str(write_reports(path.parent))
            except FrugalError as exc:  # the measurement stands; say why there is no page
                result["report_error"] = str(exc)
    return result


def _run_async(make):
    """Run the coroutine ``make()`` returns to its end: here, or in a thread when this one already runs an event
    loop (a notebook)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(make())
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(lambda: asyncio.run(make())).result()


def _passed(summary: dict):
    return summary["validity"]["valid"], summary


def _payload(kind: str, model: str | None, folder: Path | None, data: str | None, config: BenchConfig) -> Payload:
    if kind == "language_model":
        return lm_payload(model, read_prompts(data), config)
    from ..data import Schema, read_table

    columns = None
    if folder is not None:
        columns = Schema.from_json(_meta(folder)["schema"]).columns
        data = data or data_of_run(folder)
    elif data is None:
        raise DataError("a predictor measured by --url alone needs --data: rows to send (CSV, Parquet or "
                        "builtin:NAME, with the model's columns)")
    frame, _, _ = read_table(data)
    return predictor_payload(frame, columns, config.rows_per_request, config.seed)


def _meta(folder: Path) -> dict:
    from ..runtime.model_dir import META

    return json.loads((folder / META).read_text())


def bench_path(target: str | None, out: str | Path | None) -> Path | None:
    """Where bench.json goes: ``out`` (a folder, or a .json file), else the run directory TARGET names."""
    if out is not None:
        out = Path(out)
        return out if out.suffix.lower() == ".json" else out / BENCH_FILE
    if target is None:
        return None
    p = Path(target)
    for d in (p, p.parent):
        if (d / "decision.json").is_file():
            return d / BENCH_FILE
    return None


def _write_json(path: Path, obj: dict) -> None:
    """Written whole or not at all: a temporary file renamed into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(obj, f, indent=2, allow_nan=False)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _json(r):
    try:
        return r.json()
    except ValueError:
        return None



