"""torch's dynamic int8 quantization of MiniLM's Linear layers (the encoder, or a fine-tuned or pruned network),
for comparison with the ONNX Runtime path.

The technique is a choice of runtime: the variant's MiniLM runs on ``runtime.torch_int8`` (``quantize_dynamic``:
int8 weights, each input quantized per call), per channel or per tensor. It stores no weights: the network
is quantized from its fp32 weights the first time it runs in a process (deterministic). torch deprecates the
API (torchao replaces it, and its int8 path only pays off with torch.compile). It is less accurate than ONNX
Runtime's (MiniLM, debate statements: cosine to fp32 mean 0.96, min 0.90 per channel; 0.92 / 0.77 per
tensor) and slower.
"""

from __future__ import annotations

from dataclasses import dataclass

from . import Technique, register_technique
from .encoder import applies_minilm, with_runtime


@dataclass(frozen=True)
class TorchInt8DynamicConfig:
    per_channel: bool = True


def _apply(pipeline, cfg: TorchInt8DynamicConfig, calibration=None):
    return with_runtime(pipeline, "torch-int8-per-channel" if cfg.per_channel else "torch-int8")


def _settings(pipeline) -> list[TorchInt8DynamicConfig]:
    return [TorchInt8DynamicConfig(per_channel=True), TorchInt8DynamicConfig(per_channel=False)]


register_technique(Technique("torch-int8-dynamic", TorchInt8DynamicConfig, _apply, applies_minilm, _settings,
                             stage=3, description="MiniLM with torch.ao dynamic int8 Linear layers (deprecated API; "
                                         "for comparison)"))
