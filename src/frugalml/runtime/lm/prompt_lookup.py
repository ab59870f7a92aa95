"""Prompt-lookup speculative decoding: guess the next tokens by finding the latest n-gram of the sequence
earlier in it, and check the whole guess in one forward pass.

No draft model: for input-grounded tasks (repeating, quoting, editing, summarising a given text) the
continuation often copies the context. The model scores the current token and the K guessed ones
together; the longest prefix of the guess that matches the model's own greedy choices is accepted, plus
the model's token after it. The output is exactly the plain greedy output; only the number of forward
passes changes.

When sampling, the guess is a deterministic draft (its q is one-hot), so the rejection sampling of
speculative.py becomes: keep guessed token x with probability p(x); at the first rejection draw from p with
x's mass removed, renormalised; after a fully kept guess draw a bonus token from p. Each token then follows
the model's distribution exactly.

Rejected positions in the static KV cache are simply overwritten later: attention only reads positions up
to the one being decoded.
"""

from __future__ import annotations

import time

import torch

from .generate import SamplingConfig, check_request, generate, new_generator, prefill, probabilities
from .speculative import accept_draft, accept_greedy


def propose(seq: list[int], max_ngram: int, k: int) -> list[int]:
    """Up to k tokens that followed the latest earlier occurrence of the sequence's last n-gram."""
    for n in range(max_ngram, 0, -1):
        if len(seq) <= n:
            continue
        tail = seq[-n:]
        for start in range(len(seq) - n - 1, -1, -1):
            if seq[start:start + n] == tail:
                return seq[start + n:start + n + k]
    return []


@torch.inference_mode()
def generate_prompt_lookup(model, prompt: list[int], max_new_tokens: int, cfg: SamplingConfig = SamplingConfig(), *,
                           max_ngram: int = 3, k: int = 10, eos_id: int | None = None,
                           on_token=None) -> tuple[Generation, dict]:
    """Generation with prompt lookup; -> (generation, stats with forward passes and acceptance)."""
    if max_new_tokens < 2 or not prompt:
        return generate(model, prompt, max_new_tokens, cfg, eos_id, on_token), {}
    check_request(model, prompt, max_new_tokens, cfg)
    generator = new_generator(cfg)
    device = model.embed_tokens.weight.device
    # room for the last guess to overrun the end; never past the model's context
    model.setup_cache(1, min(len(prompt) + max_new_tokens + k + 1, model.spec.max_positions))
    out = prefill(model, prompt, cfg, generator, on_token)
    seq = list(prompt) + out.tokens
    passes, proposed, accepted = 0, 0, 0
    while len(out.tokens) < max_new_tokens and out.tokens[-1] != eos_id:
        t0 = time.perf_counter()
        room = min(k, max_new_tokens - len(out.tokens) - 1, model.max_len - len(seq))
        guess = propose(seq, max_ngram, room) if room > 0 else []
        pos = len(seq) - 1  # the last token is not in the cache yet
        block = torch.tensor([[seq[-1]] + guess], device=device)
        logits = model(block, torch.arange(pos, pos + len(guess) + 1, device=device))[0]  # (1 + K, V)
        if cfg.temperature == 0:
            n_ok, nxt = accept_greedy(logits, guess)
        else:
            q = torch.zeros(len(guess), logits.shape[-1])  # (K, V): the guess as a one-hot draft
            q[torch.arange(len(guess)), guess] = 1.0
            n_ok, nxt = accept_draft(probabilities(logits, cfg), q, guess, generator)
        new = guess[:n_ok] + [nxt]  # the accepted guesses, then the model's own next token
        if eos_id in new:
            new = new[: new.index(eos_id) + 1]
        new = new[: max_new_tokens - len(out.tokens)]
        passes += 1
        proposed += len(guess)
        accepted += n_ok
        out.emit(new, time.perf_counter() - t0, on_token)
        seq.extend(new)
    stats = {"forward_passes": passes, "proposed": proposed, "accepted": accepted,
             "acceptance_rate": accepted / proposed if proposed else 0.0}
    return out, stats
