"""A torch module that reads images, as ONNX bytes: the exporter settings every image network shares."""

from __future__ import annotations

import io
import warnings

from ..errors import need


def module_onnx(module, example, output_names: list[str], input_name: str = "image") -> bytes:
    """``module`` (one input, (B, C, R, R) float32 pixels) as ONNX bytes, batch dynamic, traced on ``example``
    by torch's TorchScript exporter (opset 17; no onnxscript needed)."""
    torch = need("torch", "image models", "image")
    buf = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the legacy exporter's deprecation and tracer warnings
        torch.onnx.export(module.eval(), (example,), buf, dynamo=False, opset_version=17, input_names=[input_name],
                          output_names=list(output_names),
                          dynamic_axes={input_name: {0: "batch"}, **{o: {0: "batch"} for o in output_names}})
    return buf.getvalue()
