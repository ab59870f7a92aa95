"""evaluation: quality (same folds for all, per group) and cost (measured on the deployable artifact).

Names load on first use, so that a light submodule (``evaluation.metrics``) does not bring in ONNX Runtime
through the cost code.
"""

from importlib import import_module

_EXPORTS = {"CostConfig": "cost", "count_params": "cost", "measure_cost": "cost", "measure_peak_memory": "cost",
            "EnergyMeter": "energy", "Metric": "metrics", "resolve_metric": "metrics", "FoldScores": "quality",
            "evaluate_quality": "quality", "group_masks": "quality"}


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = list(_EXPORTS)
