"""Linear layers packed for oneDNN (runtime/lm/packed.py, the float32 and bfloat16 weight formats)."""

import pytest

import torch
import transformers

from frugalml.runtime.lm.formats import weight_bytes, weight_format  # noqa: E402
from frugalml.runtime.lm.generate import generate  # noqa: E402
from frugalml.runtime.lm.packed import AVAILABLE, PackedLinear  # noqa: E402
from lm_models import cache_in_tmp, ours, tiny_hf  # noqa: E402,F401  (cache_in_tmp: an autouse fixture)


def pack_linears(model):
    return weight_format("float32").convert(model)

pytestmark = pytest.mark.skipif(not AVAILABLE, reason="this torch has no oneDNN")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("rows", [1, 40])
def test_packed_linear_equals_linear(rows, dtype):
    torch.manual_seed(0)
    lin = torch.nn.Linear(256, 384).to(dtype)
    x = torch.randn(2, rows, 256, dtype=dtype)
    with torch.no_grad():
        want, got = lin(x), PackedLinear(lin)(x)
    assert got.dtype == dtype and got.shape == (2, rows, 384)
    tol = 1e-5 if dtype == torch.float32 else 2e-2  # summation order only
    torch.testing.assert_close(got, want, atol=tol, rtol=tol)


def test_packed_engine_gives_the_same_tokens():
    m, p = ours(tiny_hf(seed=3)), pack_linears(ours(tiny_hf(seed=3)))
    assert not any(isinstance(x, torch.nn.Linear) for x in p.modules())
    ids = torch.randint(0, 256, (1, 40), generator=torch.Generator().manual_seed(1))
    for model in (m, p):
        model.setup_cache(1, 64)
    with torch.inference_mode():
        torch.testing.assert_close(p(ids, torch.arange(40)), m(ids, torch.arange(40)), atol=1e-4, rtol=1e-4)
    assert generate(p, list(range(1, 20)), 32).tokens == generate(m, list(range(1, 20)), 32).tokens


@pytest.mark.slow
def test_compiled_packed_engine_gives_the_eager_tokens():
    from frugalml.runtime.lm.compile import compile_decode

    m, c = ours(tiny_hf(seed=3)), pack_linears(ours(tiny_hf(seed=3)))
    compile_decode(c)
    assert generate(c, list(range(1, 20)), 32).tokens == generate(m, list(range(1, 20)), 32).tokens


def test_engine_packs_by_default_with_the_same_tokens_and_bytes(tmp_path):
    from frugalml.runtime.lm.engine import Engine, EngineConfig
    from lm_models import tiny_folder

    folder = tiny_folder(tmp_path / "m")[0]
    packed, plain = Engine.load(str(folder)), Engine.load(str(folder), EngineConfig(pack=False))
    assert any(isinstance(m, PackedLinear) for m in packed.model.modules())
    assert not any(isinstance(m, PackedLinear) for m in plain.model.modules())
    assert "pack_s" in packed.timings and plain.config.label == "float32, unpacked"
    assert weight_bytes(packed.model) == weight_bytes(plain.model) > 0
    prompt = list(range(3, 30))
    assert packed.generate(prompt, 24)[0].tokens == plain.generate(prompt, 24)[0].tokens
    # quantized layers are left as they are; a self-draft is drafted before packing and gets packed too
    int8 = Engine.load(str(folder), EngineConfig(quantize="int8", draft="self:none:1"))
    assert not any(isinstance(m, PackedLinear) for m in int8.model.modules())
    assert any(isinstance(m, PackedLinear) for m in int8.draft.modules())
    assert int8.generate(prompt, 24)[0].tokens == Engine.load(str(folder), EngineConfig(quantize="int8")).generate(
        prompt, 24)[0].tokens
