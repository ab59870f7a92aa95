"""Continuous batching: requests join and leave the running batch at token granularity.

Every request that holds a cache row is either prefilling (its prompt is going into the cache) or decoding.
The rows are laid out as [decoding | prefilling | free]: the decoding requests are cache rows 0..d-1, one
contiguous view for the decode step (no gather per layer), and the prefilling ones follow in arrival order.
Every step of the engine:

1. drops the requests cancelled since the last step (``cancel`` may be called from any thread: it only sets
   a flag, which the engine's own thread acts on), freeing their rows;
2. admits waiting requests into free rows; a prompt that starts with a cached prefix gets that prefix's K/V
   copied into its row and only the rest left to prefill;
3. prefills the next chunk (at most ``prefill_chunk`` tokens) of the first prefilling rows, at most
   ``prefill_budget`` tokens in all (padding included): rows whose chunks are about as long share one pass,
   right-padded to the longest, and each row's logits are taken at its own last real token. A prompt
   longer than a chunk takes several steps, each followed by a decode step, so a long prompt does not
   stall the running streams. A request whose prompt is complete samples its first token and joins the
   decoding rows;
4. runs one decode step for every decoding request together, each at its own position (the model takes
   per-row positions; attention masks hide the other rows' lengths), sampling each row with its own
   settings and seeded generator.

Padding is harmless: a padded slot sits above its row's real tokens (positions clamped below the cache
length, never onto a real one), where the causal mask hides it from the row's queries until the row's own
later tokens overwrite it. Requests that finish (max_new_tokens, end-of-sequence, cancelled) leave at once:
the last decoding row moves into a freed decoding row, the prefilling rows move down keeping their order,
and a request that completes its prefill moves to the end of the decoding rows. Moves copy only the cache
slots a request has filled.

Batch-1 decode reads every weight to produce one token; with n requests running, the same read produces n
tokens. That is the whole gain, and it holds while the weights, not attention, dominate the step. Batched
prefill gains the same way on short prompts (many rows of few tokens read the weights once).

Numerics: a batched, chunked or prefix-started prefill is the same computation as batch-1's, but not
bit-for-bit, and neither is the batched decode: oneDNN's matmul rounds one row differently from several,
and attention rounds differently with another cache length (batch-1 attends over its whole cache), by
~1e-5 in SmolLM2's logits. Greedy tokens change only where the top two logits tie that closely. Measured on
SmolLM2 (fp32): 19 chat prompts of 34-266 tokens x 64 greedy tokens, arriving together or one per step
into 5 rows, prefilled in chunks of 16 to 256 tokens, from a cached prefix or not, some cancelled on the
way: every request got exactly ``generate``'s tokens (a one-off check while writing this; what the suite keeps is
``tests/test_serve_lm.py``'s SmolLM2 test, 8 concurrent chats equal to ``frugal generate``).
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Callable

import torch

from ...errors import ConfigError, DataError
from .generate import SamplingConfig, new_generator, sample

# what one more prefill pass costs, in tokens of prefill: reading the weights once more and the per-layer
# Python (SmolLM2-135M fp32, 2 threads, timed once while writing this: ~36 ms a pass of one token, ~1.3 ms each
# further token). Rows of different chunk lengths share a pass (padded to the longest) while their padding costs
# less than this, else they take another.
PASS_TOKENS = 32


@dataclass
class Request:
    prompt: list[int]
    max_new_tokens: int = 128
    sampling: SamplingConfig = SamplingConfig()
    eos_id: int | None = None
    on_token: Callable[[int], None] | None = None  # called on the engine's thread as each token is made
    # filled in by the engine
    tokens: list[int] = field(default_factory=list)
    submitted_s: float = float("nan")
    first_token_s: float = float("nan")
    finished_s: float = float("nan")
    token_s: list[float] = field(default_factory=list)  # wall time at which each token was produced
    finish_reason: str | None = None  # "length" (max_new_tokens reached), "stop" (eos) or "cancelled"
    cancel_requested: bool = False  # set by cancel(), from any thread

    @property
    def ttft_s(self) -> float:
        return self.first_token_s - self.submitted_s

    @property
    def done(self) -> bool:
        return not (self.finished_s != self.finished_s)  # finished_s is set (not NaN)

    def cancel(self) -> None:
        """Stop this request: safe from any thread. It makes no further token; the engine frees its row (or
        drops it from the queue) at its next step, which returns it finished with finish_reason "cancelled"."""
        self.cancel_requested = True


@dataclass(eq=False)
class _Slot:
    """A request holding a cache row: how much of its prompt the row holds, and its sampler."""
    request: Request
    generator: torch.Generator | None
    filled: int = 0  # prompt tokens whose K/V are in the row
    capture: tuple[int, ...] | None = None  # a wanted prefix of the prompt whose K/V this row will make

    @property
    def prefilling(self) -> bool:
        return self.filled < len(self.request.prompt)

    @property
    def used(self) -> int:
        """Cache slots holding this request's K/V (the newest token goes in at the next decode step)."""
        r = self.request
        return len(r.prompt) + len(r.tokens) - 1 if r.tokens else self.filled


def _finish(r: Request, reason: str) -> None:
    r.finish_reason = reason
    r.finished_s = time.perf_counter()


class BatchEngine:
    """Runs many requests on one model at once; ``submit`` them, then ``step`` (or ``run`` them all).

    ``submit``, ``step``, ``run`` and ``cache_prefix`` belong to one thread (the engine's); ``cancel`` and
    ``Request.cancel`` may be called from any other. The model's cache is set up here: do not run other
    generations on the same model while the engine has requests.
    """

    def __init__(self, model, max_batch: int = 16, max_len: int | None = None, prefill_chunk: int = 256,
                 prefill_budget: int = 512, prefix_cache_tokens: int = 4096):
        if max_batch < 1:
            raise ConfigError(f"the batch must hold at least one request, not {max_batch}")
        if prefill_chunk < 1 or prefill_budget < 1:
            raise ConfigError(f"prefill_chunk ({prefill_chunk}) and prefill_budget ({prefill_budget}) must be at "
                              "least 1 token")
        if prefix_cache_tokens < 0:
            raise ConfigError(f"prefix_cache_tokens must be 0 (off) or more, not {prefix_cache_tokens}")
        self.model = model
        self.max_batch = max_batch
        self.max_len = min(max_len or model.spec.max_positions, model.spec.max_positions)
        self.prefill_chunk = prefill_chunk  # most prompt tokens of one request per prefill pass
        self.prefill_budget = prefill_budget  # most tokens (padding included) prefilled in one step
        self.prefix_cache_tokens = prefix_cache_tokens  # most prefix tokens whose K/V are kept
        model.setup_cache(max_batch, self.max_len)
        self.device = model.embed_tokens.weight.device
        self.waiting: deque[Request] = deque()
        self._decoding: list[_Slot] = []  # _decoding[i] owns cache row i
        self._prefilling: list[_Slot] = []  # _prefilling[i] owns cache row len(_decoding) + i, oldest first
        # prefix -> its K/V per layer [(k, v) each (KVH, len, D)], or None until made; least recently used first
        self.prefixes: OrderedDict[tuple[int, ...], list | None] = OrderedDict()
        self.steps = 0  # decode steps
        self.batch_sizes: list[int] = []  # running requests at each decode step
        self.prefill_passes = 0
        self.prefill_tokens = 0  # prompt tokens prefilled (padding and reused prefixes excluded)
        self.prefix_hits = 0  # requests that started from a cached prefix ...
        self.prefix_tokens_reused = 0  # ... and the prompt tokens they did not prefill
        self.prefill_s = 0.0  # time spent admitting requests and prefilling ...
        self.decode_s = 0.0  # ... and in batched decode steps

    # -- the API

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

    def cancel(self, request: Request) -> None:
        """Stop ``request`` (waiting or running); safe from any thread. See ``Request.cancel``."""
        request.cancel()

    def cache_prefix(self, tokens: list[int]) -> None:
        """Keep the K/V of this prompt prefix (e.g. a chat template's system part): a request whose prompt
        starts with it (and is longer) gets them copied into its row and prefills only the rest. They are made
        now in a free cache row, or when none is free by the prefill of the first request that starts with
        the prefix. Prefixes past ``prefix_cache_tokens`` in all are dropped, least recently used first."""
        key = tuple(tokens)
        if not key:
            raise DataError("the prefix to cache is empty")
        if len(key) > self.prefix_cache_tokens or len(key) >= self.max_len:
            raise ConfigError(f"a prefix of {len(key)} tokens does not fit the prefix cache "
                              f"(prefix_cache_tokens={self.prefix_cache_tokens}) or leave room in the context "
                              f"({self.max_len})")
        if self.prefixes.get(key) is not None:
            self.prefixes.move_to_end(key)
            return
        self.prefixes[key] = None
        row = len(self._decoding) + len(self._prefilling)
        if row < self.max_batch:
            with torch.inference_mode():
                self.model(torch.tensor([key], device=self.device), torch.arange(len(key), device=self.device),
                           first_row=row, kv_len=len(key), last=True)
            self._keep_prefix(key, row)

    @property
    def busy(self) -> bool:
        return bool(self.waiting or self._decoding or self._prefilling)

    @property
    def running(self) -> list[Request]:
        """The decoding requests (cache rows 0..n-1)."""
        return [s.request for s in self._decoding]

    @property
    def prefilling(self) -> list[Request]:
        return [s.request for s in self._prefilling]

    def stats(self) -> dict:
        """Counters for monitoring; safe to read from another thread (a snapshot may mix two steps)."""
        return {"running": len(self._decoding), "prefilling": len(self._prefilling), "waiting": len(self.waiting),
                "steps": self.steps, "prefill_passes": self.prefill_passes, "prefill_tokens": self.prefill_tokens,
                "prefix_hits": self.prefix_hits, "prefix_tokens_reused": self.prefix_tokens_reused,
                "prefill_s": self.prefill_s, "decode_s": self.decode_s}

    @torch.inference_mode()
    def step(self) -> list[Request]:
        """Drop cancelled requests, admit, prefill the next chunks, decode one token for every running request;
        -> the requests that finished (cancelled ones included)."""
        t0 = time.perf_counter()
        done = self._drop_cancelled()
        self._admit()
        done += self._prefill()
        t1 = time.perf_counter()
        self.prefill_s += t1 - t0
        if self._decoding:
            done += self._decode()
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

    # -- the step's parts

    def _drop_cancelled(self) -> list[Request]:
        done = [r for r in self.waiting if r.cancel_requested]
        if done:
            self.waiting = deque(r for r in self.waiting if not r.cancel_requested)
            for r in done:
                _finish(r, "cancelled")
        for s in self._decoding + self._prefilling:
            if s.request.cancel_requested and not s.request.done:
                _finish(s.request, "cancelled")
        return done + self._settle()

    def _admit(self) -> None:
        while self.waiting and len(self._decoding) + len(self._prefilling) < self.max_batch:
            r = self.waiting.popleft()
            slot = _Slot(r, new_generator(r.sampling))
            self._prefilling.append(slot)
            self._start_from_prefix(slot, len(self._decoding) + len(self._prefilling) - 1)

    def _prefill(self) -> list[Request]:
        """Prefill the next chunk of the first prefilling rows, in passes over contiguous blocks of rows, within
        ``prefill_budget`` padded tokens in all."""
        budget, i, todo = self.prefill_budget, 0, self._prefilling
        while i < len(todo):
            need = min(self.prefill_chunk, len(todo[i].request.prompt) - todo[i].filled)
            if i and budget < min(need, PASS_TOKENS):
                break  # another pass for a sliver of a chunk would cost more than it gains
            sizes = self._block(todo[i:], budget)
            width = max(sizes)
            self._prefill_pass(len(self._decoding) + i, todo[i:i + len(sizes)], sizes, width)
            budget -= len(sizes) * width
            i += len(sizes)
        return self._settle()

    def _block(self, slots: list[_Slot], budget: int) -> list[int]:
        """-> the chunk sizes of the first rows of ``slots`` to prefill in one pass, padded to the longest.

        A row joins while the pass fits the budget and the padding it adds (to itself, or to the rows before
        when its chunk is longer) costs less than a pass of its own would."""
        left = [len(s.request.prompt) - s.filled for s in slots]
        sizes = [min(self.prefill_chunk, budget, left[0])]
        width = sizes[0]
        for n in (min(self.prefill_chunk, k) for k in left[1:]):
            w = max(width, n)
            if (len(sizes) + 1) * w > budget or len(sizes) * (w - width) + w - n > PASS_TOKENS:
                break
            sizes.append(n)
            width = w
        return sizes

    def _prefill_pass(self, first: int, batch: list[_Slot], sizes: list[int], width: int) -> None:
        """One forward over rows first.. of the chunks of ``batch`` (right-padded to ``width``)."""
        dev = self.device
        tokens = torch.tensor([s.request.prompt[s.filled:s.filled + n] + [0] * (width - n)
                               for s, n in zip(batch, sizes)], device=dev)
        start = torch.tensor([s.filled for s in batch], device=dev)
        lengths = torch.tensor(sizes, device=dev)
        # padding positions continue above each row's chunk, clamped below the cache length: a prompt leaves
        # room for at least one new token, so the clamp never lands on a real position of the chunk
        pos = (start[:, None] + torch.arange(width, device=dev)).clamp(max=self.max_len - 1)
        logits = self.model(tokens, pos, first_row=first, kv_len=int((start + lengths).max()),
                            last=lengths - 1)[:, 0]  # (B, V): each row at its chunk's last real token
        self.prefill_passes += 1
        self.prefill_tokens += sum(sizes)
        for i, (s, n) in enumerate(zip(batch, sizes)):
            s.filled += n
            if s.capture is not None and s.filled >= len(s.capture):
                self._keep_prefix(s.capture, first + i)
                s.capture = None
            if not s.prefilling:  # the whole prompt is in: its first token
                self._emit(s, sample(logits[i], s.request.sampling, s.generator))

    def _decode(self) -> list[Request]:
        slots = self._decoding
        last = torch.tensor([[s.request.tokens[-1]] for s in slots], device=self.device)  # (n, 1)
        pos = torch.tensor([[s.used] for s in slots], device=self.device)  # where each newest token goes
        logits = self.model(last, pos, kv_len=int(pos.max()) + 1)[:, -1]  # (n, V)
        for i, s in enumerate(slots):
            self._emit(s, sample(logits[i], s.request.sampling, s.generator))
        self.steps += 1
        self.batch_sizes.append(len(slots))
        return self._settle()  # its cache-row moves count with the decode step

    def _emit(self, s: _Slot, token: int) -> None:
        r = s.request
        if r.cancel_requested:  # cancelled during the step: no more tokens
            _finish(r, "cancelled")
            return
        now = time.perf_counter()
        if not r.tokens:
            r.first_token_s = now
        r.tokens.append(token)
        r.token_s.append(now)
        if r.on_token:
            r.on_token(token)
        if token == r.eos_id:
            _finish(r, "stop")
        elif len(r.tokens) >= r.max_new_tokens:
            _finish(r, "length")

    # -- cache rows

    def _settle(self) -> list[Request]:
        """Free the finished requests' rows (the last decoding row moves into each freed decoding row, the
        prefilling rows keep their order) and move the prefilled requests to the decoding rows; -> the
        finished requests."""
        done = [s.request for s in self._decoding + self._prefilling if s.request.done]
        if not done and all(s.prefilling for s in self._prefilling):
            return []
        decoding = list(self._decoding)
        i = 0
        while i < len(decoding):
            if decoding[i].request.done:
                last = decoding.pop()
                if i < len(decoding):
                    decoding[i] = last
            else:
                i += 1
        live = [s for s in self._prefilling if not s.request.done]
        self._arrange(decoding + [s for s in live if not s.prefilling], [s for s in live if s.prefilling])
        return done

    def _arrange(self, decoding: list[_Slot], prefilling: list[_Slot]) -> None:
        """Make ``decoding + prefilling`` cache rows 0, 1, ...: copy the K/V of each slot that changes row."""
        old = {id(s): i for i, s in enumerate(self._decoding + self._prefilling)}
        new = decoding + prefilling
        todo = {j: old[id(s)] for j, s in enumerate(new) if old[id(s)] != j}  # new row -> old row
        used = {old[id(s)]: s.used for s in new}
        aside = {}  # old row -> its K/V, read out before the row is overwritten
        while todo:
            read = {src for src in todo.values() if src not in aside}
            ready = [j for j in todo if j not in read]  # rows no pending move still reads
            if not ready:  # only cycles left (rows trading places): set one row's K/V aside
                j = next(iter(todo))
                aside[j] = self._read(j, used[j])
                continue
            for j in ready:
                src = todo.pop(j)
                if src in aside:
                    self._write(j, aside[src])
                else:
                    self._copy(src, j, used[src])
        self._decoding, self._prefilling = decoding, prefilling

    def _copy(self, src: int, dst: int, n: int) -> None:
        for layer in self.model.layers:
            a = layer.self_attn
            a.k_cache[dst, :, :n].copy_(a.k_cache[src, :, :n])
            a.v_cache[dst, :, :n].copy_(a.v_cache[src, :, :n])

    def _read(self, row: int, n: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        return [(layer.self_attn.k_cache[row, :, :n].clone(), layer.self_attn.v_cache[row, :, :n].clone())
                for layer in self.model.layers]

    def _write(self, row: int, kv: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
        for layer, (k, v) in zip(self.model.layers, kv):
            n = k.shape[1]
            layer.self_attn.k_cache[row, :, :n].copy_(k)
            layer.self_attn.v_cache[row, :, :n].copy_(v)

    # -- the prefix cache

    def _start_from_prefix(self, s: _Slot, row: int) -> None:
        """Copy the longest cached prefix of the prompt into the new row; else note a wanted one to make."""
        prompt = s.request.prompt
        best = None
        for key, kv in self.prefixes.items():
            if len(key) < len(prompt) and tuple(prompt[:len(key)]) == key:
                if kv is not None and (best is None or len(key) > len(best)):
                    best = key
                elif kv is None and (s.capture is None or len(key) > len(s.capture)):
                    s.capture = key
        if best is not None:
            self._write(row, self.prefixes[best])
            self.prefixes.move_to_end(best)
            s.filled = len(best)
            self.prefix_hits += 1
            self.prefix_tokens_reused += len(best)
        if s.capture is not None and best is not None and len(s.capture) <= len(best):
            s.capture = None  # a longer prefix is in already

    def _keep_prefix(self, key: tuple[int, ...], row: int) -> None:
        if key not in self.prefixes or self.prefixes[key] is not None:
            return  # dropped, or made by another request meanwhile
        self.prefixes[key] = self._read(row, len(key))
        self.prefixes.move_to_end(key)
        kept = sum(len(k) for k, kv in self.prefixes.items() if kv is not None)
        while kept > self.prefix_cache_tokens:
            oldest = next(k for k, kv in self.prefixes.items() if kv is not None)
            del self.prefixes[oldest]
            kept -= len(oldest)
