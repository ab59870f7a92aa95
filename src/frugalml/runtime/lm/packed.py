"""fp32/bf16 linear layers with weights packed once for oneDNN, for the decode engine's batch-1 matmuls.

At one row of activations PyTorch's F.linear reads SmolLM2-135M's fp32 weights at 14.1 GB/s on this machine's
2 cores (26.3 tokens/s); oneDNN on the weights reordered once into its blocked layout reads them at 24.3 GB/s
(45.1 tokens/s), same greedy tokens, and prefill runs at 1,102 instead of 576 tokens/s (``frugal bench-lm
builtin:smollm2 [--no-pack] --no-quality --batch 1``; benchmarks/RESULTS.md). bf16 weights pack the same way
where oneDNN has a bf16 matmul.

The packed weight is an opaque oneDNN tensor: pack last (after ``.to(dtype)``), not before quantizing; a
packed model cannot be deep-copied or converted to another dtype. The float32 and bfloat16 weight formats
(``formats/floating.py``) put these layers in. The matmul goes through a custom op so that
``compile_decode`` can put it in its graph as one opaque call.
"""

from __future__ import annotations

import torch
from torch import nn

AVAILABLE = torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_reorder_linear_weight")
# oneDNN's bf16 matmul needs AVX-512 BF16/BW or AVX-NE-CONVERT; elsewhere bf16 layers stay as they are
BF16 = AVAILABLE and hasattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported") and torch.ops.mkldnn._is_mkldnn_bf16_supported()


@torch.library.custom_op("frugalml::packed_linear", mutates_args=())
def packed_linear(x: torch.Tensor, packed: torch.Tensor, out_features: int) -> torch.Tensor:
    """x (..., in) @ the packed (out, in) weight -> (..., out)."""
    return torch.ops.mkldnn._linear_pointwise(x, packed, None, "none", [None], "")


@packed_linear.register_fake
def _(x, packed, out_features):
    return x.new_empty(*x.shape[:-1], out_features)


class PackedLinear(nn.Module):
    def __init__(self, linear: nn.Linear):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.dtype = linear.weight.dtype
        weight = linear.weight.detach().contiguous()  # (out, in)
        self.register_buffer("packed", torch.ops.mkldnn._reorder_linear_weight(weight, 1))  # laid out for 1 row
        self.bias = None if linear.bias is None else nn.Parameter(linear.bias.detach().clone())

    def forward(self, x):  # (..., in) -> (..., out)
        y = packed_linear(x, self.packed, self.out_features)
        return y if self.bias is None else y + self.bias


def packable(dtype: torch.dtype) -> bool:
    """Whether oneDNN here takes weights of ``dtype``: float32, and bfloat16 where it has a bf16 matmul."""
    return AVAILABLE and (dtype == torch.float32 or (dtype == torch.bfloat16 and BF16))


def warm_up(model) -> None:
    """One decode-sized and one prefill-sized call, so that oneDNN's one-time set-up is paid at load and not in
    the first request's time to first token (``frugal generate`` on a 42-token prompt: 327 ms to the first
    token without this warm-up, 58 ms with it). A new input length still costs a little once (one kernel per
    weight shape and row count, cached)."""
    device = model.embed_tokens.weight.device
    model.setup_cache(1, 16)
    with torch.inference_mode():
        for t in (8, 1):
            model(torch.zeros(1, t, dtype=torch.long, device=device), torch.arange(t, device=device))
