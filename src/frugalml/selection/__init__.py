"""selection: non-inferiority against the best candidate, overall and per group; Pareto; the recommendation."""

from .decide import COST_PRIORITIES, DecisionConfig, decide
from .stats import holm, mean_ci, non_inferiority

__all__ = ["COST_PRIORITIES", "DecisionConfig", "decide", "holm", "mean_ci", "non_inferiority"]
