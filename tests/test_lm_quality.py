"""Quality measures of the LM engine (perplexity, next-token agreement, the per-slice report) on tiny random
Llama models, against transformers' own loss and logits as the reference."""

import json
import math

import pytest

import torch
import transformers

from frugalml.errors import ConfigError, DataError  # noqa: E402
from frugalml.runtime.lm.prompts import PROMPTS, heldout_text  # noqa: E402
from frugalml.runtime.lm.quality import encode_prompt, next_token_agreement, perplexity, quality_report  # noqa: E402
from lm_models import ours, tiny_hf  # noqa: E402


def byte_tokenizer(chat_template=None):
    """A byte-level BPE tokenizer with no merges: one token per byte, 256 ids, made here."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars, extra = {}, 0
    for b in range(256):  # GPT-2's byte -> printable character map
        chars[b] = chr(b) if b in printable else chr(256 + extra)
        extra += b not in printable
    tok = Tokenizer(models.BPE(vocab={chars[b]: b for b in range(256)}, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tok)
    fast.chat_template = chat_template
    return fast


def hf_perplexity(hf, ids):
    with torch.inference_mode():
        return math.exp(hf(torch.tensor([ids]), labels=torch.tensor([ids])).loss.item())


def test_perplexity_equals_exp_of_transformers_loss_in_one_window():
    hf = tiny_hf(seed=11)
    ids = torch.randint(0, 256, (120,), generator=torch.Generator().manual_seed(0)).tolist()
    assert perplexity(ours(hf), ids, window=256) == pytest.approx(hf_perplexity(hf, ids), rel=1e-4)


def test_perplexity_over_windows_equals_a_window_by_window_reference():
    hf = tiny_hf(seed=12)
    m = ours(hf)
    ids = torch.randint(0, 256, (200,), generator=torch.Generator().manual_seed(1)).tolist()
    nll = 0.0
    for start in (0, 63, 126, 189):  # windows of 64 sharing one token: ids[1:] each scored once
        chunk = ids[start:start + 64]
        nll += math.log(hf_perplexity(hf, chunk)) * (len(chunk) - 1)
    assert perplexity(m, ids, window=64) == pytest.approx(math.exp(nll / 199), rel=1e-4)
    assert perplexity(m, ids, window=64) != pytest.approx(perplexity(m, ids, window=256), rel=1e-4)
    with pytest.raises(ConfigError, match="window"):
        perplexity(m, ids, window=1)
    with pytest.raises(DataError, match="at least 2 tokens"):
        perplexity(m, ids[:1])


def test_a_model_agrees_fully_with_itself():
    hf = tiny_hf(seed=13)
    m = ours(hf)
    prompt = list(range(30, 50))
    for other in (m, ours(hf)):  # the same object, and a second engine on the same weights
        a = next_token_agreement(m, other, prompt, 20)
        assert a["positions"] == 20
        assert a["top1_agreement_fraction"] == 1.0
        assert a["kl_mean_nats"] == pytest.approx(0, abs=1e-6) and a["kl_max_nats"] == pytest.approx(0, abs=1e-6)


def test_a_perturbed_copy_disagrees_by_the_kl_transformers_gives():
    from frugalml.runtime.lm.generate import generate

    hf = tiny_hf(seed=14)
    noisy = tiny_hf(seed=14)
    with torch.no_grad():
        noisy.model.layers[1].mlp.down_proj.weight.add_(
            torch.randn(noisy.model.layers[1].mlp.down_proj.weight.shape, generator=torch.Generator().manual_seed(5)))
    ref, cand = ours(hf), ours(noisy)
    prompt = list(range(60, 80))
    a = next_token_agreement(ref, cand, prompt, 24)
    # the reference computed by transformers: the same greedy path, then both models' logits on it
    tokens = generate(ref, prompt, 24).tokens
    seq = torch.tensor([prompt + tokens[:-1]])
    with torch.inference_mode():
        logp = torch.log_softmax(hf(seq).logits[0, len(prompt) - 1:], -1)  # (24, V)
        logq = torch.log_softmax(noisy(seq).logits[0, len(prompt) - 1:], -1)
    kl = (logp.exp() * (logp - logq)).sum(-1)  # (24,)
    agree = (logp.argmax(-1) == logq.argmax(-1)).float().mean().item()
    assert a["positions"] == 24
    assert a["kl_mean_nats"] == pytest.approx(kl.mean().item(), rel=1e-3)
    assert a["kl_max_nats"] == pytest.approx(kl.max().item(), rel=1e-3)
    assert a["top1_agreement_fraction"] == pytest.approx(agree)
    assert 0 < a["top1_agreement_fraction"] < 1 and a["kl_mean_nats"] > 0.01


def test_int8_copy_is_close_but_not_identical():
    from frugalml.runtime.lm.formats import weight_format

    hf = tiny_hf(seed=15)
    a = next_token_agreement(ours(hf), weight_format("int8").convert(ours(hf)), list(range(5, 45)), 32)
    assert a["positions"] == 32
    assert 0 < a["kl_mean_nats"] <= a["kl_max_nats"] < 0.1
    assert a["top1_agreement_fraction"] >= 0.85


def test_encode_prompt_uses_the_chat_template_when_there_is_one():
    plain = byte_tokenizer()
    chat = byte_tokenizer("{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}{% endfor %}"
                          "{% if add_generation_prompt %}<assistant>{% endif %}")
    assert encode_prompt(plain, "hi there") == list(b"hi there")
    assert encode_prompt(chat, "hi there") == list(b"<user>hi there<assistant>")
    assert encode_prompt(chat, "hi there", chat=False) == list(b"hi there")


def test_quality_report_per_slice_overall_and_acceptance():
    hf = tiny_hf(seed=16, max_position_embeddings=1024)
    ref = ours(hf)
    noisy = tiny_hf(seed=16, max_position_embeddings=1024)
    with torch.no_grad():
        noisy.lm_head.weight.add_(0.3 * torch.randn(noisy.lm_head.weight.shape,
                                                    generator=torch.Generator().manual_seed(2)))
    cand = ours(noisy)
    tok = byte_tokenizer()
    seen = []

    def acceptance(ids):  # a stand-in speculative method: its rate depends on the prompt
        seen.append(ids)
        return (len(ids) % 10) / 10

    r = quality_report(ref, cand, tok, new_tokens=4, acceptance=acceptance, perplexity_max_tokens=300,
                       perplexity_window=128)
    json.dumps(r, allow_nan=False)  # strict JSON
    assert set(r["slices"]) == set(PROMPTS) == {"qa", "summarise", "code", "chat", "extract"}
    keys = {"prompts", "positions", "top1_agreement_fraction", "kl_mean_nats", "kl_max_nats", "acceptance_rate_mean"}
    for name, s in r["slices"].items():
        assert set(s) == keys
        assert s["prompts"] == len(PROMPTS[name]) and s["positions"] == 4 * len(PROMPTS[name])
        assert 0 <= s["top1_agreement_fraction"] <= 1 and 0 < s["kl_mean_nats"] <= s["kl_max_nats"]
        rates = [(len(encode_prompt(tok, p)) % 10) / 10 for p in PROMPTS[name]]
        assert s["acceptance_rate_mean"] == pytest.approx(sum(rates) / len(rates))
    assert len(seen) == sum(len(p) for p in PROMPTS.values())
    overall, slices = r["overall"], r["slices"].values()
    assert overall["positions"] == sum(s["positions"] for s in slices)
    weighted = sum(s["kl_mean_nats"] * s["positions"] for s in slices) / overall["positions"]
    assert overall["kl_mean_nats"] == pytest.approx(weighted)
    assert overall["kl_max_nats"] == max(s["kl_max_nats"] for s in slices)
    ids = tok.encode(heldout_text())[:300]
    assert r["perplexity_text_tokens"] == 300 and r["perplexity_window_tokens"] == 128
    assert r["perplexity_reference"] == pytest.approx(perplexity(ref, ids, 128))
    assert r["perplexity_ratio"] == pytest.approx(r["perplexity_candidate"] / r["perplexity_reference"])
    assert "statsmodels" in r["perplexity_text_source"]


def test_quality_report_on_chosen_or_custom_slices():
    m = ours(tiny_hf(seed=17, max_position_embeddings=1024))
    tok = byte_tokenizer()
    r = quality_report(m, m, tok, new_tokens=3, slices=["qa"], perplexity_max_tokens=64)
    assert list(r["slices"]) == ["qa"] and "acceptance_rate_mean" not in r["overall"]
    assert r["overall"]["top1_agreement_fraction"] == 1.0 and r["perplexity_ratio"] == 1.0
    r = quality_report(m, m, tok, new_tokens=3, slices={"mine": ["abc", "def"]}, perplexity_max_tokens=64)
    assert r["slices"]["mine"]["prompts"] == 2
    with pytest.raises(ConfigError, match="unknown prompt slice 'poetry'"):
        quality_report(m, m, tok, slices=["poetry"])


def test_builtin_prompts_and_heldout_text():
    assert all(4 <= len(prompts) <= 6 for prompts in PROMPTS.values())
    assert all(20 < len(p) < 700 for prompts in PROMPTS.values() for p in prompts)  # under ~150 tokens each
    text = heldout_text()
    assert text == heldout_text()
    assert len(text) > 2000 and len(text.split()) > 400
    assert sum(c.isalpha() or c.isspace() for c in text) / len(text) > 0.9  # prose, not tables
