"""The HOG torch module: the same features as skimage.feature.hog on real images, the same again through its
ONNX export in ONNX Runtime, the feature count, and a flat image."""

from pathlib import Path

import numpy as np
import pytest

import elpv_dataset  # installed test data and extras: a missing one fails, never skips
import torch
from PIL import Image
from skimage.feature import hog
from sklearn.datasets import load_sample_images

from frugalml.candidates.hog import HOG, hog_size
from frugalml.candidates.torch_onnx import module_onnx
from frugalml.runtime.sessions import ort_session

ELPV = sorted((Path(elpv_dataset.__file__).parent / "data" / "images").glob("*.png"))

# Whole-number pixels give whole-number gradients, so both sides put every pixel in the same bin; what is
# left is float32 arithmetic (scikit-image sums its cells in float32 too, then normalises in float64).
# Seen: < 2e-7 on 438 elpv images at 64, 96 and 128.
TOL = 1e-6


def _resized(image: Image.Image, size: int) -> np.ndarray:
    return np.asarray(image.resize((size, size), Image.BILINEAR))


def _skimage(image: np.ndarray, orientations=9, pixels=8, cells=2) -> np.ndarray:
    return hog(image.astype(np.float64), orientations=orientations, pixels_per_cell=(pixels, pixels),
               cells_per_block=(cells, cells), block_norm="L2-Hys", feature_vector=True,
               channel_axis=-1 if image.ndim == 3 else None)


def _torch(images: np.ndarray, module: HOG) -> np.ndarray:
    """(N, R, R) or (N, R, R, 3) uint8 -> module features (N, F)."""
    x = torch.from_numpy(np.array(images, dtype=np.float32))
    x = x.permute(0, 3, 1, 2) if x.ndim == 4 else x[:, None]
    with torch.no_grad():
        return module(x).numpy()


def _samples(mode: str) -> np.ndarray:
    return np.stack([_resized(Image.fromarray(im).convert(mode), 64) for im in load_sample_images().images])


@pytest.mark.parametrize("size", [64, 96])
def test_matches_skimage_on_elpv(size):
    images = np.stack([_resized(Image.open(p).convert("L"), size) for p in ELPV[::400]])
    ours = _torch(images, HOG(1))
    assert ours.dtype == np.float32 and ours.shape == (len(images), hog_size(size))
    np.testing.assert_allclose(ours, [_skimage(im) for im in images], rtol=0, atol=TOL)


@pytest.mark.parametrize("mode, channels", [("L", 1), ("RGB", 3)])
def test_matches_skimage_on_photos(mode, channels):
    images = _samples(mode)  # RGB: per pixel, the channel with the largest gradient
    np.testing.assert_allclose(_torch(images, HOG(channels)), [_skimage(im) for im in images], rtol=0, atol=TOL)


@pytest.mark.parametrize("orientations, pixels, cells", [(8, 8, 2), (12, 7, 3), (6, 5, 1)])
def test_matches_skimage_at_other_settings(orientations, pixels, cells):
    # 8 bins: boundaries at 45, 90 and 135 degrees, which whole-number gradients hit exactly (upper bin);
    # odd cells, and sizes that leave a remainder of pixels and of cells
    images = np.stack([_resized(Image.open(ELPV[7]).convert("L"), 100)])
    ours = _torch(images, HOG(1, orientations, pixels, cells))
    np.testing.assert_allclose(ours, [_skimage(images[0], orientations, pixels, cells)], rtol=0, atol=TOL)


@pytest.mark.parametrize("channels", [1, 3])
def test_onnx_export_matches_torch_at_any_batch(channels):
    module = HOG(channels)
    x = torch.from_numpy(np.random.default_rng(channels).uniform(0, 255, (4, channels, 96, 96)).astype(np.float32))
    session = ort_session(module_onnx(module, x[:1], ["features"]), threads=1)
    for batch in (1, 4):
        with torch.no_grad():
            expected = module(x[:batch]).numpy()
        got = session.run(None, {"image": x[:batch].numpy()})[0]
        assert got.shape == expected.shape == (batch, hog_size(96))
        assert np.abs(got - expected).max() <= 1e-4


def test_size_is_skimage_length():
    image = _resized(Image.open(ELPV[0]).convert("L"), 128)
    for size in (32, 64, 96, 128):
        assert hog_size(size) == HOG(1).dim_at(size) == len(_skimage(image[:size, :size]))


@pytest.mark.parametrize("channels", [1, 3])
def test_flat_image_gives_zeros(channels):
    out = HOG(channels)(torch.full((2, channels, 64, 64), 77.0))
    assert torch.equal(out, torch.zeros(2, hog_size(64)))  # no NaN: eps keeps the empty blocks at 0
    assert not _skimage(np.full((64, 64), 77, np.uint8)).any()
