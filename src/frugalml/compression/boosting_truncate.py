"""Boosting truncation: keep the first k boosting iterations of a gradient-boosted model.

Later iterations correct ever smaller residuals; dropping them shrinks the model and its latency in
proportion. Exact for the kept part: the truncated model predicts what the original would after k rounds.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

from . import Technique, final_estimator, register_technique, with_final


@dataclass(frozen=True)
class BoostingTruncateConfig:
    n_iterations: int


def _kind(est) -> str | None:
    module = type(est).__module__
    if module.startswith("lightgbm") and hasattr(est, "booster_"):
        return "lightgbm"
    if type(est).__name__.startswith("HistGradientBoosting") and hasattr(est, "_predictors"):
        return "hgb"
    return None


def _n_iter(est) -> int:
    return est.booster_.current_iteration() if _kind(est) == "lightgbm" else len(est._predictors)


def _applies(pipeline) -> bool:
    return _kind(final_estimator(pipeline)) is not None


def _settings(pipeline) -> list[BoostingTruncateConfig]:
    n = _n_iter(final_estimator(pipeline))
    return [BoostingTruncateConfig(k) for k in sorted({max(1, int(n * f)) for f in (0.1, 0.2, 0.35, 0.5, 0.75)})
            if k < n]


def _apply(pipeline, cfg: BoostingTruncateConfig, calibration=None):
    est = copy.copy(final_estimator(pipeline))
    if _kind(est) == "lightgbm":
        import lightgbm as lgb

        text = est.booster_.model_to_string(num_iteration=cfg.n_iterations)
        est._Booster = lgb.Booster(model_str=text)
        # not set_params: LightGBM's also writes into _other_params, a dict this shallow copy shares with the
        # original, whose get_params (and clone) would then say n_estimators=k too
        est.n_estimators = cfg.n_iterations
    else:
        est._predictors = list(est._predictors[: cfg.n_iterations])  # n_iter_ follows: len(_predictors)
        est.max_iter = cfg.n_iterations
    return with_final(pipeline, est)


register_technique(Technique("boosting-truncate", BoostingTruncateConfig, _apply, _applies, _settings,
                             stage=1, description="keep the first k iterations of LightGBM / hist gradient boosting"))
