"""The preprocessing every candidate carries: median imputation + scaling for numbers, one-hot for categories."""

from __future__ import annotations

from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from ..data import Schema


def build_pipeline(estimator, schema: Schema, scale: bool = True) -> Pipeline:
    parts = []
    if schema.numeric:
        steps = [("impute", SimpleImputer(strategy="median"))] + ([("scale", StandardScaler())] if scale else [])
        parts.append(("num", Pipeline(steps), schema.numeric))
    if schema.categorical:
        # Missing categories arrive as their own value (data.MISSING); unseen ones encode to all zeros.
        parts.append(("cat", OneHotEncoder(handle_unknown="ignore", sparse_output=False), schema.categorical))
    prep = ColumnTransformer(parts, remainder="drop", sparse_threshold=0.0)
    return Pipeline([("prep", prep), ("model", estimator)])
