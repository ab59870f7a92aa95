"""int8: every linear layer's weight stored as int8 with one scale per output channel (symmetric), activations
kept in floating point (weight-only).

Batch-1 decode is bound by reading weights, so a quarter of the bytes is most of the win. For one or a
few rows the product runs in PyTorch's packed kernel (``_weight_int8pack_mm``, bf16 activations); for
prefill-sized inputs, where that kernel is slow, the weight is dequantized on the fly and multiplied in
the activations' dtype. Where the kernel is missing, the dequantizing path serves every call.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from . import WeightFormat, register_format

KERNEL = hasattr(torch.ops.aten, "_weight_int8pack_mm")
KERNEL_MAX_ROWS = 4  # the packed kernel is fast for decode, not for prefill


class Int8WeightOnlyLinear(nn.Module):
    """weight (out, in) int8 and scale (out,) float32 stand for ``weight * scale[:, None]``."""

    def __init__(self, weight: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None = None):
        super().__init__()
        self.register_buffer("weight", weight)
        self.register_buffer("scale", scale)
        self.register_buffer("scale_bf16", scale.to(torch.bfloat16))
        self.bias = None if bias is None else nn.Parameter(bias)
        self.out_features, self.in_features = weight.shape

    @classmethod
    def quantize(cls, linear: nn.Linear) -> "Int8WeightOnlyLinear":
        w = linear.weight.detach().float().contiguous()  # (out, in)
        scale = w.abs().amax(dim=1).clamp(min=1e-12) / 127.0  # (out,)
        weight = torch.round(w / scale[:, None]).clamp(-128, 127).to(torch.int8)
        return cls(weight, scale, None if linear.bias is None else linear.bias.detach().clone())

    def tensors(self) -> dict[str, torch.Tensor]:
        out = {"weight": self.weight, "scale": self.scale}
        return out if self.bias is None else {**out, "bias": self.bias}

    def forward(self, x):  # (..., in) -> (..., out)
        lead = x.shape[:-1]
        x2 = x.reshape(-1, x.shape[-1])  # (N, in)
        if KERNEL and x2.shape[0] <= KERNEL_MAX_ROWS:
            y = torch._weight_int8pack_mm(x2.to(torch.bfloat16), self.weight, self.scale_bf16).to(x.dtype)
        else:
            y = F.linear(x2, self.weight.to(x.dtype) * self.scale.to(x.dtype)[:, None])
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(*lead, self.out_features)


def restore_int8(tensors: dict[str, torch.Tensor]) -> Int8WeightOnlyLinear:
    return Int8WeightOnlyLinear(tensors["weight"], tensors["scale"], tensors.get("bias"))


@register_format
@dataclass(frozen=True)
class Int8WeightOnlyConfig(WeightFormat):
    name = "int8"
    quantized = True
    version = 1

    def convert_linear(self, linear: nn.Linear) -> nn.Module:
        return Int8WeightOnlyLinear.quantize(linear)

    def restore_linear(self, linear: nn.Linear, tensors: dict[str, torch.Tensor]) -> nn.Module:
        return restore_int8(tensors)

    @classmethod
    def layer_bytes(cls, layer: nn.Module) -> int | None:
        """One byte a weight + a float32 scale per output channel."""
        if isinstance(layer, Int8WeightOnlyLinear):
            return layer.weight.numel() + layer.scale.numel() * 4
        return None
