"""Quality of an optimised language model, measured against the unoptimised one.

Three measures, all through frugalml's engine:

- perplexity on held-out prose (exp of the mean next-token negative log-likelihood);
- next-token agreement: the reference decodes greedily, then both models read the prompt and that
  continuation in one teacher-forced pass, and their next-token distributions are compared at every
  position that predicts a generated token (top-1 agreement, KL(reference || candidate));
- for a speculative method, its acceptance rate, through a callable the caller supplies.

``quality_report`` gives all of them per slice of the built-in prompt set (``prompts.PROMPTS``) and
overall, as a JSON-serialisable dict.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

from ...errors import ConfigError, DataError, need
from .prompts import HELDOUT_SOURCE, PROMPTS, heldout_text


def encode_prompt(tokenizer, text: str, chat: bool = True) -> list[int]:
    """Token ids of a user message, wrapped in the chat template when the tokenizer has one."""
    if chat and getattr(tokenizer, "chat_template", None):
        return encode_chat(tokenizer, [{"role": "user", "content": text}])
    return [int(i) for i in tokenizer.encode(text)]


def encode_chat(tokenizer, messages: list[dict]) -> list[int]:
    """Token ids of a conversation in the tokenizer's chat template, ready for the assistant's answer."""
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    if isinstance(ids, Mapping) or hasattr(ids, "input_ids"):  # transformers >= 5 returns a BatchEncoding
        ids = ids["input_ids"]
    if hasattr(ids, "tolist"):
        ids = ids.tolist()
    if ids and isinstance(ids[0], list):  # a batch of one
        ids = ids[0]
    return [int(i) for i in ids]


def _logprobs(model, ids: list[int]):
    """One forward over ``ids`` from position 0 -> float32 log-probabilities (T, V)."""
    torch = need("torch", "the language-model engine", "torch")
    device = model.embed_tokens.weight.device
    model.setup_cache(1, len(ids))
    logits = model(torch.tensor([ids], device=device), torch.arange(len(ids), device=device))[0]  # (T, V)
    return torch.log_softmax(logits.float(), dim=-1)


def perplexity(model, ids: list[int], window: int = 256) -> float:
    """exp(mean negative log-likelihood of ids[1:]), read in windows of ``window`` tokens.

    Consecutive windows share one token (the last of one is the first of the next), so every token after
    the first is scored exactly once, with the context of its own window only.
    """
    torch = need("torch", "the language-model engine", "torch")
    if len(ids) < 2:
        raise DataError(f"perplexity needs at least 2 tokens, got {len(ids)}; give a longer text")
    if not 2 <= window <= model.spec.max_positions:
        raise ConfigError(f"the perplexity window must be 2 to {model.spec.max_positions} tokens, not {window}")
    nll_sum, scored = 0.0, 0
    with torch.inference_mode():
        for start in range(0, len(ids) - 1, window - 1):
            chunk = ids[start:start + window]  # at least 2 tokens: start <= len(ids) - 2
            logp = _logprobs(model, chunk[:-1])  # (T-1, V): position t predicts chunk[t + 1]
            targets = torch.tensor(chunk[1:], device=logp.device)  # (T-1,)
            nll_sum -= logp.gather(1, targets[:, None]).sum().item()
            scored += len(chunk) - 1
    return math.exp(nll_sum / scored)


def next_token_agreement(reference, candidate, prompt_ids: list[int], new_tokens: int,
                         eos_id: int | None = None) -> dict:
    """Greedy continuation by the reference, then both models teacher-forced on prompt + continuation;
    compared at the ``positions`` that predict the generated tokens."""
    torch = need("torch", "the language-model engine", "torch")
    from .generate import generate

    tokens = generate(reference, prompt_ids, new_tokens, eos_id=eos_id).tokens
    seq = list(prompt_ids) + tokens[:-1]  # the last generated token predicts nothing we score
    first = len(prompt_ids) - 1  # the position that predicts tokens[0]
    with torch.inference_mode():
        logp = _logprobs(reference, seq)[first:]  # (N, V), N = len(tokens)
        logq = _logprobs(candidate, seq)[first:]  # (N, V)
        kl = torch.nn.functional.kl_div(logq, logp, log_target=True, reduction="none").sum(-1)  # (N,)
        same = (logp.argmax(-1) == logq.argmax(-1)).float()  # (N,)
    return {"positions": len(tokens), "top1_agreement_fraction": same.mean().item(),
            "kl_mean_nats": kl.mean().item(), "kl_max_nats": kl.max().item()}


def _pick_slices(slices) -> dict[str, Sequence[str]]:
    if slices is None:
        return dict(PROMPTS)
    if isinstance(slices, Mapping):
        return {name: list(prompts) for name, prompts in slices.items()}
    unknown = [s for s in slices if s not in PROMPTS]
    if unknown:
        raise ConfigError(f"unknown prompt slice {unknown[0]!r}; known: {', '.join(PROMPTS)}")
    return {name: PROMPTS[name] for name in slices}


def quality_report(reference, candidate, tokenizer, *, new_tokens: int = 32,
                   slices: Sequence[str] | Mapping[str, Sequence[str]] | None = None,
                   acceptance: Callable[[list[int]], float] | None = None,
                   perplexity_max_tokens: int = 1024, perplexity_window: int = 256,
                   progress: Callable[[int, int, str], None] | None = None) -> dict:
    """Candidate against reference, per prompt slice and overall, plus perplexity of both on held-out text.

    ``slices``: names from ``prompts.PROMPTS`` or a mapping name -> prompts (default: every built-in slice).
    ``acceptance``: prompt ids -> acceptance rate of a speculative method; averaged per slice when given.
    Per slice and "overall": prompts, positions, top1_agreement_fraction, kl_mean_nats (position-weighted),
    kl_max_nats [, acceptance_rate_mean]; perplexity_ratio is candidate / reference.
    ``progress(done, total, what)``: per prompt ("prompt 3/26 (qa)"), then the perplexity (one more step).
    """
    eos_id = getattr(tokenizer, "eos_token_id", None)
    report: dict = {"new_tokens_max": new_tokens, "slices": {}}
    every, every_rate = [], []  # each prompt's next_token_agreement; each acceptance rate
    picked = _pick_slices(slices)
    total, done = sum(len(p) for p in picked.values()) + 1, 0
    for name, prompts in picked.items():
        rows, rates = [], []
        for text in prompts:
            if progress:
                progress(done, total, f"prompt {done + 1}/{total - 1} ({name})")
            done += 1
            ids = encode_prompt(tokenizer, text)
            rows.append(next_token_agreement(reference, candidate, ids, new_tokens, eos_id))
            if acceptance is not None:
                rate = acceptance(ids)
                if rate is not None and math.isfinite(rate):  # a method that proposed nothing may say None
                    rates.append(float(rate))
        report["slices"][name] = _summary(rows, rates if acceptance is not None else None)
        every += rows
        every_rate += rates
    report["overall"] = _summary(every, every_rate if acceptance is not None else None)
    if progress:
        progress(done, total, "perplexity on held-out text")
    ids = [int(i) for i in tokenizer.encode(heldout_text())][:perplexity_max_tokens]
    ppl_ref = perplexity(reference, ids, perplexity_window)
    ppl_cand = perplexity(candidate, ids, perplexity_window)
    report.update({"perplexity_text_source": HELDOUT_SOURCE, "perplexity_text_tokens": len(ids),
                   "perplexity_window_tokens": perplexity_window, "perplexity_reference": ppl_ref,
                   "perplexity_candidate": ppl_cand, "perplexity_ratio": ppl_cand / ppl_ref})
    if progress:
        progress(total, total, "perplexity on held-out text")
    return report


def _summary(rows: list[dict], rates: list[float] | None) -> dict:
    """Per-prompt agreements -> position-weighted means; the mean acceptance rate when rates were asked for."""
    n = sum(r["positions"] for r in rows)
    out = {"prompts": len(rows), "positions": n,
           "top1_agreement_fraction": sum(r["top1_agreement_fraction"] * r["positions"] for r in rows) / max(n, 1),
           "kl_mean_nats": sum(r["kl_mean_nats"] * r["positions"] for r in rows) / max(n, 1),
           "kl_max_nats": max((r["kl_max_nats"] for r in rows), default=0.0)}
    if rates is not None:
        out["acceptance_rate_mean"] = sum(rates) / len(rates) if rates else None
    return out
