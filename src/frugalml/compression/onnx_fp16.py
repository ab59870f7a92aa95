"""The MiniLM encoder graph in float16 (weights and computation), inputs and output kept int64 / float32.

Converted with the float16 tool that ships inside onnxruntime (``onnxruntime.transformers.float16``; no
extra package). The graph is half the size. ONNX Runtime's CPU provider runs it, but on x86 most of its
fp16 kernels convert to fp32 and back, so it is no faster than fp32 (MiniLM at batch 32: 10-20%
slower): kept for the size, and for runtimes with native fp16. bfloat16 is not offered: the CPU provider
has no bfloat16 MatMul ("Could not find an implementation for MatMul(13)").
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

from . import Technique, register_technique
from .encoder import applies, fp32_graph, with_runtime


@dataclass(frozen=True)
class OnnxFp16Config:
    graph_optimization: str = "all"


def to_fp16(graph: bytes) -> bytes:
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # values beyond the fp16 range are clamped, with a warning each
        return convert_float_to_float16(onnx.load_from_string(graph), keep_io_types=True).SerializeToString()


def _apply(pipeline, cfg: OnnxFp16Config, calibration=None):
    return with_runtime(pipeline, "onnx", to_fp16(fp32_graph(pipeline)), cfg.graph_optimization, calibration)


register_technique(Technique("onnx-fp16", OnnxFp16Config, _apply, applies, lambda p: [OnnxFp16Config()],
                             stage=3, description="MiniLM graph in float16 on ONNX Runtime (half the size; not "
                                         "faster on x86 CPUs)"))
