"""Continuous batching against the batch-1 engine on tiny random Llama models."""

import pytest

import torch
import transformers  # noqa: F401  (an installed extra: a missing one fails, never skips)

from frugalml.runtime.lm.batching import BatchEngine, Request  # noqa: E402
from frugalml.runtime.lm.generate import SamplingConfig, generate  # noqa: E402
from lm_models import ours, tiny_hf  # noqa: E402


def test_batched_requests_get_the_batch1_tokens():
    """Different prompt lengths, budgets and sampling settings; more requests than rows, so requests join
    as others leave: every request gets exactly what it gets alone."""
    m = ours(tiny_hf(seed=11))
    g = torch.Generator().manual_seed(0)
    specs = []
    for i in range(7):
        prompt = torch.randint(0, 256, (int(torch.randint(3, 30, (1,), generator=g)),), generator=g).tolist()
        cfg = SamplingConfig() if i % 2 == 0 else SamplingConfig(temperature=0.9, top_p=0.9, seed=i)
        specs.append((prompt, 4 + 5 * i, cfg))
    want = [generate(m, p, n, c).tokens for p, n, c in specs]
    engine = BatchEngine(m, max_batch=3, max_len=128)
    got = engine.run([Request(p, n, c) for p, n, c in specs])
    assert [r.tokens for r in got] == want
    assert max(engine.batch_sizes) == 3 and all(r.ttft_s > 0 for r in got)
    assert engine.steps < sum(n for _, n, _ in specs) - len(specs)  # steps shared between requests


def test_requests_leave_at_end_of_sequence_and_rows_are_reused():
    m = ours(tiny_hf(seed=12))
    prompts = [[5, 6, 7], [9, 8, 7, 6, 5, 4], [1, 2]]
    second = generate(m, prompts[1], 10).tokens
    k = next(i for i in range(1, 10) if second[i] not in second[:i])
    eos = second[k]  # a token the second request reaches after k others: it ends there
    want = [generate(m, p, 10, eos_id=eos).tokens for p in prompts]
    engine = BatchEngine(m, max_batch=2, max_len=64)
    got = engine.run([Request(p, 10, eos_id=eos) for p in prompts])
    assert [r.tokens for r in got] == want and got[1].tokens[-1] == eos and len(got[1].tokens) == k + 1


def test_bad_requests():
    import frugalml

    m = ours(tiny_hf())
    engine = BatchEngine(m, max_batch=2, max_len=32)
    with pytest.raises(frugalml.FrugalError, match="empty"):
        engine.submit(Request([], 4))
    with pytest.raises(frugalml.FrugalError, match="context"):
        engine.submit(Request(list(range(30)), 4))
    with pytest.raises(frugalml.FrugalError, match="temperature"):
        engine.submit(Request([1], 4, SamplingConfig(temperature=-1)))
    with pytest.raises(frugalml.FrugalError, match="at least one"):
        BatchEngine(m, max_batch=0)
