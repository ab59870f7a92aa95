"""Histograms of oriented gradients (HOG) as a torch module: scikit-image's ``skimage.feature.hog`` with
``block_norm="L2-Hys"`` and ``feature_vector=True``, in ops the TorchScript ONNX exporter (opset 17) writes, so
that "HOG + a linear model" exports as one ONNX graph from pixels to probabilities (``torch_onnx.module_onnx``).

The steps follow ``skimage/feature/_hog.py`` and its Cython ``_hoghistogram.hog_histograms`` (0.26):

1. gradients: central differences ``x[i+1] - x[i-1]`` along rows and along columns, 0 on the first and last
   row (column); an RGB image keeps, per pixel, the gradient of the channel whose magnitude is largest (the
   first such channel on a tie, as ``argmax``);
2. orientation: unsigned, ``atan2(g_row, g_col)`` in degrees modulo 180, in [0, 180);
3. cells: each pixel adds its magnitude to the one bin [k, k+1) * 180 / orientations that holds its orientation
   (hard assignment; a pixel on a boundary goes to the upper bin); a cell's histogram is the sum over its
   pixels_per_cell**2 pixels divided by that count; rows and columns past the last whole cell are dropped;
4. blocks: every cells_per_block x cells_per_block square of cells, stride one cell, normalised L2-Hys:
   ``v / sqrt(|v|^2 + eps^2)``, clipped at 0.2, then the same again, eps = 1e-5;
5. features: ordered (block row, block column, cell row in block, cell column in block, orientation).

The orientation is found without an angle: the gradient is turned into the upper half plane (where its
unsigned orientation is its angle) and its bin is the count of bin boundaries it lies on or beyond, each a
sign of a cross product with the boundary's direction. That needs no atan2 in the graph, and is exact where
the gradient is not within float32 rounding of a boundary (never, for whole-number pixels and 9 bins).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..errors import ConfigError, DataError

EPS = 1e-5  # scikit-image's _hog_normalize_block
CLIP = 0.2  # L2-Hys


def hog_size(resolution: int, orientations: int = 9, pixels_per_cell: int = 8, cells_per_block: int = 2) -> int:
    """Length of the HOG feature vector of a ``resolution`` x ``resolution`` image."""
    blocks = resolution // pixels_per_cell - cells_per_block + 1
    if blocks < 1:
        raise DataError(f"HOG needs images of at least {cells_per_block * pixels_per_cell} pixels a side "
                        f"({cells_per_block} cells of {pixels_per_cell}), not {resolution}")
    return blocks * blocks * cells_per_block * cells_per_block * orientations


class HOG(torch.nn.Module):
    """(B, C, R, R) float32 pixels 0..255 -> (B, hog_size(R, ...)) float32 HOG features, C = 1 or 3 (any C):
    ``skimage.feature.hog(image, orientations, (p, p), (c, c), "L2-Hys", channel_axis=None or -1)``.

    Histograms are summed in float32 (as scikit-image's are: its Cython accumulates a cell in a float).
    """

    def __init__(self, channels: int, orientations: int = 9, pixels_per_cell: int = 8, cells_per_block: int = 2):
        super().__init__()
        if min(channels, orientations, pixels_per_cell, cells_per_block) < 1:
            raise ConfigError("HOG channels, orientations, pixels_per_cell and cells_per_block must be >= 1")
        self.channels, self.orientations = channels, orientations
        self.pixels_per_cell, self.cells_per_block = pixels_per_cell, cells_per_block
        angles = torch.arange(1, orientations, dtype=torch.float64) * (math.pi / orientations)
        self.register_buffer("boundaries", torch.stack([angles.cos(), angles.sin()]).float().view(2, -1, 1, 1),
                             persistent=False)  # directions of the inner bin boundaries, (cos, sin) x (n-1)
        self.register_buffer("bins", torch.arange(orientations).view(1, -1, 1, 1), persistent=False)

    def dim_at(self, resolution: int) -> int:
        """Length of the features of a ``resolution`` x ``resolution`` image."""
        return hog_size(resolution, self.orientations, self.pixels_per_cell, self.cells_per_block)

    def forward(self, x):
        if x.shape[1] != self.channels:
            raise DataError(f"HOG expects {self.channels} channel(s), got {x.shape[1]}")
        for side in x.shape[2:]:
            self.dim_at(int(side))  # too small: a ValueError (DataError), as scikit-image raises
        g_row, g_col = self.gradients(x)
        magnitude = torch.sqrt(g_row * g_row + g_col * g_col)
        votes = torch.where(self.orientation_bins(g_row, g_col) == self.bins, magnitude.unsqueeze(1), 0.0)
        cells = F.avg_pool2d(votes, self.pixels_per_cell)  # (B, n, cell rows, cell columns), remainder dropped
        return self.blocks(cells)

    def gradients(self, x):
        """(B, C, R, R) -> g_row, g_col (B, R, R): central differences, 0 on the border; of several channels,
        per pixel the one with the largest magnitude (squared magnitudes compared: exact for whole numbers)."""
        rows = F.pad(x[:, :, 2:] - x[:, :, :-2], (0, 0, 1, 1))
        cols = F.pad(x[:, :, :, 2:] - x[:, :, :, :-2], (1, 1))
        g_row, g_col = rows[:, 0], cols[:, 0]
        best = g_row * g_row + g_col * g_col
        for c in range(1, self.channels):
            r, k = rows[:, c], cols[:, c]
            m = r * r + k * k
            larger = m > best  # strictly: a tie keeps the earlier channel
            g_row, g_col, best = torch.where(larger, r, g_row), torch.where(larger, k, g_col), torch.maximum(m, best)
        return g_row, g_col

    def orientation_bins(self, g_row, g_col):
        """(B, R, R) gradients -> (B, 1, R, R) int64 bin of the unsigned orientation.

        A gradient below the column axis (or on it, pointing to negative columns) is negated: the same unsigned
        orientation, now its angle, in [0, 180). It lies at or beyond boundary k (angle b_k) when the cross
        product cos(b_k) * g_row - sin(b_k) * g_col is >= 0 (compared without the subtraction: the same
        sign); its bin is the number of such boundaries.
        """
        flip = (g_row < 0) | ((g_row == 0) & (g_col < 0))
        sign = torch.where(flip, -1.0, 1.0)
        g_row, g_col = (g_row * sign).unsqueeze(1), (g_col * sign).unsqueeze(1)
        beyond = self.boundaries[0] * g_row >= self.boundaries[1] * g_col  # (B, n-1, R, R)
        return beyond.sum(1, keepdim=True)

    def blocks(self, cells):
        """(B, n, cell rows, cell columns) -> (B, F): every c x c square of cells, L2-Hys normalised, in
        scikit-image's order (block row, block column, cell row, cell column, orientation)."""
        c = self.cells_per_block
        rows, cols = cells.shape[2] - c + 1, cells.shape[3] - c + 1
        block = torch.stack([cells[:, :, i:i + rows, j:j + cols] for i in range(c) for j in range(c)], 1)
        block = _l2(_l2(block).clamp(max=CLIP))  # (B, c*c, n, block rows, block columns)
        return block.permute(0, 3, 4, 1, 2).flatten(1)


def _l2(block):
    """Each block (dims 1, 2 of (B, c*c, n, ., .)) over its L2 norm, eps as scikit-image adds it."""
    return block / torch.sqrt((block * block).sum((1, 2), keepdim=True) + EPS * EPS)
