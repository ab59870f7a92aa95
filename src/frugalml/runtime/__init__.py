"""runtime: every way a model runs, and nothing about choosing one; a server builds on this room alone.

- ``sessions``: ONNX Runtime sessions on the CPU, and ``OnnxPredictor`` (a DataFrame in, labels or
  probabilities out) for every exported tabular and text model.
- ``model_dir``: the deployable ``model/`` folder (ONNX and skops, no pickle) and ``load`` (``frugalml.load``).
- ``memory``: this process's resident memory, for the cost measurements.
- ``lm``: the language-model engine (static KV cache, weight-only int8/int4, speculative decoding, continuous
  batching) over a Llama-family model's weights.

It sits under the pipeline's stages (docs/layout.md): candidates check their exports, evaluation times them and
compression judges its variants by running them here.
"""
