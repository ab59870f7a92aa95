"""Speculative decoding with a draft model: a cheap draft guesses the next k tokens one at a time, the target
scores all of them in one forward pass and keeps a prefix, so each target pass yields 1 to k + 1 tokens.

Greedy (temperature 0): a guess is kept while it equals the target's argmax, then the target's own token
follows, so the tokens are exactly those of plain greedy decoding; only the number of target passes changes.

Sampled: rejection sampling (Leviathan et al. 2023; Chen et al. 2023). With p and q the target's and the
draft's distributions at a position, both after the same temperature and top-p, the draft's token x is kept
with probability min(1, p(x) / q(x)); at the first rejection the token is drawn from max(0, p - q),
renormalised; when all k are kept, a bonus token is drawn from p at the position after them. Every token then
follows the target's distribution exactly, whatever the draft; a poor draft only costs speed.

Draft length (adaptive=True): each checked draft token is treated as a coin that comes up "kept" with
probability alpha, estimated from recent rounds (kept / checked, older rounds decayed). A round with k
drafts then yields (1 - alpha^(k+1)) / (1 - alpha) tokens on average and costs k * c + 1 target-pass
equivalents, c being the draft's cost per token relative to a target pass (by default the ratio of the
weight bytes each reads per token: decode is memory-bound). The next round uses the k in 1..k_max with the
most tokens per unit of cost. The rule depends only on past outcomes, so seeded runs stay reproducible.

Both models keep their own static KV cache. The target's cache holds every token but the last; the draft
catches up on the tokens it has not seen at the start of each round. The slots of rejected guesses are
overwritten later: attention only reads slots up to the position being decoded.
"""

from __future__ import annotations

import copy
import dataclasses
import time
from typing import Callable

import torch

from ...errors import ConfigError, DataError
from .formats import format_names, weight_bytes, weight_format
from .generate import Generation, SamplingConfig, check_request, new_generator, prefill, probabilities


def accept_greedy(logits: torch.Tensor, guess: list[int]) -> tuple[int, int]:
    """logits (K+1, V) of the target at the K guessed positions and the one after -> (guesses kept, next token)."""
    choice = logits.argmax(-1).tolist()
    n = 0
    while n < len(guess) and guess[n] == choice[n]:
        n += 1
    return n, choice[n]


def accept_draft(p: torch.Tensor, q: torch.Tensor, guess: list[int],
                 generator: torch.Generator) -> tuple[int, int]:
    """Rejection sampling of one round -> (guesses kept, the token after them).

    p (K+1, V): the target's probabilities at the K guessed positions and the one after; q (K, V): the
    draft's probabilities the guesses were drawn from (one-hot for a deterministic draft)."""
    for i, x in enumerate(guess):
        if float(torch.rand((), generator=generator)) * float(q[i, x]) < float(p[i, x]):  # w.p. min(1, p/q)
            continue
        residual = (p[i] - q[i]).clamp(min=0)  # (V,); multinomial renormalises
        if not residual.sum() > 0:  # p == q up to rounding: nothing to correct
            residual = p[i]
        return i, int(torch.multinomial(residual, 1, generator=generator))
    return len(guess), int(torch.multinomial(p[len(guess)], 1, generator=generator))


class DraftLength:
    """The adaptive draft length (see the module docstring): k in 1..k_max maximising expected tokens per cost."""

    def __init__(self, k_max: int, draft_cost: float, decay: float = 0.8):
        self.k_max, self.cost, self.decay = k_max, draft_cost, decay
        self.kept, self.checked = 1.2, 2.0  # a weak prior: alpha = 0.6
        self.k = self.best()

    @property
    def alpha(self) -> float:
        return self.kept / self.checked

    def update(self, kept: int, drafted: int) -> None:
        checked = kept + (kept < drafted)  # guesses after the first rejection are never checked
        self.kept = self.decay * self.kept + kept
        self.checked = self.decay * self.checked + checked
        self.k = self.best()

    def best(self) -> int:
        a = min(self.alpha, 0.999)
        return max(range(1, self.k_max + 1), key=lambda k: (1 - a ** (k + 1)) / (1 - a) / (k * self.cost + 1))


def self_draft(target, kind: str = "int8", *, layers: int | None = None, cache=None):
    """A draft made of the target itself, so it shares the tokenizer: a deep copy, converted to the quantized
    weight format ``kind`` ("int8", "int4"; "none" keeps the target's), keeping only the first ``layers``
    blocks (then the final norm and head). ``cache``: a ``weight_cache.WeightCache`` to quantize through."""
    kinds = [*format_names(quantized=True), "none"]
    if kind not in kinds:
        raise ConfigError(f"self-draft kind {kind!r} is not supported; use {', '.join(kinds[:-1])} or {kinds[-1]}")
    n = target.spec.n_layers
    if layers is not None and not 1 <= layers <= n:
        raise ConfigError(f"a self-draft keeps 1 to {n} layers of the target, not {layers}")
    kept = target.layers if layers is None else target.layers[:layers]
    # deepcopy's memo: skip the target's KV cache and position tables (the draft makes its own) and hand it
    # the copied kept blocks in place of the whole list
    scratch = [getattr(target, name, None) for name in ("cos", "sin", "causal")]
    scratch += [t for block in target.layers for t in (block.self_attn.k_cache, block.self_attn.v_cache)]
    memo = {id(t): None for t in scratch if t is not None}
    memo[id(target.layers)] = copy.deepcopy(kept, memo)
    draft = copy.deepcopy(target, memo)
    draft.spec = dataclasses.replace(target.spec, n_layers=len(kept))
    if kind != "none":
        if cache is None:
            weight_format(kind).convert(draft)
        else:
            cache.convert(draft, weight_format(kind))
    return draft.eval()


def check_draft(target, draft, total: int) -> None:
    if draft is target:
        raise ConfigError("the draft must be a model of its own (it keeps its own KV cache); "
                          "use self_draft(target) for a copy of the target")
    if draft.spec.vocab_size != target.spec.vocab_size:
        raise ConfigError(f"the draft's vocabulary ({draft.spec.vocab_size} tokens) differs from the target's "
                          f"({target.spec.vocab_size}); the draft must share the target's tokenizer")
    if total > draft.spec.max_positions:
        raise DataError(f"prompt + new tokens ({total}) exceed the draft's context of {draft.spec.max_positions}; "
                        "shorten the prompt or lower --max-new-tokens")


@torch.inference_mode()
def generate_speculative(target, draft, prompt: list[int], max_new_tokens: int,
                         cfg: SamplingConfig = SamplingConfig(), *, k: int = 4, adaptive: bool = True,
                         draft_cost: float | None = None, eos_id: int | None = None,
                         on_token: Callable[[int], None] | None = None) -> tuple[Generation, dict]:
    """Generate with ``draft`` guessing up to ``k`` tokens per target pass -> (generation, stats).

    draft_cost: the draft's cost per token relative to a target pass, for the adaptive k (default: the ratio
    of their weight bytes). Stats: acceptance_rate, proposed, accepted, target_forward_passes (prefill
    included), draft_forward_passes, mean_draft_length, draft_lengths (the k of each round)."""
    check_request(target, prompt, max_new_tokens, cfg)
    if k < 1:
        raise ConfigError(f"the draft length k must be at least 1, not {k}")
    total = len(prompt) + max_new_tokens
    check_draft(target, draft, total)
    if draft_cost is None:
        draft_cost = weight_bytes(draft) / max(weight_bytes(target), 1)
    greedy = cfg.temperature == 0
    generator = new_generator(cfg)
    device = target.embed_tokens.weight.device
    target.setup_cache(1, total)  # no guess ever runs past the last new token: total slots suffice
    draft.setup_cache(1, total)
    out = prefill(target, prompt, cfg, generator, on_token)
    seq = list(prompt) + out.tokens
    seen = 0  # the draft's cache holds seq[:seen]
    chooser = DraftLength(k, draft_cost) if adaptive else None
    target_passes, draft_passes, proposed, accepted, lengths = 1, 0, 0, 0, []
    while len(out.tokens) < max_new_tokens and seq[-1] != eos_id:
        t0 = time.perf_counter()
        n = len(seq)
        k_now = min(chooser.k if adaptive else k, max_new_tokens - len(out.tokens) - 1)
        guess, q = [], []
        feed, pos = seq[seen:], seen  # catch up on what the draft has not seen, then one guess at a time
        for _ in range(k_now):
            draft_logits = draft(torch.tensor([feed], device=device),
                                 torch.arange(pos, pos + len(feed), device=device), last=True)[0, -1]  # (V,)
            pos += len(feed)
            if greedy:
                x = int(draft_logits.argmax())
            else:
                q.append(probabilities(draft_logits, cfg))
                x = int(torch.multinomial(q[-1], 1, generator=generator))
            guess.append(x)
            feed = [x]
        block = torch.tensor([[seq[-1]] + guess], device=device)
        logits = target(block, torch.arange(n - 1, n + k_now, device=device))[0]  # (K+1, V)
        if greedy:
            kept, nxt = accept_greedy(logits, guess)
        else:
            q_all = torch.stack(q) if q else torch.empty(0, logits.shape[-1])  # (K, V)
            kept, nxt = accept_draft(probabilities(logits, cfg), q_all, guess, generator)
        if k_now:
            seen = n + min(kept, k_now - 1)  # the last guess was never fed to the draft
            lengths.append(k_now)
            if adaptive:
                chooser.update(kept, k_now)
        target_passes += 1
        draft_passes += k_now
        proposed += k_now
        accepted += kept
        new = guess[:kept] + [nxt]
        if eos_id in new:
            new = new[: new.index(eos_id) + 1]
        out.emit(new, time.perf_counter() - t0, on_token)
        seq.extend(new)
    stats = {"acceptance_rate": accepted / proposed if proposed else 0.0, "proposed": proposed,
             "accepted": accepted, "target_forward_passes": target_passes, "draft_forward_passes": draft_passes,
             "mean_draft_length": proposed / len(lengths) if lengths else 0.0, "draft_lengths": lengths}
    return out, stats
