"""Speculative decoding on tiny random Llama models: greedy tokens identical to plain decoding, sampled tokens
distributed as the target's (checked against the exact joint distribution by enumeration)."""

import itertools

import numpy as np
import pytest

import torch
import transformers  # noqa: F401  (an installed extra: a missing one fails, never skips)

from frugalml.errors import ConfigError, DataError  # noqa: E402
from frugalml.runtime.lm import prompt_lookup, speculative  # noqa: E402
from frugalml.runtime.lm.generate import SamplingConfig, generate, probabilities  # noqa: E402
from frugalml.runtime.lm.prompt_lookup import generate_prompt_lookup  # noqa: E402
from frugalml.runtime.lm.speculative import generate_speculative, self_draft  # noqa: E402
from lm_models import ours, tiny_hf  # noqa: E402


@pytest.fixture(autouse=True)
def one_thread():
    """Thousands of tiny forward passes: a second thread only adds synchronisation, ruinous on a busy machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def make_draft(target, kind):
    if kind == "other":  # a different model with the same vocabulary
        return ours(tiny_hf(seed=12))
    quant, _, layers = kind.partition("-layers")
    return self_draft(target, quant, layers=int(layers) if layers else None)


@pytest.mark.parametrize("kind", ["other", "int8", "int4", "none-layers1", "int8-layers2"])
def test_greedy_speculation_gives_the_plain_greedy_tokens(kind):
    target = ours(tiny_hf(seed=11))
    draft = make_draft(target, kind)
    prompt = list(range(10, 30))
    want = generate(target, prompt, 40).tokens
    streamed = []
    got, stats = generate_speculative(target, draft, prompt, 40, k=4, on_token=streamed.append)
    assert got.tokens == want and streamed == want
    assert stats["draft_forward_passes"] == stats["proposed"] == sum(stats["draft_lengths"])
    assert stats["target_forward_passes"] <= 40
    assert 0 <= stats["accepted"] <= stats["proposed"] and 0 <= stats["acceptance_rate"] <= 1
    assert 1 <= stats["mean_draft_length"] <= 4
    if kind == "int8":  # a close copy: most guesses kept, so far fewer target passes than tokens
        assert stats["acceptance_rate"] > 0.6 and stats["target_forward_passes"] < 25
    eos = want[12]
    stopped, _ = generate_speculative(target, draft, prompt, 40, k=4, eos_id=eos)
    assert stopped.tokens == generate(target, prompt, 40, eos_id=eos).tokens


def test_greedy_prompt_lookup_is_unchanged():
    m = ours(tiny_hf(seed=9))
    base = list(range(10, 40))
    prompt = base + [3, 4] + base[:10]
    got, stats = generate_prompt_lookup(m, prompt, 40, SamplingConfig())
    assert got.tokens == generate(m, prompt, 40).tokens and stats["accepted"] > 0


V, T = 8, 4  # vocabulary and number of generated tokens of the statistical test: 8^4 joint outcomes


def peaked(seed):
    """A tiny model with a vocabulary of V and sharper next-token distributions (fewer likely sequences)."""
    m = ours(tiny_hf(seed=seed, vocab_size=V))
    with torch.no_grad():
        m.lm_head.weight.mul_(3.0)
    return m


def exact_joint(model, prompt, cfg):
    """P(first T tokens) for every one of the V^T sequences, from the plain model by enumeration -> (V^T,)."""
    heads = torch.tensor([prompt + list(c) for c in itertools.product(range(V), repeat=T - 1)])  # (V^(T-1), L)
    model.setup_cache(len(heads), heads.shape[1])
    with torch.inference_mode():
        p = probabilities(model(heads, torch.arange(heads.shape[1]))[:, -T:], cfg).double()  # (N, T, V)
    rows = torch.arange(len(heads))
    joint = torch.ones(len(heads), dtype=torch.float64)
    for i in range(T - 1):
        joint = joint * p[rows, i, heads[:, len(prompt) + i]]
    full = (joint[:, None] * p[:, -1]).reshape(-1).numpy()  # index: the T tokens as base-V digits
    return full / full.sum()


def p_value(run, n, expected):
    """Chi-square goodness of fit of n seeded runs; outcomes expected fewer than 5 times are pooled."""
    from scipy.stats import chisquare

    counts = np.zeros(V**T)
    for seed in range(n):
        counts[np.ravel_multi_index(run(seed), (V,) * T)] += 1
    want = expected * n
    big = want >= 5
    return chisquare(np.append(counts[big], counts[~big].sum()), np.append(want[big], want[~big].sum())).pvalue


def resample_from_p(p, q, guess, generator):
    """A wrong sampler for the negative control: on rejection it draws from p, not from max(0, p - q)."""
    for i, x in enumerate(guess):
        if float(torch.rand((), generator=generator)) * float(q[i, x]) >= float(p[i, x]):
            return i, int(torch.multinomial(p[i], 1, generator=generator))
    return len(guess), int(torch.multinomial(p[len(guess)], 1, generator=generator))


@pytest.mark.parametrize("method", ["draft", "prompt_lookup"])
def test_sampled_tokens_follow_the_target_distribution(method, monkeypatch):
    target, draft = peaked(1), peaked(2)
    cfg = SamplingConfig(temperature=1.0)
    prompt = [1, 2, 3] if method == "draft" else list(range(V)) * 2  # every token has a continuation to copy
    expected = exact_joint(target, prompt, cfg)
    seen = {"accepted": 0, "proposed": 0}

    def run(seed):
        c = SamplingConfig(temperature=1.0, seed=seed)
        if method == "draft":  # k=3: the first round drafts 2 tokens (3 are left, the last is the target's)
            out, stats = generate_speculative(target, draft, prompt, T, c, k=3, adaptive=False)
        else:
            out, stats = generate_prompt_lookup(target, prompt, T, c, k=3, max_ngram=2)
        for key in seen:
            seen[key] += stats[key]
        return out.tokens

    p = p_value(run, 2000, expected)
    print(f"{method}: p-value {p:.3g}, acceptance {seen['accepted'] / seen['proposed']:.2f}")
    assert p > 1e-3
    assert 0.05 < seen["accepted"] / seen["proposed"] < 0.95  # both kept and rejected guesses were exercised
    assert run(7) == run(7)  # seeded: reproducible

    monkeypatch.setattr(speculative if method == "draft" else prompt_lookup, "accept_draft", resample_from_p)
    p_wrong = p_value(run, 1000, expected)
    print(f"{method}, wrong sampler: p-value {p_wrong:.3g}")
    assert p_wrong < 1e-3  # the test has the power to see a subtly wrong sampler


def test_adaptive_draft_length_follows_the_acceptance():
    target = ours(tiny_hf(seed=11))
    prompt = list(range(10, 30))
    # an identical copy: every guess is kept, k climbs to its maximum
    _, same = generate_speculative(target, ours(tiny_hf(seed=11)), prompt, 60, k=6, draft_cost=0.1)
    assert same["acceptance_rate"] == 1.0
    assert same["draft_lengths"][0] < 6 and max(same["draft_lengths"]) == 6
    # an unrelated draft: guesses are rejected, k falls to 1
    _, poor = generate_speculative(target, ours(tiny_hf(seed=12)), prompt, 60, k=6, draft_cost=0.1)
    assert poor["acceptance_rate"] < 0.3 and poor["draft_lengths"][-5:] == [1] * 5
    _, fixed = generate_speculative(target, ours(tiny_hf(seed=12)), prompt, 20, k=3, adaptive=False)
    assert fixed["draft_lengths"][:10] == [3] * 10 and max(fixed["draft_lengths"]) == 3


def test_bad_drafts_and_settings():
    target = ours(tiny_hf(seed=11))
    with pytest.raises(ConfigError, match="vocabulary"):
        generate_speculative(target, ours(tiny_hf(seed=12, vocab_size=128)), [1, 2], 5)
    with pytest.raises(ConfigError, match="own"):
        generate_speculative(target, target, [1, 2], 5)
    with pytest.raises(ConfigError, match="kind"):
        self_draft(target, "int3")
    with pytest.raises(ConfigError, match="layers"):
        self_draft(target, "int8", layers=4)
    draft = self_draft(target, "none", layers=1)
    assert draft.spec.n_layers == 1 and len(draft.layers) == 1 and target.spec.n_layers == 3
    with pytest.raises(DataError, match="empty"):
        generate_speculative(target, draft, [], 5)
    with pytest.raises(DataError, match="context"):
        generate_speculative(target, draft, list(range(250)), 10)
    with pytest.raises(ConfigError, match="temperature"):
        generate_speculative(target, draft, [1], 5, SamplingConfig(temperature=-1))
    with pytest.raises(ConfigError, match="top-p"):
        generate_speculative(target, draft, [1], 5, SamplingConfig(temperature=1, top_p=0))
    with pytest.raises(ConfigError, match="max-new-tokens"):
        generate_speculative(target, draft, [1], 0)
    with pytest.raises(ConfigError, match="draft length"):
        generate_speculative(target, draft, [1], 5, k=0)
