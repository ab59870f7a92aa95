"""How stable a decision is: resample the rows, score the stored out-of-fold predictions again, decide again.

No model is refitted and no cost is measured again: each draw weights every row by a Poisson(1) count (the
Poisson bootstrap, which for thousands of rows behaves as resampling n rows with replacement and can be
drawn in chunks), rescores every candidate's stored fold predictions, overall and per group, with those
weights, and runs the same decision. A row keeps its weight in every repeat of the k-fold split, so what
the repeats share stays shared. The share of draws that recommend the same candidate is the stability.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from typing import Callable

import numpy as np

from ..data import Splits
from ..evaluation.metrics import Metric, Replay, resampled_scores
from ..evaluation.quality import FoldScores

STABLE = 0.8  # below this share, the reason says the decision is tentative


def stability(fold_scores: list[FoldScores], splits: Splits, y: np.ndarray, masks: dict[str, np.ndarray],
              metric: Metric, task: str, n_classes: int | None, decide_again: Callable[[list[FoldScores]], str],
              recommended: str, draws: int = 200, seed: int = 0) -> dict:
    """-> {"same_recommendation": share, "draws", "recommended_in_draws": {name: share}, "method"}."""
    ok = [fs for fs in fold_scores if fs.error is None and fs.outputs is not None]
    rng = np.random.default_rng(seed)
    n = len(y)
    chunk = max(1, min(draws, int(4e6 // max(n, 1))))  # weights held at once: about 32 MB
    picks: Counter = Counter()
    done = 0
    while done < draws:
        b = min(chunk, draws - done)
        weights = rng.poisson(1.0, size=(b, n)).astype(float)
        scored = [_rescore(fs, splits, y, masks, metric, task, n_classes, weights) for fs in ok]
        for k in range(b):
            picks[decide_again([replace(fs, scores=s[k], group_scores={g: v[k] for g, v in gs.items()})
                                for fs, (s, gs) in zip(ok, scored)])] += 1
        done += b
    return {"same_recommendation": picks[recommended] / draws, "draws": draws,
            "recommended_in_draws": {name: c / draws for name, c in picks.most_common()},
            "method": "Poisson bootstrap of the rows over the stored out-of-fold predictions; no refit, costs as "
                      "measured"}


def _rescore(fs: FoldScores, splits: Splits, y, masks, metric, task, n_classes, weights):
    """(draws, folds) scores overall and per group for one candidate under the given row weights."""
    J = len(splits.indices)
    scores = np.full((len(weights), J), np.nan)
    groups = {g: np.full((len(weights), J), np.nan) for g in masks}
    for j, (_, test) in enumerate(splits.indices):
        replay = Replay(task, n_classes, fs.outputs[j])
        local = np.arange(len(test))
        w, yt = weights[:, test], y[test]
        scores[:, j] = resampled_scores(metric, replay, local, yt, w)
        for g, mask in masks.items():
            sel = local[mask[test]]
            if len(sel):
                groups[g][:, j] = resampled_scores(metric, replay, sel, yt[sel], w[:, sel])
    return scores, groups
