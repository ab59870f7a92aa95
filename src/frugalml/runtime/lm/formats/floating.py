"""float32 and bfloat16: linear layers kept in floating point, their weights laid out once for oneDNN
(``packed.py``: same values, faster batch-1 matmuls) unless ``pack=False`` or oneDNN cannot take them.

The dtype is the model's: the engine casts the whole model (weights, activations, KV cache) to ``dtype``
before converting. Pack last: a packed layer cannot be quantized, deep-copied or cast any more.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from ..packed import PackedLinear, packable
from . import WeightFormat, register_format


@dataclass(frozen=True)
class FloatFormat(WeightFormat):
    dtype: ClassVar[torch.dtype]
    pack: bool = True  # weights laid out for oneDNN where it takes them

    def convert_linear(self, linear: nn.Linear) -> nn.Module | None:
        if self.pack and linear.weight.dtype == self.dtype and packable(self.dtype):
            return PackedLinear(linear)
        return None

    @classmethod
    def layer_bytes(cls, layer: nn.Module) -> int | None:
        """The weight's own bytes: 4 a weight in float32, 2 in bfloat16."""
        if isinstance(layer, PackedLinear):
            dtype = layer.dtype
        elif isinstance(layer, nn.Linear):
            dtype = layer.weight.dtype
        else:
            return None
        return layer.out_features * layer.in_features * dtype.itemsize if dtype == cls.dtype else None


@register_format
@dataclass(frozen=True)
class Float32Config(FloatFormat):
    name = "float32"
    dtype = torch.float32


@register_format
@dataclass(frozen=True)
class BFloat16Config(FloatFormat):
    name = "bfloat16"
    dtype = torch.bfloat16
