"""Continuous batching: requests join and leave the running batch at token granularity.

Every step of the engine (1) admits waiting requests into free cache rows and runs each one's prefill,
then (2) runs one decode step for every running request together, each at its own position (the model
takes per-row positions; attention masks hide the other rows' lengths), sampling each row with its own
settings and seeded generator. A request that finishes (its max_new_tokens, or end-of-sequence) leaves at
once and the last running request's cache row moves into its place, so the running batch is always cache
rows 0..n-1: one contiguous view, no gather per layer.

Batch-1 decode reads every weight to produce one token; with n requests running, the same read produces n
tokens. That is the whole gain, and it holds while the weights, not attention, dominate the step.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable

import torch

from ...errors import ConfigError, DataError
from .generate import SamplingConfig, sample


@dataclass
class Request:
    prompt: list[int]
    max_new_tokens: int = 128
    sampling: SamplingConfig = SamplingConfig()
    eos_id: int | None = None
    on_token: Callable[[int], None] | None = None
    # filled in by the engine
    tokens: list[int] = field(default_factory=list)
    submitted_s: float = float("nan")
    first_token_s: float = float("nan")
    finished_s: float = float("nan")
    token_s: list[float] = field(default_factory=list)  # wall time at which each token was produced

    @property
    def ttft_s(self) -> float:
        return self.first_token_s - self.submitted_s

    @property
    def done(self) -> bool:
        return not (self.finished_s != self.finished_s)  # finished_s is set (not NaN)


class BatchEngine:
    """Runs many requests on one model at once; ``submit`` them, then ``step`` (or ``run`` them all)."""

    def __init__(self, model, max_batch: int = 16, max_len: int | None = None):
        if max_batch < 1:
            raise ConfigError(f"the batch must hold at least one request, not {max_batch}")
        self.model = model
        self.max_batch = max_batch
        self.max_len = min(max_len or model.spec.max_positions, model.spec.max_positions)
        model.setup_cache(max_batch, self.max_len)
        self.device = model.embed_tokens.weight.device
        self.waiting: deque[Request] = deque()
        self.running: list[Request] = []  # running[i] owns cache row i
        self.generators: list[torch.Generator | None] = []
        self.steps = 0
        self.batch_sizes: list[int] = []  # running requests at each decode step
        self.prefill_s = 0.0  # time spent admitting requests (their prefills) ...
        self.decode_s = 0.0  # ... and in batched decode steps

    def submit(self, request: Request) -> Request:
        request.sampling.check()
        if not request.prompt:
            raise DataError("the prompt is empty; give some text")
        if request.max_new_tokens < 1:
            raise ConfigError(f"max_new_tokens must be at least 1, not {request.max_new_tokens}")
        if len(request.prompt) + request.max_new_tokens > self.max_len:
            raise DataError(f"prompt ({len(request.prompt)} tokens) + {request.max_new_tokens} new tokens exceed "
                            f"the engine's context of {self.max_len}")
        request.submitted_s = time.perf_counter()
        self.waiting.append(request)
        return request

    @property
    def busy(self) -> bool:
        return bool(self.waiting or self.running)

    def _emit(self, i: int, token: int) -> None:
        r = self.running[i]
        now = time.perf_counter()
        if not r.tokens:
            r.first_token_s = now
        r.tokens.append(token)
        r.token_s.append(now)
        if r.on_token:
            r.on_token(token)
        if len(r.tokens) >= r.max_new_tokens or token == r.eos_id:
            r.finished_s = now

    def _admit(self) -> None:
        while self.waiting and len(self.running) < self.max_batch:
            r = self.waiting.popleft()
            row = len(self.running)
            self.running.append(r)
            cfg = r.sampling
            self.generators.append(torch.Generator().manual_seed(cfg.seed or 0) if cfg.temperature > 0 else None)
            n = len(r.prompt)
            logits = self.model(torch.tensor([r.prompt], device=self.device), torch.arange(n, device=self.device),
                                first_row=row, kv_len=n, last=True)[0, -1]
            self._emit(row, sample(logits, cfg, self.generators[row]))

    def _retire(self) -> list[Request]:
        """Remove finished requests; the last running row moves into each freed row."""
        done = []
        i = 0
        while i < len(self.running):
            if not self.running[i].done:
                i += 1
                continue
            done.append(self.running[i])
            last = len(self.running) - 1
            if i != last:
                for layer in self.model.layers:
                    a = layer.self_attn
                    a.k_cache[i].copy_(a.k_cache[last])
                    a.v_cache[i].copy_(a.v_cache[last])
                self.running[i], self.generators[i] = self.running[last], self.generators[last]
            self.running.pop()
            self.generators.pop()
        return done

    @torch.inference_mode()
    def step(self) -> list[Request]:
        """Admit, decode one token for every running request, retire; -> the requests that finished."""
        t0 = time.perf_counter()
        self._admit()
        t1 = time.perf_counter()
        self.prefill_s += t1 - t0
        done = self._retire()  # requests that finished at their prefill
        if not self.running:
            return done
        n = len(self.running)
        last = torch.tensor([[r.tokens[-1]] for r in self.running], device=self.device)  # (n, 1)
        pos = torch.tensor([[len(r.prompt) + len(r.tokens) - 1] for r in self.running], device=self.device)
        logits = self.model(last, pos, kv_len=int(pos.max()) + 1)[:, -1]  # (n, V)
        for i in range(n):
            self._emit(i, sample(logits[i], self.running[i].sampling, self.generators[i]))
        self.steps += 1
        self.batch_sizes.append(n)
        done += self._retire()  # its cache-row moves count with the decode step
        self.decode_s += time.perf_counter() - t1
        return done

    @property
    def decode_tokens_per_s(self) -> float:
        """Tokens of the batched decode steps per second of them (prefills excluded, as in batch-1 decode)."""
        return sum(self.batch_sizes) / self.decode_s if self.decode_s else float("nan")

    def run(self, requests: list[Request]) -> list[Request]:
        """Submit every request, step until all finish; -> the requests, in submission order."""
        for r in requests:
            self.submit(r)
        while self.busy:
            self.step()
        return requests
