"""Weight-only int8 for the decode engine: every linear layer's weight stored as int8 with one scale per
output channel (symmetric), activations kept in floating point.

Batch-1 decode is bound by reading weights, so a quarter of the bytes is most of the win. For one or a
few rows the product runs in PyTorch's packed kernel (``_weight_int8pack_mm``, bf16 activations); for
prefill-sized inputs, where that kernel is slow, the weight is dequantized on the fly and multiplied in
the activations' dtype. Where the kernel is missing, the dequantizing path serves every call.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

KERNEL = hasattr(torch.ops.aten, "_weight_int8pack_mm")
KERNEL_MAX_ROWS = 4  # the packed kernel is fast for decode, not for prefill


class Int8WeightOnlyLinear(nn.Module):
    def __init__(self, linear: nn.Linear):
        super().__init__()
        w = linear.weight.detach().float().contiguous()  # (out, in)
        scale = w.abs().amax(dim=1).clamp(min=1e-12) / 127.0  # (out,)
        self.register_buffer("weight", torch.round(w / scale[:, None]).clamp(-128, 127).to(torch.int8))
        self.register_buffer("scale", scale)
        self.register_buffer("scale_bf16", scale.to(torch.bfloat16))
        self.bias = None if linear.bias is None else nn.Parameter(linear.bias.detach().clone())
        self.in_features, self.out_features = linear.in_features, linear.out_features

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


def quantize_int8(model: nn.Module) -> nn.Module:
    """Replace every nn.Linear of ``model`` in place (a tied output layer gets its own int8 copy)."""
    for name, child in list(model.named_children()):
        if isinstance(child, nn.Linear):
            setattr(model, name, Int8WeightOnlyLinear(child))
        else:
            quantize_int8(child)
    return model


def weight_bytes(model: nn.Module) -> int:
    """Bytes of weights read per decoded token (embeddings excluded: one row is read, not the table).

    int8: one byte a weight + a float32 scale per output channel. int4: half a byte a weight + a bf16 scale
    and zero per group (the packed codes the decode kernel reads; a second copy kept for prefill is not read).
    """
    from .int4 import Int4WeightOnlyLinear  # int4 builds on this module
    from .packed import PackedLinear

    total = 0
    for m in model.modules():
        if isinstance(m, Int8WeightOnlyLinear):
            total += m.weight.numel() + m.scale.numel() * 4
        elif isinstance(m, Int4WeightOnlyLinear):
            total += m.out_features * m.in_features // 2 + m.scales_and_zeros.numel() * 2
        elif isinstance(m, PackedLinear):
            total += m.out_features * m.in_features * m.dtype.itemsize
        elif isinstance(m, nn.Linear):
            total += m.weight.numel() * m.weight.element_size()
    return total
