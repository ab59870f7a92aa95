"""int4: each linear layer's weight stored as 4-bit codes in groups of ``group_size`` consecutive input
features, each group with its own scale and zero point (asymmetric), activations kept in floating point.

A group's weights span [lo, hi]; code q in 0..15 stands for ``(q - 8) * scale + zero`` with
``scale = (hi - lo) / 15`` and ``zero = lo + 8 * scale``, the form PyTorch's CPU int4 kernel expects.
Scales and zeros are stored in bf16 (the kernel's dtype) and the codes are rounded against those bf16
values, so every path below dequantizes to the same weights.

- 1 to ``KERNEL_MAX_ROWS`` rows (decode): ``_weight_int4pack_mm_for_cpu`` on the packed codes with bf16
  activations (with fp32 ones that kernel is tens of times slower), the result cast back to their dtype.
- More rows (prefill), or when the kernel is missing (``KERNEL`` False): the weight is dequantized on the
  fly and multiplied with ``F.linear`` in the activations' dtype.

Layers the int4 path cannot take are kept as int8 (``Int8WeightOnlyLinear``, per-channel) instead:
in_features not divisible by the group size (e.g. SmolLM2's 576 with group 128), or out_features not a
multiple of 16 (the packed kernel's block). The tensors kept for the cache are the portable ones (codes
two to a byte, scales and zeros); the kernel's layout, which depends on the CPU, is made again on loading.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ....errors import ConfigError
from . import WeightFormat, register_format
from .int8 import Int8WeightOnlyLinear, restore_int8

KERNEL = hasattr(torch.ops.aten, "_weight_int4pack_mm_for_cpu") and hasattr(
    torch.ops.aten, "_convert_weight_to_int4pack_for_cpu")
KERNEL_MAX_ROWS = 4  # like int8: the packed kernel is fast for decode, compute-bound beyond a few rows
GROUP_SIZES = (32, 64, 128)
OUT_MULTIPLE = 16  # the packed kernel's block along out_features
KERNEL_BLOCK_N = 64  # the kernel's packed layout on AVX512 CPUs: (N/64, K, 32) bytes, checked per layer


def quantize_groups(w: torch.Tensor, group_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """w (N, K) -> codes (N, K) uint8 in 0..15 and scales_and_zeros (K/G, N, 2) bf16."""
    n, k = w.shape
    groups = w.float().contiguous().view(n, k // group_size, group_size)  # (N, K/G, G)
    lo, hi = groups.amin(-1), groups.amax(-1)  # (N, K/G)
    scale = ((hi - lo) / 15).clamp(min=1e-8).to(torch.bfloat16)
    zero = (lo + 8 * scale.float()).to(torch.bfloat16)
    codes = torch.round((groups - zero.float()[..., None]) / scale.float()[..., None] + 8).clamp(0, 15)
    scales_and_zeros = torch.stack([scale, zero], dim=-1).transpose(0, 1).contiguous()  # (K/G, N, 2)
    return codes.view(n, k).to(torch.uint8), scales_and_zeros


def pack_nibbles(codes: torch.Tensor) -> torch.Tensor:
    """codes (N, K) 0..15 -> (N, K/2) uint8: even columns in the low half-byte, odd in the high."""
    return codes[:, 0::2] | (codes[:, 1::2] << 4)


def unpack_nibbles(packed: torch.Tensor) -> torch.Tensor:
    """(N, K/2) uint8 -> codes (N, K)."""
    return torch.stack([packed & 15, packed >> 4], dim=-1).view(packed.shape[0], -1)


def unpack_kernel_layout(packed: torch.Tensor, n: int, k: int) -> torch.Tensor | None:
    """The codes (N, K) back from the CPU kernel's packed weight, or None where N is not a whole number of
    its blocks. The layout is the kernel's private business: callers check the result."""
    b = KERNEL_BLOCK_N
    if n % b or packed.numel() * 2 != n * k:
        return None
    blocks = packed.view(n // b, k, b // 2)  # (N/64, K, 32)
    codes = torch.cat([blocks & 15, blocks >> 4], dim=-1)  # (N/64, K, 64): rows j and j + 32 of a block
    return codes.permute(0, 2, 1).reshape(n, k)


def fits_int4(linear: nn.Linear, group_size: int) -> bool:
    return linear.in_features % group_size == 0 and linear.out_features % OUT_MULTIPLE == 0


class Int4WeightOnlyLinear(nn.Module):
    """An nn.Linear with int4 group-wise weights. Holds the kernel's packed codes when the kernel exists
    (``packed``), and its own nibble-packed copy (``codes``) only where the kernel's layout cannot be read
    back exactly, so the dequantizing path needs no second copy on the usual CPUs."""

    def __init__(self, codes: torch.Tensor, scales_and_zeros: torch.Tensor, bias: torch.Tensor | None = None):
        """codes (N, K/2) uint8, two to a byte (``pack_nibbles``); scales_and_zeros (K/G, N, 2) bf16."""
        super().__init__()
        n, k = codes.shape[0], codes.shape[1] * 2
        groups = scales_and_zeros.shape[0]
        if codes.dtype != torch.uint8 or scales_and_zeros.shape != (groups, n, 2) or k % groups \
                or k // groups not in GROUP_SIZES:
            raise ValueError(f"int4 codes {tuple(codes.shape)} and scales {tuple(scales_and_zeros.shape)} do not fit")
        self.in_features, self.out_features, self.group_size = k, n, k // groups
        self.register_buffer("scales_and_zeros", scales_and_zeros)  # (K/G, N, 2) bf16
        unpacked = unpack_nibbles(codes)  # (N, K)
        packed = None
        if KERNEL:
            packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(unpacked.to(torch.int32), 2)
        self.register_buffer("packed", packed)  # kernel layout, (N, K/2) uint8 bytes
        layout = None if packed is None else unpack_kernel_layout(packed, n, k)
        readable = layout is not None and torch.equal(layout, unpacked)
        self.register_buffer("codes", None if readable else codes)  # (N, K/2) uint8
        self.bias = None if bias is None else nn.Parameter(bias)

    @classmethod
    def quantize(cls, linear: nn.Linear, group_size: int = 32) -> "Int4WeightOnlyLinear":
        if group_size not in GROUP_SIZES:
            raise ConfigError(f"int4 group size must be one of {GROUP_SIZES}, not {group_size}")
        if not fits_int4(linear, group_size):
            raise ConfigError(f"int4 needs in_features divisible by {group_size} and out_features by "
                              f"{OUT_MULTIPLE}, not {linear.in_features} and {linear.out_features}; keep it int8")
        codes, scales_and_zeros = quantize_groups(linear.weight.detach(), group_size)
        return cls(pack_nibbles(codes), scales_and_zeros, None if linear.bias is None else linear.bias.detach().clone())

    def unpacked_codes(self) -> torch.Tensor:  # (N, K) uint8
        if self.codes is not None:
            return unpack_nibbles(self.codes)
        return unpack_kernel_layout(self.packed, self.out_features, self.in_features)

    def tensors(self) -> dict[str, torch.Tensor]:
        out = {"codes": pack_nibbles(self.unpacked_codes()), "scales_and_zeros": self.scales_and_zeros}
        return out if self.bias is None else {**out, "bias": self.bias}

    def dequantize(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """The weight (N, K) these codes stand for, in ``dtype``."""
        n, k, g = self.out_features, self.in_features, self.group_size
        scale = self.scales_and_zeros[..., 0].t().to(dtype)[..., None]  # (N, K/G, 1)
        zero = self.scales_and_zeros[..., 1].t().to(dtype)[..., None]
        codes = self.unpacked_codes().view(n, k // g, g).to(dtype)  # (N, K/G, G)
        return ((codes - 8) * scale + zero).view(n, k)

    def forward(self, x):  # (..., in) -> (..., out)
        lead = x.shape[:-1]
        x2 = x.reshape(-1, x.shape[-1])  # (N, in)
        if self.packed is not None and x2.shape[0] <= KERNEL_MAX_ROWS:
            y = torch.ops.aten._weight_int4pack_mm_for_cpu(x2.to(torch.bfloat16), self.packed, self.group_size,
                                                           self.scales_and_zeros.to(torch.bfloat16)).to(x.dtype)
        else:
            y = F.linear(x2, self.dequantize(x.dtype))
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(*lead, self.out_features)


@register_format
@dataclass(frozen=True)
class Int4WeightOnlyConfig(WeightFormat):
    """int4 where a layer fits its groups, int8 where it does not (see the module docstring)."""

    name = "int4"
    quantized = True
    version = 1
    group_size: int = 32

    def __post_init__(self):
        if self.group_size not in GROUP_SIZES:
            raise ConfigError(f"int4 group size must be one of {GROUP_SIZES}, not {self.group_size}")

    def convert_linear(self, linear: nn.Linear) -> nn.Module:
        if fits_int4(linear, self.group_size):
            return Int4WeightOnlyLinear.quantize(linear, self.group_size)
        return Int8WeightOnlyLinear.quantize(linear)

    def restore_linear(self, linear: nn.Linear, tensors: dict[str, torch.Tensor]) -> nn.Module:
        if fits_int4(linear, self.group_size):
            layer = Int4WeightOnlyLinear(tensors["codes"], tensors["scales_and_zeros"], tensors.get("bias"))
            if layer.group_size != self.group_size:
                raise ValueError(f"stored int4 groups of {layer.group_size}, not {self.group_size}")
            return layer
        return restore_int8(tensors)

    @classmethod
    def layer_bytes(cls, layer: nn.Module) -> int | None:
        """Half a byte a weight + a bf16 scale and zero per group (the packed codes the decode kernel reads;
        a second copy kept for prefill is not read). The int8 layers are counted by int8."""
        if isinstance(layer, Int4WeightOnlyLinear):
            return layer.out_features * layer.in_features // 2 + layer.scales_and_zeros.numel() * 2
        return None
