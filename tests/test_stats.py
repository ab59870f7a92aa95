import numpy as np
import pytest
from scipy import stats

from frugalml.selection.stats import corrected_se, holm, mean_ci, non_inferiority


def test_corrected_se_matches_nadeau_bengio_formula():
    d = np.array([0.01, -0.02, 0.005, 0.0, -0.01, 0.02, -0.005, 0.01, 0.0, -0.015])
    j, ratio = len(d), 1 / 4  # 5-fold: n_test / n_train = 1/4
    expected = np.sqrt((1 / j + ratio) * d.var(ddof=1))
    assert corrected_se(d, ratio) == pytest.approx(expected)
    # The corrected SE is larger than the naive one: folds share training rows.
    assert corrected_se(d, ratio) > d.std(ddof=1) / np.sqrt(j)


def test_non_inferiority_bound_and_p_value_agree():
    d = np.array([-0.004, -0.002, 0.001, -0.006, -0.003, 0.0, -0.005, -0.001, -0.002, -0.003])
    r = non_inferiority(d, margin=0.01, test_train_ratio=0.25, alpha=0.05)
    t_crit = stats.t.ppf(0.95, 9)
    assert r.lower == pytest.approx(d.mean() - t_crit * corrected_se(d, 0.25))
    # p < alpha exactly when the one-sided lower bound clears the margin
    assert r.non_inferior(0.05) == (r.lower > -0.01)
    assert r.non_inferior(0.05)
    worse = non_inferiority(d - 0.02, margin=0.01, test_train_ratio=0.25)
    assert not worse.non_inferior(0.05) and worse.lower < -0.01


def test_identical_scores_are_on_par_and_nan_folds_are_skipped():
    assert non_inferiority(np.zeros(10), 0.01, 0.25).non_inferior(0.05)
    assert not non_inferiority(np.full(10, -0.02), 0.01, 0.25).non_inferior(0.05)
    r = non_inferiority(np.array([0.0, np.nan, 0.001, -0.001]), 0.01, 0.25)
    assert r.n_folds == 3


def test_false_non_inferiority_rate_is_at_most_alpha():
    """When the true difference sits exactly at -margin, 'on par' must come out at most ~alpha of the time."""
    rng = np.random.default_rng(0)
    hits = sum(non_inferiority(rng.normal(-0.01, 0.01, size=10), 0.01, 0.25).non_inferior(0.05)
               for _ in range(4000))
    assert hits / 4000 < 0.05  # the corrected variance is conservative for independent folds


def test_holm_matches_statsmodels():
    from statsmodels.stats.multitest import multipletests

    p = {"a": 0.01, "b": 0.04, "c": 0.03, "d": 0.005, "e": 0.2}
    ours = holm(p)
    reject, adjusted, _, _ = multipletests(list(p.values()), alpha=0.05, method="holm")
    assert [ours[k] for k in p] == pytest.approx(list(adjusted))
    assert [ours[k] <= 0.05 for k in p] == list(reject)


def test_mean_ci_contains_mean():
    m, lo, hi = mean_ci(np.array([0.7, 0.72, 0.69, 0.71, 0.7]), 0.25)
    assert lo < m < hi
