"""``frugal serve``'s application: a FastAPI app over one model, a predictor or a language model.

TARGET is a run directory or ``model/`` folder (``POST /v1/predict``, dynamic batching) or a language model
(``builtin:smollm2``, a ``.gguf``, a local Hugging Face folder: the OpenAI-shaped routes of ``lm.py`` over the
continuous-batching engine). The model loads in the background once the server listens: ``GET /healthz``
answers 503 until it is loaded and warmed up, then 200, so a load balancer sends nothing to a cold replica.
"""

import asyncio
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ConfigError, FrugalError, ModelError, need
from ..runtime.model_dir import META
from ..version import __version__
from .http import APIError, FrontDoor, check_ready, error_body, error_responses, retry_after
from .metrics import Metrics


@dataclass(frozen=True)
class ServeConfig:
    host: str = "127.0.0.1"
    port: int = 8000
    max_batch_size: int | None = None  # rows per runtime call (predictors: 64) / sequences running (LMs: 16)
    max_wait_ms: float = 2.0  # predictors: longest a batch waits for more rows after its first request
    max_queue: int = 256  # requests waiting beyond the running batch before 429
    max_body_bytes: int = 4 << 20
    token: str | None = None  # bearer token; None = open
    drain_timeout_s: float = 30.0  # on SIGTERM: longest wait for requests in flight
    threads: int | None = None  # predictors: ONNX Runtime intra-op threads (None: its default)
    context: int = 2048  # language models: tokens per sequence (prompt + max_tokens), sizes the KV cache
    engine: object = None  # language models: runtime.lm.engine.EngineConfig

    def check(self) -> None:
        if self.max_batch_size is not None and self.max_batch_size < 1:
            raise ConfigError(f"--max-batch-size must be at least 1, not {self.max_batch_size}")
        if self.max_wait_ms < 0 or self.max_queue < 1 or self.max_body_bytes < 1024 or self.context < 16:
            raise ConfigError("--max-wait-ms must be >= 0, --max-queue >= 1, --max-body-bytes >= 1024 and "
                              "--context >= 16")
        if not 0 <= self.port < 65536:
            raise ConfigError(f"--port must be in 0..65535, not {self.port}")


@dataclass
class ServerState:
    """What the front door and the routes share."""

    config: ServeConfig
    metrics: Metrics
    routes: set = field(default_factory=set)
    ready: bool = False
    draining: bool = False
    load_error: str | None = None
    on_drain: object = None  # called with the drain timeout when shutdown starts (language models end streams)
    started_s: float = field(default_factory=time.time)

    @property
    def token(self):
        return self.config.token

    @property
    def max_body_bytes(self):
        return self.config.max_body_bytes


def is_language_model(target: str) -> bool:
    p = Path(target)
    return target.startswith("builtin:") or p.suffix.lower() == ".gguf" or (p / "config.json").exists()


def model_folder(target: str) -> Path:
    p = Path(target)
    if (p / "model" / META).exists():
        return p / "model"
    if (p / META).exists():
        return p
    if not p.exists():
        raise ModelError(f"{target} not found; give a run directory, a model/ folder, builtin:smollm2, a .gguf file "
                         "or a Hugging Face folder")
    raise ModelError(f"{target} is neither a frugalml run directory or model folder (no {META}) nor a language model")


def create_app(target: str, config: ServeConfig = ServeConfig()):
    """The ASGI app serving TARGET (the front door around a FastAPI app)."""
    need("fastapi", "frugal serve", "serve")
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse, Response
    from starlette.exceptions import HTTPException as StarletteHTTPException

    config.check()
    lm = is_language_model(target)
    folder = None if lm else model_folder(target)
    state = ServerState(config, Metrics())
    jobs = {}

    async def lifespan(app):
        jobs["load"] = asyncio.get_running_loop().create_task(load())
        yield
        jobs["load"].cancel()
        if "service" in jobs:
            await jobs["service"].stop()

    app = FastAPI(title="frugalml", version=__version__, lifespan=lifespan,
                  description=f"Serving {target} with frugalml.")
    app.state.frugal = state

    if lm:
        from .lm import LMService, add_routes

        service = LMService(target, config, state.metrics)
        add_routes(app, service, state)
    else:
        from ..data import Schema
        from .batcher import QueueFull
        from .predict import PredictorService, answer

        try:
            schema = Schema.from_json(json.loads((folder / META).read_text())["schema"])
        except (ValueError, KeyError) as exc:
            raise ModelError(f"{folder / META} is damaged ({type(exc).__name__}); re-run frugal select") from None
        service = PredictorService(folder, schema, config, state.metrics)
        Body = service.body

        @app.post("/v1/predict", summary="Predict rows (dynamic batching).",
                  responses=error_responses(400, 401, 413, 422, 429, 503))
        async def predict(body: Body):
            check_ready(state)
            try:
                per_row = await service.batcher.submit(body.rows)
            except QueueFull as full:
                state.metrics.rejected.labels("queue_full").inc()
                raise APIError(429, "the queue is full; retry later", headers=retry_after(full.retry_after_s))
            except FrugalError as exc:
                raise APIError(422, str(exc))
            return JSONResponse(answer(service.model, per_row))

    async def load():
        try:
            await asyncio.to_thread(service.load)
            await service.start()
            jobs["service"] = service
            state.ready = True
        except FrugalError as exc:
            state.load_error = str(exc)
        except Exception as exc:  # reported by /healthz; the server stays up to say so
            state.load_error = f"{type(exc).__name__}: {exc}"

    @app.get("/healthz", summary="200 once the model is loaded and warmed up, 503 before.")
    async def healthz():
        if state.load_error:
            return JSONResponse({"status": "failed", "error": state.load_error}, status_code=503)
        if state.draining:
            return JSONResponse({"status": "draining"}, status_code=503)
        if state.ready and not getattr(service, "alive", True):
            return JSONResponse({"status": "failed", "error": "the engine's worker stopped"}, status_code=503)
        if not state.ready:
            return JSONResponse({"status": "loading"}, status_code=503)
        return {"status": "ok", "model": target, "uptime_s": round(time.time() - state.started_s, 1)}

    @app.get("/metrics", summary="Prometheus text.")
    async def metrics():
        return Response(state.metrics.text(), media_type=state.metrics.content_type)

    @app.exception_handler(APIError)
    async def api_error(request: Request, exc: APIError):
        return Response(error_body(exc.status, exc.message, exc.kind, exc.param), exc.status, exc.headers,
                        media_type="application/json")

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        errors = exc.errors() or [{"loc": (), "msg": "invalid request", "type": ""}]
        if errors[0].get("type") == "json_invalid":
            return Response(error_body(400, f"the body is not valid JSON: {errors[0].get('msg')}"), 400,
                            media_type="application/json")
        # a union (number or null, ...) reports one error per member: name the field once, with the last
        by_field = {}
        for e in errors:
            loc = [str(x) for x in e.get("loc", ()) if x != "body" and str(x) not in _UNION_TAGS]
            by_field[".".join(loc)] = e.get("msg", "invalid")
        param, msg = next(iter(by_field.items()))
        message = f"{param}: {msg}" if param else msg
        if len(by_field) > 1:
            message += f" (and {len(by_field) - 1} more)"
        return Response(error_body(422, message, param=param or None), 422, media_type="application/json")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):  # 404, 405 in the same envelope
        return Response(error_body(exc.status_code, str(exc.detail), "not_found_error" if exc.status_code == 404
                                   else "invalid_request_error"), exc.status_code, getattr(exc, "headers", None),
                        media_type="application/json")

    @app.exception_handler(Exception)
    async def failure(request: Request, exc: Exception):  # a bug of ours: say so, briefly, and keep serving
        return Response(error_body(500, f"internal failure: {type(exc).__name__}", "server_error"), 500,
                        media_type="application/json")

    state.routes = {r.path for r in app.routes}
    return FrontDoor(app, state)


_UNION_TAGS = {"int", "float", "str", "bool", "none", "list[int]", "list[str]", "list[TextPart]"}



