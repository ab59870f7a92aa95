"""``frugal serve --replicas N``: N copies of the same app behind Ray Serve's HTTP proxy.

Each replica is a Ray Serve deployment replica that runs the very app ``create_app`` builds (routes, dynamic
batching, front door, /healthz, /metrics, errors); it loads its model once, when it starts. Ray Serve's proxy
listens on ``--host``/``--port`` and hands each request to one replica (power of two choices: of two replicas
drawn at random, the one with fewer requests in flight). Every answer carries the replica that gave it in the
``X-Frugal-Replica`` header. A replica counts as started (Ray sends it requests) only once its model is loaded
and warmed up: the app's lifespan startup waits for the load, which the one-process server does in the
background behind a 503 /healthz instead.

Executors: ``local`` starts a Ray on this machine for the purpose (and stops it on exit), ``ray:auto`` joins the
Ray that ``ray start`` runs on this machine, ``ray://HOST:PORT`` an existing cluster through Ray Client (its
nodes need frugalml and the model at the same path). Ray is imported inside functions only: the ``ray`` extra.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import time
from pathlib import Path

from ..errors import ConfigError, FrugalError, need
from ..evaluation.quality import check_ray_client
from .app import ServeConfig, create_app, is_language_model

APP_NAME = "frugal"
REPLICA_HEADER = "x-frugal-replica"
FEATURE = "frugal serve --replicas"


def parse_executor(executor: str) -> str | None:
    """``local`` -> None (a Ray started here), ``ray:auto`` -> ``auto``, ``ray://HOST:PORT`` -> itself."""
    if executor == "local":
        return None
    if executor == "ray:auto":
        return "auto"
    if executor.startswith("ray://"):
        return executor  # checked, and its port tried, by check_ray_client before Ray starts
    raise ConfigError(f"--executor {executor}: frugal serve takes local, ray:auto or ray://HOST:PORT")


class ReplicaApp:
    """The app of one replica: ``create_app``'s, plus the replica's id on every answer, and a lifespan startup
    that ends once the model is loaded (or failed to load: /healthz then says why, as in one process)."""

    def __init__(self, app, replica: str):
        self.app = app
        self.state = app.state
        self.header = (REPLICA_HEADER.encode(), replica.encode())

    async def __call__(self, scope, receive, send):
        if scope["type"] == "lifespan":
            async def started_when_loaded(message):
                if message["type"] == "lifespan.startup.complete":
                    while not (self.state.ready or self.state.load_error):
                        await asyncio.sleep(0.02)
                await send(message)

            return await self.app(scope, receive, started_when_loaded)
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def tagged(message):
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), self.header]}
            await send(message)

        return await self.app(scope, receive, tagged)


class Replica:
    """The deployment's class; Ray Serve calls ``__serve_build_asgi_app__`` once per replica, after ``__init__``."""

    def __init__(self, target: str, config: ServeConfig):
        self.target, self.config = target, config

    def __serve_build_asgi_app__(self):
        from ray import serve

        return ReplicaApp(create_app(self.target, self.config), serve.get_replica_context().replica_tag)


def deployment(replicas: int, config: ServeConfig):
    """The Ray Serve deployment of ``replicas`` copies of ``Replica``."""
    serve = need("ray.serve", FEATURE, "ray")
    # in flight per replica: enough that the replica's own queue fills first, so a flood gets its 429s
    ongoing = (config.max_batch_size or 64) + config.max_queue + 16
    return serve.deployment(serve.ingress()(Replica), name=APP_NAME, num_replicas=replicas,
                            max_ongoing_requests=ongoing, ray_actor_options={"num_cpus": 1},
                            graceful_shutdown_timeout_s=config.drain_timeout_s)


def serve_replicas(target: str, config: ServeConfig = ServeConfig(), replicas: int = 2, executor: str = "local",
                   on_listen=None, ready_timeout_s: float = 600.0) -> None:
    """Serve TARGET with ``replicas`` Ray Serve replicas until SIGTERM/SIGINT; ``on_listen(url)`` is called once
    every replica answers /healthz 200. Stops what it started (Serve, and the Ray it started) and returns."""
    if replicas < 1:
        raise ConfigError(f"--replicas must be at least 1, not {replicas}")
    address = parse_executor(executor)
    if is_language_model(target):
        raise ConfigError("--replicas serves predictors (run directories, model/ folders) only; serve a language "
                          "model with --replicas 1, or run several frugal serve processes behind a load balancer")
    create_app(target, config)  # a bad target or option: the one-process server's error, before Ray starts
    need("ray.serve", FEATURE, "ray")
    if not Path(target).is_absolute():
        target = str(Path(target).resolve())  # replicas run in other processes (other machines: the same path)
    port = config.port
    if port == 0:
        if address is not None and address.startswith("ray://"):
            raise ConfigError("--port 0 needs a Ray on this machine; with ray://HOST:PORT give the --port the "
                              "cluster's proxy should listen on")
        port = _free_port(config.host)
    if address is not None and address.startswith("ray://"):
        check_ray_client(address)
    url_host = config.host
    if url_host in ("0.0.0.0", "::", ""):
        url_host = address[len("ray://"):].rpartition(":")[0] if address and address.startswith("ray://") \
            else "127.0.0.1"
    url = f"http://{f'[{url_host}]' if ':' in url_host else url_host}:{port}"

    stopping = []

    def stop(signum, frame):  # only noted: raised inside Ray Client's gRPC calls an exception would break them
        stopping.append(signum)  # (and escape them changed); the steps below look at it between calls

    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    for s in previous:  # kept through the shutdown too: a second Ctrl-C must not cut it short
        signal.signal(s, stop)
    started, serve_started = False, False
    try:
        started = address is None
        ray = _connect(address, replicas)
        for s in previous:  # in case Ray set its own after all
            signal.signal(s, stop)
        if stopping:
            return
        from ray import serve

        before = serve.status()
        if before.proxies or before.applications:
            raise ConfigError("Ray Serve already runs on that cluster (its HTTP host and port are set once): "
                              "stop it first (serve shutdown) or give another --executor")
        free = ray.available_resources().get("CPU", 0)
        if free < replicas:
            raise ConfigError(f"--replicas {replicas} needs {replicas} free CPUs on the Ray cluster; it has {free:g}")
        if stopping:
            return
        serve_started = True
        serve.start(http_options={"host": config.host, "port": port}, logging_config={"log_level": "WARNING"})
        if stopping:
            return
        # not serve.run, which waits (minutes, while replicas load a model) for the app to run: wait_replicas
        # waits, and gives up as soon as a signal comes
        serve.run_many([serve.RunTarget(deployment(replicas, config).bind(target, config), name=APP_NAME,
                                        route_prefix="/", logging_config={"log_level": "WARNING"})],
                       wait_for_applications_running=False)
        headers = {"Authorization": f"Bearer {config.token}"} if config.token else {}
        wait_replicas(url, replicas, ready_timeout_s, headers, running=lambda: _running(serve),
                      stopped=lambda: bool(stopping), failed=lambda: _deploy_failed(serve))
        if stopping:
            return
        if on_listen is not None:
            on_listen(url)
        while not stopping:
            time.sleep(0.2)
    except SystemExit:  # a SIGTERM handler of Ray's, had one been set after all
        pass
    except FrugalError:
        if not stopping:
            raise
    except Exception as exc:  # Ray's own failures: one line, the first of its message
        if stopping:
            return
        first = (str(exc).strip().splitlines() or [""])[0]
        raise ConfigError(f"Ray Serve failed: {type(exc).__name__}: {first}") from None
    finally:
        try:
            _stop_all(started, serve_started)
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)


def wait_replicas(url: str, replicas: int, timeout_s: float, headers: dict | None = None, running=None,
                  spill_s: float = 10.0, stopped=None, failed=None) -> set:
    """Wait until ``replicas`` different replicas have answered ``url``/healthz 200 (the proxy picks one per
    request); ConfigError when one says its model failed, or when the time is up. -> the ids seen (so far, when
    ``stopped()`` says to give up).

    On a cluster of several nodes a node's proxy keeps to the replicas on its own node while they have room, so
    it may never show the others: after ``spill_s`` seconds of 200s, ``running()`` (Ray Serve's count of running
    replicas, each of which started only once its model had loaded) vouches for them. ``failed()``, asked about
    once a second, says why the app could not deploy (a replica that does not start), or None."""
    import httpx

    seen, deadline, first_ok, asked = set(), time.monotonic() + timeout_s, None, time.monotonic()
    with httpx.Client(timeout=5) as client:
        while len(seen) < replicas:
            if stopped is not None and stopped():
                break
            if first_ok is not None and running is not None and time.monotonic() - first_ok > spill_s \
                    and running() >= replicas:
                break
            if failed is not None and time.monotonic() - asked > 1:
                asked = time.monotonic()
                why = failed()
                if why:
                    raise ConfigError(f"the replicas could not start: {why}")
            try:
                r = client.get(f"{url}/healthz", headers=headers or {})
                body = r.json() if r.headers.get("content-type", "").startswith("application/json") else {}
                if r.status_code == 200 and REPLICA_HEADER in r.headers:
                    seen.add(r.headers[REPLICA_HEADER])
                    first_ok = first_ok or time.monotonic()
                elif body.get("status") == "failed":
                    raise ConfigError(f"a replica at {url} could not load its model: {body.get('error')}")
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise ConfigError(f"{len(seen)} of {replicas} replicas answered {url}/healthz within "
                                  f"{timeout_s:.0f} s")
            time.sleep(0.02 if seen else 0.1)
    return seen


def _running(serve) -> int:
    app = serve.status().applications.get(APP_NAME)
    deployment = app.deployments.get(APP_NAME) if app is not None else None
    return deployment.replica_states.get("RUNNING", 0) if deployment is not None else 0


def _deploy_failed(serve) -> str | None:
    """Why Ray Serve gave up deploying the app (the first line of its message), or None."""
    app = serve.status().applications.get(APP_NAME)
    if app is None or app.status != "DEPLOY_FAILED":
        return None
    return (str(app.message).strip().splitlines() or ["deploy failed"])[0]


def _connect(address: str | None, replicas: int):
    """-> the ray module, connected: to a new Ray on this machine (address None) or to ``address``."""
    import logging

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray = need("ray", FEATURE, "ray")
    quiet = dict(logging_level=logging.WARNING, log_to_driver=False)  # replicas log to Ray's session folder
    logging.getLogger("ray.serve").setLevel(logging.WARNING)
    if address is None:
        # address="local": a new Ray here, even where RAY_ADDRESS names a cluster
        with _no_ray_sigterm_handler(ray):
            ray.init(address="local", num_cpus=max(os.cpu_count() or 1, replicas), include_dashboard=False, **quiet)
        return ray
    try:
        with _no_ray_sigterm_handler(ray):
            ray.init(address=address, **quiet)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        first = (str(exc).strip().splitlines() or [""])[0]
        where = "no Ray runs on this machine (ray start --head)" if address == "auto" else f"{address}: {first}"
        hint = "" if os.environ.get("RAY_AUTH_MODE") else \
            " (a cluster that requires its token: export RAY_AUTH_MODE=token, token in ~/.ray/auth_token)"
        raise ConfigError(f"cannot connect to Ray: {where}{hint}") from None
    return ray


@contextlib.contextmanager
def _no_ray_sigterm_handler(ray):
    """While ``ray.init`` runs, it keeps the SIGTERM handler it finds (``serve_replicas``' own, which only notes the
    signal) instead of setting its own (``sys.exit``, raised wherever the main thread is: in Ray Client's gRPC
    calls too, which it may leave broken, and in Ray's half-started node)."""
    utils = getattr(getattr(ray, "_private", None), "utils", None)
    own = getattr(utils, "set_sigterm_handler", None)
    if own is None:  # another Ray: serve_replicas sets its handler again after ray.init
        yield
        return
    utils.set_sigterm_handler = lambda handler: None
    try:
        yield
    finally:
        utils.set_sigterm_handler = own


def _stop_all(started: bool, serve_started: bool) -> None:
    """Best effort, then always ``ray.shutdown()``: a Ray this process started stops with it (even one whose
    start failed), a cluster's stays up."""
    import sys

    ray = sys.modules.get("ray")
    if ray is None:
        return
    ours = []
    if started:  # the local Ray's processes, children of this one: none may outlive it
        import psutil

        ours = psutil.Process().children(recursive=True)
    try:
        if serve_started and ray.is_initialized():
            from ray import serve

            with contextlib.suppress(Exception):
                serve.delete(APP_NAME)  # drains the replicas (graceful_shutdown_timeout_s = --drain-timeout-s)
            if not started:
                with contextlib.suppress(Exception):
                    serve.shutdown()  # the controller and proxies this process started on the cluster
    finally:
        ray.shutdown()  # also where ray.init failed: it stops the processes it had started
        if ours:  # ... but then the raylet's agents may be left behind
            import psutil

            _, left = psutil.wait_procs(ours, timeout=5)
            for p in left:
                with contextlib.suppress(psutil.Error):
                    p.kill()


def _free_port(host: str) -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, 0))
        except OSError as exc:
            raise ConfigError(f"cannot listen on {host}: {exc.strerror}") from None
        return s.getsockname()[1]
