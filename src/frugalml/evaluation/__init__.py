"""evaluation: quality (same folds for all, per group) and cost (measured on the deployable artifact)."""

from .cost import CostConfig, count_params, measure_cost, measure_peak_memory
from .energy import EnergyMeter
from .metrics import Metric, resolve_metric
from .quality import FoldScores, evaluate_quality, group_masks

__all__ = ["CostConfig", "count_params", "measure_cost", "measure_peak_memory", "EnergyMeter", "Metric", "resolve_metric",
           "FoldScores", "evaluate_quality", "group_masks"]
