"""The statistics behind "on par": the Nadeau-Bengio corrected resampled t-test, as a non-inferiority
test with a margin, and Holm's step-down correction across groups.

Scores are in higher-is-better form; d_j = score(candidate)_j - score(best)_j over the same J folds.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy import special, stats


@dataclass(frozen=True)
class NonInferiority:
    diff_mean: float  # mean(d)
    se: float  # corrected standard error
    lower: float  # one-sided (1 - alpha) lower bound of the mean difference
    upper: float  # the matching upper bound (the two-sided 1 - 2 alpha interval is [lower, upper])
    p_value: float  # H0: mean difference <= -margin
    n_folds: int

    def non_inferior(self, alpha: float) -> bool:
        return self.p_value < alpha


def corrected_se(d: np.ndarray, test_train_ratio: float) -> float:
    """Nadeau & Bengio (2003): SE = sqrt((1/J + n_test/n_train) * var(d)), var with ddof=1."""
    j = len(d)
    return float(np.sqrt((1.0 / j + test_train_ratio) * np.var(d, ddof=1)))


def non_inferiority(d: np.ndarray, margin: float, test_train_ratio: float, alpha: float = 0.05) -> NonInferiority:
    """Test H0: mean(d) <= -margin against H1: mean(d) > -margin; NaN folds are left out."""
    d = np.asarray(d, dtype=float)
    d = d[np.isfinite(d)]
    j = len(d)
    if j < 2:
        return NonInferiority(float(np.mean(d)) if j else float("nan"), float("nan"), float("nan"),
                              float("nan"), float("nan"), j)
    mean = float(np.mean(d))
    se = corrected_se(d, test_train_ratio)
    t_crit = t_quantile(1 - alpha, j - 1)
    if se == 0.0:  # identical scores on every fold (e.g. the best against itself)
        p = 0.0 if mean > -margin else 1.0
    else:
        p = float(special.stdtr(j - 1, -(mean + margin) / se))  # t survival function, without scipy.stats' overhead
    return NonInferiority(mean, se, mean - t_crit * se, mean + t_crit * se, p, j)


@lru_cache(maxsize=256)
def t_quantile(q: float, df: int) -> float:
    """Student's t quantile (cached: a decision and its stability draws ask for the same few many times)."""
    return float(stats.t.ppf(q, df))


def mean_ci(scores: np.ndarray, test_train_ratio: float, level: float = 0.95) -> tuple[float, float, float]:
    """Mean of fold scores and its corrected two-sided confidence interval."""
    s = np.asarray(scores, dtype=float)
    s = s[np.isfinite(s)]
    if len(s) < 2:
        m = float(np.mean(s)) if len(s) else float("nan")
        return m, m, m
    m = float(np.mean(s))
    half = t_quantile(0.5 + level / 2, len(s) - 1) * corrected_se(s, test_train_ratio)
    return m, m - half, m + half


def holm(p_values: dict[str, float]) -> dict[str, float]:
    """Holm-adjusted p-values (step-down): reject H0 for key k at family-wise level alpha iff adjusted <= alpha."""
    order = sorted(p_values, key=lambda k: p_values[k])
    m = len(order)
    adjusted, running = {}, 0.0
    for i, k in enumerate(order):
        running = max(running, min(1.0, (m - i) * p_values[k]))
        adjusted[k] = running
    return adjusted


def paired_bootstrap(score_a, score_b, rows: np.ndarray, n_boot: int, seed: int = 0) -> tuple[float, np.ndarray]:
    """Observed score_a - score_b on ``rows`` and its paired bootstrap distribution.

    Both scores see the same resampled rows each time, so what the two models share cancels out.
    ``score_x(idx)`` computes the metric on the row indices ``idx``.
    """
    rng = np.random.default_rng(seed)
    observed = score_a(rows) - score_b(rows)
    diffs = np.empty(n_boot)
    for b in range(n_boot):
        idx = rows[rng.integers(0, len(rows), size=len(rows))]
        diffs[b] = score_a(idx) - score_b(idx)
    return float(observed), diffs[np.isfinite(diffs)]


def mcnemar_exact(correct_a: np.ndarray, correct_b: np.ndarray) -> float:
    """Exact McNemar test: p-value of "A and B make as many errors" from the discordant pairs."""
    b = int(np.sum(correct_a & ~correct_b))
    c = int(np.sum(~correct_a & correct_b))
    if b + c == 0:
        return 1.0
    return float(stats.binomtest(b, b + c, 0.5).pvalue)


VERDICTS = ("harm", "non_inferior", "inconclusive")


def verdict(lower: float, upper: float, margin: float) -> str:
    """Three outcomes for a difference d (higher-is-better) and its confidence bounds, against the margin:
    ``harm`` (d < -margin shown: upper < -margin), ``non_inferior`` (d > -margin shown: lower > -margin), or
    ``inconclusive`` (the interval straddles -margin: too few rows to tell)."""
    if upper < -margin:
        return "harm"
    if lower > -margin:
        return "non_inferior"
    return "inconclusive"


def rows_needed(n: int, diff: float, lower: float, upper: float, margin: float) -> int | None:
    """Rows at which an inconclusive difference would become conclusive, if the observed difference and
    per-row variance held: the bound on the estimate's side of -margin shrinks as 1/sqrt(rows).

    None when the estimate sits on the margin itself (no number of rows decides it), or a bound is infinite (too
    few draws or folds to have one)."""
    if not (np.isfinite(lower) and np.isfinite(upper)):
        return None
    if diff > -margin and diff > lower:  # non-inferiority side: lower bound must clear -margin
        ratio = (diff - lower) / (diff + margin)
    elif diff < -margin and upper > diff:  # harm side: upper bound must fall below -margin
        ratio = (upper - diff) / (-margin - diff)
    else:
        return None
    return int(np.ceil(n * ratio ** 2))
