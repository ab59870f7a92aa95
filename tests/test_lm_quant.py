"""int4 and bf16 for the decode engine, and its compiled decode step, against fp32 on tiny random Llamas."""

import pytest

import torch
import transformers

from frugalml.runtime.lm.formats import FORMATS, int4, weight_bytes, weight_format  # noqa: E402
from frugalml.runtime.lm.formats.int4 import Int4WeightOnlyConfig, Int4WeightOnlyLinear  # noqa: E402
from frugalml.runtime.lm.formats.int8 import Int8WeightOnlyLinear  # noqa: E402
from frugalml.runtime.lm.generate import generate  # noqa: E402
from lm_models import ours, tiny_hf  # noqa: E402


def quantize_int8(model):
    return weight_format("int8").convert(model)


def quantize_int4(model, group_size=32):
    return Int4WeightOnlyConfig(group_size).convert(model)


def sqnr_db(ref, got):
    ref, got = ref.float(), got.float()
    return (10 * torch.log10(ref.pow(2).mean() / (ref - got).pow(2).mean())).item()


def normal_linear(n_in=256, n_out=384):
    torch.manual_seed(0)
    lin = torch.nn.Linear(n_in, n_out)
    torch.nn.init.normal_(lin.weight, std=0.05)  # bell-shaped like trained weights, not nn.Linear's uniform init
    return lin


def logits_of(model, ids):
    model.setup_cache(1, ids.shape[1])
    with torch.inference_mode():
        return model(ids, torch.arange(ids.shape[1]))[0].float()  # (T, V)


IDS = torch.randint(0, 256, (1, 120), generator=torch.Generator().manual_seed(3))


@pytest.mark.parametrize("name", list(FORMATS))
def test_every_registered_format_converts_counts_and_round_trips(name):
    """What the engine asks of a format: convert, count bytes, and (quantized) rebuild from its own tensors."""
    fmt = weight_format(name)

    def fresh():
        m = ours(tiny_hf(seed=8))
        return m if fmt.quantized else m.to(fmt.dtype)

    m = fmt.convert(fresh())
    assert 0 < weight_bytes(m) <= weight_bytes(fresh())
    assert len(generate(m, [1, 2, 3], 8).tokens) == 8
    if fmt.quantized:
        assert not any(isinstance(x, torch.nn.Linear) for x in m.modules())
        restored = fmt.restore(fresh(), fmt.state(m))
        torch.testing.assert_close(logits_of(restored, IDS), logits_of(m, IDS), atol=0, rtol=0)
        assert weight_bytes(restored) == weight_bytes(m)


def test_unknown_format_lists_the_registered_ones():
    import frugalml

    assert list(FORMATS) == ["float32", "bfloat16", "int8", "int4"]
    with pytest.raises(frugalml.FrugalError, match="unknown weight format 'int3'; known: float32, bfloat16, int8, int4"):
        weight_format("int3")


@pytest.mark.parametrize("kernel", [True, False], ids=["kernel", "forced-fallback"])
@pytest.mark.parametrize("rows", [1, 40])  # the packed-kernel path (decode) and the dequantizing path (prefill)
def test_int4_linear_is_close_to_fp32(rows, kernel, monkeypatch):
    if kernel and not int4.KERNEL:
        pytest.skip("this torch has no CPU int4 kernel")
    monkeypatch.setattr(int4, "KERNEL", kernel)
    lin = normal_linear()
    q = Int4WeightOnlyLinear.quantize(lin)  # group 32
    assert (q.packed is not None) == kernel
    x = torch.randn(rows, 256, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref, got = lin(x), q(x)
    assert got.dtype == x.dtype and got.shape == (rows, 384)
    assert sqnr_db(ref, got) > 19  # 4 bits over each group's range, normal weights: ~22 dB (group 128: ~20)
    coarse = Int4WeightOnlyLinear.quantize(lin, group_size=128)
    with torch.no_grad():
        assert 18 < sqnr_db(ref, coarse(x)) < sqnr_db(ref, got)  # larger groups: wider ranges, coarser steps


def test_int4_kernel_and_fallback_agree(monkeypatch):
    if not int4.KERNEL:
        pytest.skip("this torch has no CPU int4 kernel")
    lin = normal_linear()
    fast = Int4WeightOnlyLinear.quantize(lin)
    monkeypatch.setattr(int4, "KERNEL", False)
    slow = Int4WeightOnlyLinear.quantize(lin)
    assert torch.equal(fast.dequantize(), slow.dequantize())  # the kernel's packing is read back exactly
    x = torch.randn(1, 256, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        a, b = fast(x), slow(x)  # bf16 activations in the kernel, fp32 in the fallback
    torch.testing.assert_close(a, b, atol=0.02 * b.abs().max().item(), rtol=0)


def test_int4_bad_group_size():
    import frugalml

    with pytest.raises(frugalml.FrugalError, match="group size"):
        quantize_int4(ours(tiny_hf()), group_size=16)


def test_int4_keeps_layers_it_cannot_group_as_int8():
    m = quantize_int4(ours(tiny_hf(hidden_size=128, intermediate_size=192, num_attention_heads=4)), group_size=128)
    for layer in m.layers:
        assert isinstance(layer.self_attn.qkv_proj, Int4WeightOnlyLinear)  # in_features 128
        assert isinstance(layer.mlp.gate_up_proj, Int4WeightOnlyLinear)
        assert isinstance(layer.mlp.down_proj, Int8WeightOnlyLinear)  # in_features 192 is not a multiple of 128
    assert len(generate(m, [1, 2, 3], 8).tokens) == 8


@pytest.mark.parametrize("kernel", [True, False], ids=["kernel", "forced-fallback"])
def test_int4_engine_agrees_with_fp32_on_next_tokens(kernel, monkeypatch):
    if kernel and not int4.KERNEL:
        pytest.skip("this torch has no CPU int4 kernel")
    monkeypatch.setattr(int4, "KERNEL", kernel)
    m = ours(tiny_hf(seed=8))
    q = quantize_int4(ours(tiny_hf(seed=8)))
    assert all(not isinstance(x, torch.nn.Linear) for x in q.modules())
    # fp32 weights read per token over int4's: 0.5 byte + 4 bytes of bf16 scale and zero per 32 weights
    assert weight_bytes(q) < weight_bytes(m) / 6  # 6.4x here (2x for bf16, 3.8x for int8)
    a = logits_of(m, IDS)
    # this tiny random model (weights N(0, 0.3)) is far more sensitive than a trained one: int4 gives ~0.55-0.67
    # top-1 agreement on it (int8 ~0.96; SmolLM2-135M int4: 0.86 on its own greedy continuation); chance is 1/256
    assert (a.argmax(-1) == logits_of(q, IDS).argmax(-1)).float().mean() > 0.45
    tokens = generate(q, [1, 2, 3], 16).tokens  # decode through the packed kernel, prefill dequantized
    assert len(tokens) == 16


def test_bf16_engine_is_close_to_fp32():
    m = ours(tiny_hf(seed=8))
    b = ours(tiny_hf(seed=8)).to(torch.bfloat16)
    b.setup_cache(1, 8)
    assert b.cos.dtype == b.layers[0].self_attn.k_cache.dtype == torch.bfloat16  # tables and cache follow weights
    a, got = logits_of(m, IDS), logits_of(b, IDS)
    assert (got - a).abs().max() < 0.03 * a.abs().max()  # measured ~0.015-0.018 of the largest logit
    assert (a.argmax(-1) == got.argmax(-1)).float().mean() > 0.9  # measured 0.95-0.99
    tokens = generate(b, [1, 2, 3], 16).tokens
    assert len(tokens) == 16


@pytest.mark.parametrize("quantize", [quantize_int8, quantize_int4], ids=["int8", "int4"])
def test_quantized_bf16_model_generates(quantize):
    m = ours(tiny_hf(seed=8))
    q = quantize(ours(tiny_hf(seed=8)).to(torch.bfloat16))
    a, got = logits_of(m, IDS), logits_of(q, IDS)
    assert got.isfinite().all()
    bound = 0.9 if quantize is quantize_int8 else 0.45  # measured 0.94-0.95 and 0.54-0.66
    assert (a.argmax(-1) == got.argmax(-1)).float().mean() > bound
    assert len(generate(q, [1, 2, 3], 16).tokens) == 16


@pytest.mark.slow  # inductor compiles C++: ~10-60 s on 2 cores
@pytest.mark.parametrize("quantize", [None, quantize_int4], ids=["fp32", "int4"])
def test_compiled_decode_gives_the_eager_tokens(quantize):
    import frugalml
    from frugalml.runtime.lm.compile import compile_decode

    m, c = ours(tiny_hf(seed=3)), ours(tiny_hf(seed=3))
    if quantize:
        m, c = quantize(m), quantize(c)
    assert compile_decode(c) > 0  # seconds spent compiling, reported apart from decoding
    with torch._dynamo.config.patch(error_on_recompile=True):  # one graph for every prompt and cache length
        for prompt in (list(range(1, 6)), list(range(7, 60))):
            assert generate(c, prompt, 24).tokens == generate(m, prompt, 24).tokens
    prompt = torch.tensor([list(range(1, 30))])
    for model in (m, c):
        model.setup_cache(1, 40)
    with torch.inference_mode():  # prefill (eager in both), then one decode step (compiled in c)
        torch.testing.assert_close(c(prompt, torch.arange(29)), m(prompt, torch.arange(29)))
        a, b = m(torch.tensor([[7]]), torch.tensor([29])), c(torch.tensor([[7]]), torch.tensor([29]))
    torch.testing.assert_close(b, a, atol=1e-4, rtol=1e-4)
    with pytest.raises(frugalml.FrugalError, match="already compiled"):
        compile_decode(c)
