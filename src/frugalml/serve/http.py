"""The server's front door, as one pure-ASGI middleware (no ``BaseHTTPMiddleware``: it hides client
disconnects from streaming responses): bearer token, body size limit, refusal while draining, and the
per-route request counts and latencies. Every refusal is a JSON error in OpenAI's envelope,
``{"error": {"message", "type", "param", "code"}}``, which the stock ``openai`` client reads.
"""

from __future__ import annotations

import hmac
import json
import time

OPEN_PATHS = ("/healthz",)  # answered without the token: load balancers probe it


def error_body(status: int, message: str, kind: str = "invalid_request_error", param: str | None = None) -> bytes:
    return json.dumps({"error": {"message": message, "type": kind, "param": param, "code": status}}).encode()


async def send_error(send, status: int, message: str, kind: str = "invalid_request_error",
                     headers: dict[str, str] | None = None) -> None:
    body = error_body(status, message, kind)
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


class FrontDoor:
    """Wraps the FastAPI app. ``state`` is the app's ``ServerState`` (token, limits, metrics, draining)."""

    def __init__(self, app, state):
        self.app = app
        self.state = state

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        st = self.state
        path = scope["path"]
        route = path if path in st.routes else "other"  # unknown paths share one label: bounded cardinality
        t0 = time.perf_counter()
        status = {"code": 500}

        async def counted_send(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            refusal = self._refusal(scope, path)
            if refusal is not None:
                code, reason, message, headers = refusal
                st.metrics.rejected.labels(reason).inc()
                await send_error(counted_send, code, message, _KIND[code], headers)
                return
            limited = await self._bounded_body(scope, receive)
            if limited is None:
                st.metrics.rejected.labels("body_too_large").inc()
                await send_error(counted_send, 413, f"the request body exceeds {st.max_body_bytes} bytes "
                                 "(--max-body-bytes); send fewer rows per request", "invalid_request_error")
                return
            await self.app(scope, limited, counted_send)
        finally:
            st.metrics.requests.labels(route, str(status["code"])).inc()
            st.metrics.latency.labels(route).observe(time.perf_counter() - t0)

    def _refusal(self, scope, path):
        st = self.state
        if st.token is not None and path not in OPEN_PATHS:
            given = dict(scope["headers"]).get(b"authorization", b"")
            if not hmac.compare_digest(given, b"Bearer " + st.token.encode()):  # constant time
                return 401, "unauthorized", "a valid bearer token is required (Authorization: Bearer ...)", \
                    {"WWW-Authenticate": "Bearer"}
        if st.draining and path not in OPEN_PATHS and path != "/metrics":
            return 503, "draining", "the server is shutting down; retry on another replica", {"Retry-After": "1"}
        return None

    async def _bounded_body(self, scope, receive):
        """Read the body up to the limit, then replay it to the app; None when it is larger."""
        limit = self.state.max_body_bytes
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            return None
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":  # the client left before sending it all
                return _replay([message], receive)
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                return None
            chunks.append(chunk)
            more = message.get("more_body", False)
        return _replay([{"type": "http.request", "body": b"".join(chunks), "more_body": False}], receive)


def _replay(messages, receive):
    """An ASGI receive that gives the buffered messages first, then the client's (its disconnect)."""
    queued = list(messages)

    async def replay():
        if queued:
            return queued.pop(0)
        return await receive()

    return replay


_KIND = {400: "invalid_request_error", 401: "authentication_error", 404: "not_found_error",
         413: "invalid_request_error", 422: "invalid_request_error", 429: "rate_limit_error",
         503: "service_unavailable"}


class APIError(Exception):
    """An answer other than 200, with OpenAI's error envelope."""

    def __init__(self, status: int, message: str, param: str | None = None, headers: dict | None = None,
                 kind: str | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.headers = status, message, param, headers or {}
        self.kind = kind or _KIND.get(status, "server_error")


def check_ready(state) -> None:
    if not state.ready:
        raise APIError(503, state.load_error or "the model is still loading; retry shortly",
                       headers={"Retry-After": "1"})


def retry_after(seconds: float) -> dict:
    return {"Retry-After": str(max(1, round(seconds))), "retry-after-ms": str(max(1, round(1000 * seconds)))}


def error_responses(*codes: int) -> dict:
    """The OpenAPI ``responses`` of a route: each refusal it may give, in the error envelope."""
    from pydantic import BaseModel

    class ErrorDetail(BaseModel):
        message: str
        type: str
        param: str | None = None
        code: int

    class ErrorBody(BaseModel):
        error: ErrorDetail

    return {code: {"model": ErrorBody, "description": _DESCRIBED.get(code, "refused")} for code in codes}


_DESCRIBED = {400: "the request cannot be served (e.g. prompt + max_tokens beyond the context)",
              401: "no valid bearer token", 404: "no such model", 413: "body too large",
              422: "the body does not match the schema; param names the field", 429: "queue full; see Retry-After",
              500: "the engine failed on this request", 503: "loading or draining; see Retry-After"}
