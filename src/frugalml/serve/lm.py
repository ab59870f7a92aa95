"""Language models behind the OpenAI API: ``/v1/completions``, ``/v1/chat/completions``, ``/v1/models``.

One worker thread owns the engine and is the only one to touch torch: it admits new requests into the
continuous batch (``runtime.lm.batching.BatchEngine``) and steps it, one token for every running request per
step. Tokens travel to the event loop with ``call_soon_threadsafe`` into each request's queue; the event loop
turns them into text (the whole continuation decoded each time, printed from where it stopped, as ``frugal
generate`` does, so a multi-byte character is never split) and into server-sent events. A client that leaves
cancels its request: the engine frees its row at the next step. With ``--draft`` or ``--prompt-lookup`` the
engine speculates, which it does one request at a time: requests then run in arrival order.

``temperature: 0`` gives the tokens ``frugal generate`` prints for the same prompt and engine options: the
batch engine gives every request the tokens it gets alone (``tests/test_lm_batching.py``), and the chat route
applies the same template to the same message.
"""

from __future__ import annotations

import asyncio
import json
import queue
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Optional, Union

from fastapi import Request
from pydantic import BaseModel, ConfigDict, Field

from ..errors import FrugalError
from .http import APIError, check_ready, error_body, error_responses, retry_after


# ---- the OpenAI request bodies (what is not listed is refused: 422 names the field) ----

class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    include_usage: bool = False


class _Sampling(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)  # "2" is not a number, "true" not a boolean
    model: Optional[str] = None
    max_tokens: Optional[int] = Field(None, ge=1)
    temperature: float = Field(1.0, ge=0, le=2)
    top_p: float = Field(1.0, gt=0, le=1)
    seed: Optional[int] = Field(None, ge=-2**63, le=2**64 - 1)  # what torch's generator takes
    stop: Union[str, list[str], None] = None
    stream: bool = False
    stream_options: Optional[StreamOptions] = None
    n: Literal[1] = 1
    presence_penalty: Literal[0] = 0
    frequency_penalty: Literal[0] = 0
    user: Optional[str] = None


class CompletionRequest(_Sampling):
    prompt: Union[str, list[int], list[str]] = Field(..., description="One prompt: text, or token ids.")


class TextPart(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    role: Literal["system", "developer", "user", "assistant"]
    content: Union[str, list[TextPart]]
    name: Optional[str] = None


class ChatRequest(_Sampling):
    messages: list[ChatMessage] = Field(..., min_length=1)
    max_completion_tokens: Optional[int] = Field(None, ge=1)


# ---- the engine's worker ----

@dataclass(eq=False)  # hashed by identity: the service keeps a set of them
class Job:
    prompt: list[int]
    max_tokens: int
    sampling: object
    tokens: asyncio.Queue
    arrived_s: float = field(default_factory=time.perf_counter)
    request: object = None  # the engine's Request once admitted
    cancelled: bool = False
    cut: bool = False  # ended by the drain on shutdown


class Busy(Exception):
    def __init__(self, retry_after_s: float):
        super().__init__("the queue is full")
        self.retry_after_s = retry_after_s


class LMService:
    def __init__(self, target: str, config, metrics):
        self.target, self.config, self.metrics = target, config, metrics
        self.name = model_name(target)
        self.engine = self.batch = self.loop = None
        self.inbox: queue.Queue[Job] = queue.Queue()
        self.jobs: set[Job] = set()
        self._by_request: dict[int, Job] = {}  # id(engine Request) -> its job (worker thread only)
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self.max_running = config.max_batch_size or 16
        self._seen_hits = 0
        self._request_s = 1.0  # moving average of a request's time, arrival to last token (for Retry-After)
        self.context = config.context

    # -- life cycle --
    def load(self) -> None:
        from ..runtime.lm.engine import Engine, EngineConfig

        self.engine = Engine.load(self.target, self.config.engine or EngineConfig())
        self.context = min(self.config.context, self.engine.model.spec.max_positions)
        self.eos = getattr(self.engine.tokenizer, "eos_token_id", None)
        if not self.engine.config.speculative:
            self._new_batch()

    def _new_batch(self) -> None:
        from ..runtime.lm.batching import BatchEngine

        self.batch = BatchEngine(self.engine.model, max_batch=self.max_running, max_len=self.context)
        prefix = chat_prefix(self.engine.tokenizer)
        if prefix:  # every chat request starts with it: its K/V are computed once
            self.batch.cache_prefix(prefix)

    async def start(self) -> None:
        from ..runtime.lm.generate import SamplingConfig

        self.loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._work, name="frugal-lm", daemon=True)
        self._thread.start()
        warm = self.submit(self.engine.encode("Hello"), 2, SamplingConfig())  # first calls pay one-off costs
        while not isinstance(await warm.tokens.get(), str):
            pass

    async def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join, 30)

    def drain(self, timeout_s: float) -> None:
        """Shutdown started: requests in flight may finish, but end every one a second before the timeout so
        each stream closes with its last chunk and [DONE] rather than a cut connection."""
        def cut():
            for job in list(self.jobs):
                job.cut = True
                self.cancel(job)

        self.loop.call_soon_threadsafe(self.loop.call_later, max(0.0, timeout_s - 1.0), cut)

    # -- requests --
    @property
    def waiting(self) -> int:
        return self.inbox.qsize() + (len(self.batch.waiting) if self.batch is not None else 0)

    def submit(self, prompt: list[int], max_tokens: int, sampling) -> Job:
        if self.waiting >= self.config.max_queue:  # the queue drains a batch of requests per request time
            raise Busy(max(1.0, self.waiting / self.max_running * self._request_s))
        job = Job(prompt, max_tokens, sampling, asyncio.Queue())
        self.jobs.add(job)
        self.metrics.prompt_tokens.inc(len(prompt))
        self.inbox.put(job)
        return job

    def cancel(self, job: Job) -> None:
        job.cancelled = True
        if job.request is not None and self.batch is not None:
            self.batch.cancel(job.request)

    def _push(self, job: Job, item) -> None:
        try:
            self.loop.call_soon_threadsafe(job.tokens.put_nowait, item)
        except RuntimeError:  # the loop is closed: the server is gone
            pass

    def _finish(self, job: Job, reason: str, token_s: list[float]) -> None:
        self.jobs.discard(job)
        if token_s and reason != "cancelled":
            self._request_s = 0.9 * self._request_s + 0.1 * (token_s[-1] - job.arrived_s)
        self.metrics.observe_generation(job.arrived_s, token_s)
        self.metrics.generation_tokens.inc(len(token_s))
        self.metrics.finished.labels(reason).inc()
        self._push(job, reason)  # a str ends the token stream

    def _work(self) -> None:
        import torch

        with torch.inference_mode():
            while not self._stop.is_set():
                try:
                    if self.batch is None:
                        self._one_at_a_time()
                    else:
                        self._step_batch()
                except Exception:  # a bug of ours: fail the requests in flight, serve the next ones afresh
                    for job in list(self._by_request.values()):
                        self._finish(job, "error", [])
                    self._by_request.clear()
                    if self.batch is not None:
                        self._new_batch()

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _step_batch(self) -> None:
        from ..runtime.lm.batching import Request

        busy = self.batch.busy
        try:
            while True:
                job = self.inbox.get(timeout=0.05) if not busy else self.inbox.get_nowait()
                busy = True
                if job.cancelled:
                    self._finish(job, "cancelled", [])
                    continue
                job.request = Request(job.prompt, job.max_tokens, job.sampling, self.eos,
                                      on_token=lambda t, j=job: self._push(j, t))
                self._by_request[id(job.request)] = job
                self.batch.submit(job.request)
                if job.cancelled:  # cancelled between the check and the submit
                    self.batch.cancel(job.request)
        except queue.Empty:
            pass
        if self.batch.busy:
            for r in self.batch.step():
                self._finish(self._by_request.pop(id(r)), r.finish_reason, r.token_s)
        self.metrics.running.set(len(self.batch.running))
        self.metrics.waiting.set(self.waiting)
        self.metrics.prefix_hits.inc(self.batch.prefix_hits - self._seen_hits)
        self._seen_hits = self.batch.prefix_hits

    def _one_at_a_time(self) -> None:
        """Speculative decoding: one request at a time, in arrival order."""
        try:
            job = self.inbox.get(timeout=0.05)
        except queue.Empty:
            return
        if job.cancelled:
            return self._finish(job, "cancelled", [])
        times: list[float] = []

        def on_token(token: int) -> None:
            if job.cancelled:
                raise _Cancelled
            times.append(time.perf_counter())
            self._push(job, token)

        self.metrics.running.set(1)
        self.metrics.waiting.set(self.inbox.qsize())
        self._by_request[id(job)] = job
        try:
            out, _ = self.engine.generate(job.prompt, job.max_tokens, job.sampling, on_token=on_token)
            reason = "stop" if out.tokens and out.tokens[-1] == self.eos else "length"
        except _Cancelled:
            reason = "cancelled"
        del self._by_request[id(job)]
        self.metrics.running.set(0)
        self._finish(job, reason, times)


class _Cancelled(Exception):
    pass


class EngineFailure(Exception):
    """The engine failed while this request was in flight (a bug): 500, or an error event mid-stream."""


_FAILED = "the engine failed on this request; it serves the next ones"


def model_name(target: str) -> str:
    if target.startswith("builtin:"):
        return target.split(":", 1)[1]
    return Path(target.rstrip("/")).stem or target


# ---- text from tokens ----

class TextStream:
    """Token ids -> text deltas, holding back what could be the start of a stop string."""

    def __init__(self, tokenizer, stops: list[str]):
        self.tokenizer, self.stops = tokenizer, [s for s in stops if s]
        self.ids: list[int] = []
        self.text = ""  # the text decided so far (sent or to send)
        self.stopped = False
        self._hold = max((len(s) for s in self.stops), default=1) - 1

    def add(self, token: int) -> str:
        self.ids.append(token)
        text = self.tokenizer.decode(self.ids, skip_special_tokens=True)
        if not text.startswith(self.text) or text.endswith("\ufffd"):  # a character still incomplete
            return ""
        return self._advance(text, final=False)

    def finish(self) -> str:
        if self.stopped:
            return ""
        return self._advance(self.tokenizer.decode(self.ids, skip_special_tokens=True), final=True)

    def _advance(self, text: str, final: bool) -> str:
        hits = [i for i in (text.find(s, max(0, len(self.text) - self._hold)) for s in self.stops) if i >= 0]
        if hits:
            text, self.stopped = text[:min(hits)], True
        elif not final and self._hold:
            text = text[:max(len(self.text), len(text) - self._hold)]
        if not text.startswith(self.text):
            return ""
        delta, self.text = text[len(self.text):], text
        return delta


# ---- routes ----

def add_routes(app, service: LMService, state) -> None:
    from fastapi.responses import JSONResponse, StreamingResponse

    from ..runtime.lm.generate import SamplingConfig

    state.on_drain = lambda timeout: service.drain(timeout) if service.loop is not None else None

    def prepare(body: _Sampling, prompt: list[int], default_max: int | None):
        check_ready(state)
        if body.model not in (None, service.name):
            raise APIError(404, f"model {body.model!r} is not served here; this server serves {service.name!r}",
                           param="model", kind="not_found_error")
        if not prompt:
            raise APIError(400, "the prompt is empty; give some text", param="prompt")
        room = service.context - len(prompt)
        max_tokens = getattr(body, "max_completion_tokens", None) or body.max_tokens or default_max or room
        if len(prompt) + max_tokens > service.context:
            raise APIError(400, f"the prompt ({len(prompt)} tokens) + max_tokens ({max_tokens}) exceed the "
                           f"context of {service.context} tokens; shorten the prompt or lower max_tokens",
                           param="max_tokens")
        stops = [body.stop] if isinstance(body.stop, str) else list(body.stop or [])
        if len(stops) > 4:
            raise APIError(400, "at most 4 stop sequences", param="stop")
        sampling = SamplingConfig(body.temperature, body.top_p, body.seed)
        try:
            job = service.submit(prompt, max_tokens, sampling)
        except Busy as busy:
            state.metrics.rejected.labels("queue_full").inc()
            raise APIError(429, "the queue is full; retry later", headers=retry_after(busy.retry_after_s))
        return job, TextStream(service.engine.tokenizer, stops)

    async def generate(job: Job, text: TextStream):
        """-> async iterator of (delta, finish_reason or None)."""
        while True:
            item = await job.tokens.get()
            if item == "error":
                raise EngineFailure
            if isinstance(item, str):  # the end: its reason
                reason = "length" if item == "cancelled" and job.cut else item
                yield text.finish(), ("stop" if text.stopped else reason)
                return
            delta = text.add(item)
            if text.stopped:
                service.cancel(job)
                yield delta, "stop"
                return
            yield delta, None

    def usage(job: Job, n_tokens: int) -> dict:
        return {"prompt_tokens": len(job.prompt), "completion_tokens": n_tokens,
                "total_tokens": len(job.prompt) + n_tokens}

    async def respond(request: Request, body: _Sampling, job: Job, text: TextStream, chat: bool):
        rid = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex[:24]
        created = int(time.time())
        kind = "chat.completion" if chat else "text_completion"
        head = {"id": rid, "object": kind + (".chunk" if chat else ""), "created": created, "model": service.name}
        include_usage = bool(body.stream_options and body.stream_options.include_usage)

        def choice(delta: str, reason, first: bool = False):
            if not chat:
                return {"index": 0, "text": delta, "logprobs": None, "finish_reason": reason}
            d = {"role": "assistant", "content": delta} if first else ({"content": delta} if delta else {})
            return {"index": 0, "delta": d, "logprobs": None, "finish_reason": reason}

        if body.stream:
            async def events():
                first, sent = True, False
                try:
                    try:
                        async for delta, reason in generate(job, text):
                            if delta or first or reason:
                                chunk = {**head, "choices": [choice(delta, reason, first and chat)]}
                                if include_usage:
                                    chunk["usage"] = None
                                yield f"data: {json.dumps(chunk)}\n\n"
                                first = False
                    except EngineFailure:  # the stock client raises APIError on an event with "error"
                        sent = True
                        yield f"data: {error_body(500, _FAILED, 'server_error').decode()}\n\n"
                        return
                    sent = True
                    if include_usage:
                        yield f"data: {json.dumps({**head, 'choices': [], 'usage': usage(job, len(text.ids))})}\n\n"
                    yield "data: [DONE]\n\n"
                finally:
                    if not sent:  # the client left (or the server is stopping): free the engine's row
                        service.cancel(job)

            return StreamingResponse(events(), media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

        async def collect():
            out, reason = [], None
            async for delta, reason in generate(job, text):
                out.append(delta)
            return "".join(out), reason

        try:
            done = await _until_disconnect(request, collect())
        except EngineFailure:
            raise APIError(500, _FAILED, kind="server_error")
        if done is None:
            service.cancel(job)
            return JSONResponse({}, status_code=499)  # nobody reads it
        content, reason = done
        if chat:
            c = {"index": 0, "message": {"role": "assistant", "content": content}, "logprobs": None,
                 "finish_reason": reason}
        else:
            c = {"index": 0, "text": content, "logprobs": None, "finish_reason": reason}
        return JSONResponse({"id": rid, "object": kind, "created": created, "model": service.name,
                             "choices": [c], "usage": usage(job, len(text.ids))})

    refusals = error_responses(400, 401, 404, 413, 422, 429, 500, 503)

    @app.post("/v1/completions", summary="OpenAI completions: the prompt as is, no chat template.",
              responses=refusals)
    async def completions(request: Request, body: CompletionRequest):
        check_ready(state)
        p = body.prompt
        if isinstance(p, list) and p and isinstance(p[0], str):
            if len(p) != 1:
                raise APIError(400, "one prompt per request", param="prompt")
            p = p[0]
        if isinstance(p, str):
            ids = [int(i) for i in service.engine.tokenizer.encode(p)] if p else []
        else:
            vocab = service.engine.model.spec.vocab_size
            if any(not 0 <= t < vocab for t in p):
                raise APIError(400, f"token ids must be in 0..{vocab - 1}", param="prompt")
            ids = list(p)
        job, text = prepare(body, ids, 16)  # OpenAI's default max_tokens for completions
        return await respond(request, body, job, text, chat=False)

    @app.post("/v1/chat/completions", summary="OpenAI chat completions: the model's chat template applied.",
              responses=refusals)
    async def chat_completions(request: Request, body: ChatRequest):
        check_ready(state)
        messages = [{"role": "system" if m.role == "developer" else m.role,
                     "content": m.content if isinstance(m.content, str) else "".join(p.text for p in m.content)}
                    for m in body.messages]
        try:
            ids = chat_ids(service.engine.tokenizer, messages)
        except FrugalError as exc:
            raise APIError(400, str(exc), param="messages")
        job, text = prepare(body, ids, None)
        return await respond(request, body, job, text, chat=True)

    @app.get("/v1/models", summary="The model served here.")
    async def models():
        return {"object": "list", "data": [{"id": service.name, "object": "model", "created": int(state.started_s),
                                            "owned_by": "frugalml", "max_model_len": service.context}]}


def chat_prefix(tokenizer, shortest: int = 8) -> list[int]:
    """The tokens every one-message chat starts with (the template's system part and the user turn's opening),
    or [] when the model has no chat template or they are too few to be worth caching. The last common token is
    left out: a message's first word may merge with it."""
    if not getattr(tokenizer, "chat_template", None):
        return []
    a, b = (chat_ids(tokenizer, [{"role": "user", "content": word}]) for word in ("Hello", "Why"))
    n = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
    return a[:n - 1] if n - 1 >= shortest else []


def chat_ids(tokenizer, messages: list[dict]) -> list[int]:
    """Token ids of a conversation in the model's chat template, ready for the assistant's answer. One user
    message gives exactly what ``frugal generate`` sends for that prompt (``encode_prompt``)."""
    from ..runtime.lm.quality import encode_chat, encode_prompt

    if len(messages) == 1 and messages[0]["role"] == "user":
        return encode_prompt(tokenizer, messages[0]["content"], chat=True)
    if not getattr(tokenizer, "chat_template", None):
        raise FrugalError("this model has no chat template; send a single user message or use /v1/completions")
    return encode_chat(tokenizer, messages)


async def _until_disconnect(request, work):
    """Run ``work`` unless the client disconnects first (then cancel it); -> its result, or None."""
    task = asyncio.ensure_future(work)

    async def gone():
        while True:
            message = await request.receive()
            if message["type"] == "http.disconnect":
                return

    watcher = asyncio.ensure_future(gone())
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
    if task.done():
        return task.result()
    task.cancel()
    return None
