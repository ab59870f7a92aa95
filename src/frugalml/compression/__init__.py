"""compression: make a fitted model cheaper, one technique per file, behind one registry and one verb.

``compress(pipeline, SomeConfig(...), calibration=None)`` returns a new fitted pipeline and never
modifies its input. Each technique says which models it applies to, which settings the search should
try (cheapest first), whether it needs calibration rows, and its stage: techniques chain in stage order.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Callable

from ..errors import ConfigError
from ..registry import Registry


@dataclass(frozen=True)
class Technique:
    name: str
    config: type  # the frozen dataclass holding one setting of this technique
    apply: Callable[..., Any]  # (pipeline, config, calibration) -> new fitted pipeline
    applies_to: Callable[[Any], bool]  # pipeline -> bool
    settings: Callable[[Any], list]  # pipeline -> configs to try, cheapest first
    needs_data: bool = False
    interpretable: bool = False  # the result is an interpretable model
    # Where it sits in a chain (the search applies a technique to a variant whose last stage is lower):
    # 0 a new, smaller model (distillation); 1 fewer units (trees, iterations, layers, neurons);
    # 2 thinner units (shallower trees, sparse weights); 3 another number format or runtime.
    stage: int = 1
    description: str = ""


TECHNIQUES: Registry[Technique] = Registry("technique")


def register_technique(t: Technique, *, replace: bool = False) -> Technique:
    return TECHNIQUES.add(t.name, t, replace=replace)


def compress(pipeline, config, calibration=None):
    """Apply the technique whose config this is; ``calibration`` = (X, y) rows for techniques that need data."""
    for _, t in TECHNIQUES.items():
        if isinstance(config, t.config):
            if not t.applies_to(pipeline):
                raise ConfigError(f"technique {t.name} does not apply to {type(final_estimator(pipeline)).__name__}")
            if t.needs_data and calibration is None:
                raise ConfigError(f"technique {t.name} needs calibration data")
            return t.apply(pipeline, config, calibration)
    raise ConfigError(f"no technique is registered for {type(config).__name__}")


def final_estimator(pipeline):
    return pipeline.steps[-1][1] if hasattr(pipeline, "steps") else pipeline


def config_label(config) -> str:
    return ",".join(f"{k}={v}" for k, v in asdict(config).items())


def with_final(pipeline, estimator):
    """A copy of ``pipeline`` (fitted preprocessing shared) whose final step is ``estimator``."""
    from sklearn.pipeline import Pipeline

    return Pipeline(pipeline.steps[:-1] + [(pipeline.steps[-1][0], estimator)])


from . import boosting_truncate, distill, tree_prune, tree_subset  # noqa: E402,F401  (register the built-ins)
# text models: a neural teacher distilled into TF-IDF + linear; MiniLM with fewer layers / FFN neurons
from . import distill_text, prune_encoder  # noqa: E402,F401,I001
# torch MLPs (candidates.torch_mlp): magnitude pruning, neuron pruning, distillation into a narrow MLP
from . import distill_mlp, prune_magnitude, prune_neurons  # noqa: E402,F401,I001
from . import tree_depth  # noqa: E402,F401  (shallower trees)
from . import prune_channels  # noqa: E402,F401  (the small CNN: fewer channels per convolution block)
from . import distill_cnn  # noqa: E402,F401  (an EfficientNet image model distilled into the small CNN)
# MiniLM text models: the encoder on another runtime (ONNX Runtime fp32 / int8 / fp16, torch int8)
from . import onnx_fp32, onnx_int8_dynamic, onnx_int8_static, onnx_fp16, torch_int8_dynamic  # noqa: E402,F401,I001
from . import onnx_trees  # noqa: E402,F401  (a forest as one compact ONNX TreeEnsemble node)

__all__ = ["Technique", "TECHNIQUES", "register_technique", "compress", "final_estimator", "config_label",
           "with_final"]
