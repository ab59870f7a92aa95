"""Running the app: ``serve`` in the foreground (``frugal serve``), ``running`` in a thread (tests, ``frugal bench``).

Shutdown on SIGTERM or Ctrl-C: the listener closes, requests that arrive on open connections get 503, the ones in
flight finish (streams included) for at most ``drain_timeout_s``; then uvicorn cancels what is left, the model
is released, and the process exits 0.
"""

from __future__ import annotations

import contextlib
import signal
import socket
import threading
import time

from ..errors import ConfigError, need
from .app import ServeConfig, create_app


def _server(app, config: ServeConfig):
    uvicorn = need("uvicorn", "frugal serve", "serve")

    class Server(uvicorn.Server):
        def handle_exit(self, sig, frame):  # the first signal starts the drain
            app.state.draining = True
            drain = getattr(app.state, "on_drain", None)
            if drain is not None:
                drain(config.drain_timeout_s)
            super().handle_exit(sig, frame)

    cfg = uvicorn.Config(app, host=config.host, port=config.port, log_level="warning", access_log=False,
                         timeout_graceful_shutdown=config.drain_timeout_s, lifespan="on")
    return Server(cfg)


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on sockets that say they are TCP; without it Nagle's
    # algorithm and the client's delayed ACK (Linux: 40 ms) held back every answer on a reused connection: a
    # single-stream median of 48 ms became 5.7 ms (frugal bench --scenario single-stream, tiny predictor)
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def serve(target: str, config: ServeConfig = ServeConfig(), on_listen=None) -> None:
    """Serve TARGET until SIGTERM/SIGINT; ``on_listen(url)`` is called once the socket listens."""
    app = create_app(target, config)
    sock = _bind(config.host, config.port)
    server = _server(app, config)
    if on_listen is not None:
        host, port = sock.getsockname()[:2]
        on_listen(f"http://{_url_host(host)}:{port}")
    # uvicorn raises the signal it caught again once it has drained; a SIGTERM that drained is a clean exit (0)
    previous = signal.signal(signal.SIGTERM, lambda *_: None)
    try:
        server.run(sockets=[sock])
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def running(target: str, config: ServeConfig = ServeConfig(port=0), ready_timeout_s: float = 600.0):
    """Serve TARGET on a free port in a background thread; yields the base URL once /healthz says ready."""
    app = create_app(target, config)
    sock = _bind(config.host, config.port)
    server = _server(app, config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True, name="frugal-serve")
    thread.start()
    host, port = sock.getsockname()[:2]
    url = f"http://{_url_host(host)}:{port}"
    headers = {"Authorization": f"Bearer {config.token}"} if config.token else {}
    try:
        wait_ready(url, ready_timeout_s, headers, lambda: thread.is_alive())
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=config.drain_timeout_s + 10)
        sock.close()


def wait_ready(url: str, timeout_s: float, headers: dict | None = None, alive=lambda: True,
               health: str = "/healthz") -> None:
    """Wait until ``url + health`` answers 200 (llama.cpp's server: ``/health``); ConfigError when the server
    says it failed, ``alive()`` turns false, or the time is up."""
    import httpx

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            r = httpx.get(f"{url}{health}", headers=headers or {}, timeout=5)
            if r.status_code == 200:
                return
            body = r.json() if r.headers.get("content-type", "").startswith("application/json") else {}
            if body.get("status") == "failed":
                raise ConfigError(f"the server at {url} could not load its model: {body.get('error')}")
        except httpx.TransportError:
            pass
        if not alive() or time.monotonic() > deadline:
            raise ConfigError(f"the server at {url} did not become ready within {timeout_s:.0f} s")
        time.sleep(0.05)


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host
