"""torch's dynamic int8 kernels: every Linear of a module replaced by one whose weights are int8 and whose input
is quantized per call (``torch.ao.quantization.quantize_dynamic``).

A MiniLM estimator whose ``runtime`` is ``"torch-int8"`` (per tensor) or ``"torch-int8-per-channel"`` runs its
fp32 network through this the first time it is used in a process: nothing quantized is stored, and the result is
deterministic. torch deprecates the API (torchao replaces it, and its int8 path only pays off with
torch.compile); it is kept as the torch-only point of comparison for ONNX Runtime's int8 kernels
(``compression.torch_int8_dynamic`` measured both).
"""

from __future__ import annotations

import copy
import warnings

from ..errors import need


def dynamic_int8(module, per_channel: bool):
    """A copy of ``module`` (left untouched) whose Linear layers are torch's dynamic int8 ones, in eval mode."""
    torch = need("torch", "torch's int8 kernels", "torch")
    from torch.ao.quantization import default_dynamic_qconfig, per_channel_dynamic_qconfig, quantize_dynamic

    qconfig = per_channel_dynamic_qconfig if per_channel else default_dynamic_qconfig
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the deprecation of torch.ao.quantization and of quantized dtypes
        return quantize_dynamic(copy.deepcopy(module), {torch.nn.Linear: qconfig}, dtype=torch.qint8).eval()
