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
    assert got[1].finish_reason == "stop" and [r.finish_reason for r in got if r.tokens[-1] != eos] == \
        ["length"] * sum(r.tokens[-1] != eos for r in got)


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


def _prompts(n, lo, hi, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, 256, (int(torch.randint(lo, hi, (1,), generator=g)),), generator=g).tolist()
            for _ in range(n)]


def _cfg(i):
    return SamplingConfig() if i % 2 == 0 else SamplingConfig(temperature=0.9, top_p=0.9, seed=i)


def test_requests_arriving_together_are_prefilled_together():
    """Prompts of varied lengths, greedy and sampled, admitted at once: a few padded prefill passes, and every
    request gets its batch-1 tokens (each row sampled at its own last real position)."""
    m = ours(tiny_hf(seed=13))
    prompts = _prompts(8, 2, 24, seed=1)
    want = [generate(m, p, 6, _cfg(i)).tokens for i, p in enumerate(prompts)]
    engine = BatchEngine(m, max_batch=8, max_len=64)
    got = engine.run([Request(p, 6, _cfg(i)) for i, p in enumerate(prompts)])
    assert [r.tokens for r in got] == want
    assert engine.prefill_passes < len(prompts) and engine.prefill_tokens == sum(map(len, prompts))
    assert all(r.finish_reason == "length" for r in got)


def test_chunked_prefill_gives_the_unchunked_tokens():
    m = ours(tiny_hf(seed=14))
    prompts = _prompts(5, 20, 70, seed=2)
    want = [generate(m, p, 8, _cfg(i)).tokens for i, p in enumerate(prompts)]
    engine = BatchEngine(m, max_batch=3, max_len=96, prefill_chunk=7, prefill_budget=16)
    got = engine.run([Request(p, 8, _cfg(i)) for i, p in enumerate(prompts)])
    assert [r.tokens for r in got] == want
    assert engine.prefill_passes >= sum(len(p) for p in prompts) // 16  # the budget held each pass back


def test_padding_near_the_end_of_the_cache_stays_inside_it():
    """A prompt ending at the cache's last slot but one shares its last pass with a longer chunk: its padding
    would run past the cache."""
    m = ours(tiny_hf(seed=14))
    a, b = _prompts(2, 31, 32, seed=15)
    want = [generate(m, a, 1).tokens, generate(m, b[:20], 4).tokens]
    engine = BatchEngine(m, max_batch=2, max_len=32, prefill_chunk=7, prefill_budget=16)
    ra = engine.submit(Request(a, 1))
    for _ in range(4):
        engine.step()
    rb = engine.submit(Request(b[:20], 4))  # its first chunk (7) goes with a's last (3, from slot 28)
    while engine.busy:
        engine.step()
    assert [ra.tokens, rb.tokens] == want and engine.prefill_passes == 5 + 2


def test_running_requests_decode_between_the_chunks_of_a_long_prompt():
    m = ours(tiny_hf(seed=15))
    short, long = _prompts(1, 5, 6, seed=3)[0], _prompts(1, 90, 91, seed=4)[0]
    want = [generate(m, short, 30).tokens, generate(m, long, 5).tokens]
    engine = BatchEngine(m, max_batch=2, max_len=128, prefill_chunk=8, prefill_budget=8)
    a = engine.submit(Request(short, 30))
    engine.step()
    b = engine.submit(Request(long, 5))
    while engine.busy:
        engine.step()
    assert [a.tokens, b.tokens] == want
    during = [t for t in a.token_s if t < b.first_token_s]
    assert len(during) >= 1 + 90 // 8  # a decode step after each chunk of the long prompt
    assert engine.prefill_passes == 1 + -(-90 // 8)


def test_a_prompt_finishing_its_prefill_behind_a_longer_one_moves_to_the_decoding_rows():
    """The long prompt keeps prefilling in front while short ones behind it finish theirs and join the
    decoding rows (rows trade places), and decoding requests leave while rows still prefill."""
    m = ours(tiny_hf(seed=16))
    prompts = _prompts(1, 60, 61, seed=5) + _prompts(5, 2, 6, seed=6)
    budgets = [4, 9, 3, 12, 6, 2]
    want = [generate(m, p, n, _cfg(i)).tokens for i, (p, n) in enumerate(zip(prompts, budgets))]
    engine = BatchEngine(m, max_batch=3, max_len=80, prefill_chunk=5, prefill_budget=12)
    got = engine.run([Request(p, n, _cfg(i)) for i, (p, n) in enumerate(zip(prompts, budgets))])
    assert [r.tokens for r in got] == want
    assert got[1].first_token_s < got[0].first_token_s  # the short one did not wait for the long prefill


def test_a_cached_prefix_is_reused_and_gives_the_same_tokens():
    m = ours(tiny_hf(seed=17))
    system = _prompts(1, 20, 21, seed=7)[0]
    prompts = [system + tail for tail in _prompts(6, 1, 12, seed=8)] + [system[:10] + [1, 2, 3]]
    want = [generate(m, p, 7, _cfg(i)).tokens for i, p in enumerate(prompts)]
    # made at once in a free row
    engine = BatchEngine(m, max_batch=4, max_len=64, prefill_chunk=6, prefill_budget=24)
    engine.cache_prefix(system)
    got = engine.run([Request(p, 7, _cfg(i)) for i, p in enumerate(prompts)])
    assert [r.tokens for r in got] == want
    assert engine.prefix_hits == 6 and engine.prefix_tokens_reused == 6 * len(system)
    # made by the prefill of the first request that starts with it (every row busy when it was asked for)
    engine = BatchEngine(m, max_batch=2, max_len=64, prefill_chunk=6, prefill_budget=24)
    reqs = [engine.submit(Request(p, 7, _cfg(i))) for i, p in enumerate(prompts)]
    engine.step()
    engine.cache_prefix(system)
    assert engine.prefixes[tuple(system)] is None
    while engine.busy:
        engine.step()
    assert [r.tokens for r in reqs] == want
    assert engine.prefix_hits >= 2 and engine.prefix_tokens_reused == engine.prefix_hits * len(system)


def test_prefixes_are_dropped_least_recently_used_first():
    import frugalml

    m = ours(tiny_hf(seed=17))
    engine = BatchEngine(m, max_batch=2, max_len=64, prefix_cache_tokens=25)
    a, b, c = _prompts(3, 10, 11, seed=9)
    engine.cache_prefix(a)
    engine.cache_prefix(b)
    engine.run([Request(a + [1], 2)])  # a is used: b is now the least recently used
    engine.cache_prefix(c)
    assert list(engine.prefixes) == [tuple(a), tuple(c)] and engine.prefix_hits == 1
    with pytest.raises(frugalml.FrugalError, match="prefix cache"):
        engine.cache_prefix(list(range(30)))


def test_cancel_from_another_thread_frees_the_row():
    import threading

    m = ours(tiny_hf(seed=18))
    p, q = _prompts(2, 4, 9, seed=10)
    want_q = generate(m, q, 6).tokens
    engine = BatchEngine(m, max_batch=1, max_len=64)
    a, b = engine.submit(Request(p, 50)), engine.submit(Request(q, 6))
    engine.submit(c := Request(q, 6))
    while len(a.tokens) < 3:
        assert engine.step() == []
    assert engine.waiting and b.tokens == []  # the one row is a's
    for r in (a, c):  # a running, c waiting
        t = threading.Thread(target=engine.cancel, args=(r,))
        t.start()
        t.join()
    n = len(a.tokens)
    done = engine.step()
    assert a in done and c in done and a.finish_reason == c.finish_reason == "cancelled" and a.done and c.done
    assert len(a.tokens) == n and c.tokens == [] and b in engine.running  # b took the freed row
    while engine.busy:
        engine.step()
    assert b.tokens == want_q and b.finish_reason == "length" and len(a.tokens) == n


def test_a_request_cancelled_during_a_step_gets_no_more_tokens():
    m = ours(tiny_hf(seed=19))
    p, q = _prompts(2, 4, 9, seed=11)
    engine = BatchEngine(m, max_batch=2, max_len=64)
    b = Request(q, 20)
    a = Request(p, 20, on_token=lambda t: len(a.tokens) == 4 and b.cancel())  # a is row 0: b's turn comes next
    engine.run([a, b])
    assert len(b.tokens) == 3 and b.finish_reason == "cancelled" and a.finish_reason == "length"


def test_requests_arriving_and_leaving_at_random_get_their_batch1_tokens():
    """Arrivals between steps, cancellations, chunked prefill, a cached prefix and few rows: every request
    that was not cancelled gets exactly its batch-1 tokens."""
    m = ours(tiny_hf(seed=20))
    g = torch.Generator().manual_seed(12)
    system = _prompts(1, 9, 10, seed=13)[0]
    prompts = [(system if i % 3 else []) + p for i, p in enumerate(_prompts(14, 1, 30, seed=14))]
    budgets = [int(torch.randint(1, 12, (1,), generator=g)) for _ in prompts]
    want = [generate(m, p, n, _cfg(i)).tokens for i, (p, n) in enumerate(zip(prompts, budgets))]
    engine = BatchEngine(m, max_batch=4, max_len=64, prefill_chunk=6, prefill_budget=14)
    engine.cache_prefix(system)
    reqs, finished = [], []
    for i, (p, n) in enumerate(zip(prompts, budgets)):
        reqs.append(engine.submit(Request(p, n, _cfg(i))))
        if i % 5 == 4:
            reqs[i - 2].cancel()
        for _ in range(int(torch.randint(0, 3, (1,), generator=g))):
            finished += engine.step()
    while engine.busy:
        finished += engine.step()
    assert sorted(map(id, finished)) == sorted(map(id, reqs))
    for i, r in enumerate(reqs):
        if r.finish_reason == "cancelled":
            assert r.tokens == want[i][:len(r.tokens)]
        else:
            assert r.tokens == want[i] and r.finish_reason == "length"
    assert sum(r.finish_reason == "cancelled" for r in reqs) >= 1 and engine.prefix_hits >= 3
