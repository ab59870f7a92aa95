"""selection: non-inferiority against the best candidate, overall and per group; Pareto; the recommendation."""

from .decide import COST_PRIORITIES, DecisionConfig, decide
from .stats import holm, mcnemar_exact, mean_ci, non_inferiority, paired_bootstrap

__all__ = ["COST_PRIORITIES", "DecisionConfig", "decide", "holm", "mcnemar_exact", "mean_ci", "non_inferiority",
           "paired_bootstrap"]
