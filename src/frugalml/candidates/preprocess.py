"""The preprocessing every candidate carries: median imputation + scaling for numbers, one-hot for categories,
and for text candidates their featurizer on each text column."""

from __future__ import annotations

from sklearn.base import clone
from sklearn.compose import ColumnTransformer
from sklearn.dummy import DummyClassifier, DummyRegressor
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from ..data import Schema
from ..errors import ConfigError


def build_pipeline(estimator, schema: Schema, scale: bool = True) -> Pipeline:
    """Preprocessing + estimator, fitted on frames in the schema's column order (``data.prepare_frame``).

    Columns are selected by position (numbers first, then categories, then texts), which lets the ONNX
    export take one matrix input per kind, ``num``, ``cat`` and ``text``, instead of one input per column:
    at batch 1 every ONNX Runtime input costs about half a microsecond, more than a linear model itself.

    A ``text.TextRecipe`` is unpacked: its featurizer is copied onto every text column (each gets one
    column of strings), its head becomes the model. Any other estimator never sees the text columns.
    An ``image.ImageModel`` gets the image column only, as given (paths, bytes or arrays).
    """
    from .image import ImageModel
    from .text import TextRecipe

    n_num, n_cat = len(schema.numeric), len(schema.categorical)
    featurizer, tabular = None, True
    if isinstance(estimator, TextRecipe):
        featurizer, tabular, estimator = estimator.features, estimator.tabular, estimator.head
    parts = []
    if schema.numeric and tabular:
        steps = [("impute", SimpleImputer(strategy="median"))] + ([("scale", StandardScaler())] if scale else [])
        parts.append(("num", Pipeline(steps), list(range(n_num))))
    if schema.categorical and tabular:
        # Missing categories arrive as their own value (data.MISSING); unseen ones encode to all zeros.
        parts.append(("cat", OneHotEncoder(handle_unknown="ignore", sparse_output=False),
                      list(range(n_num, n_num + n_cat))))
    if featurizer is not None:
        # a scalar column index: the featurizer gets a 1-D column of strings, as TfidfVectorizer expects
        parts += [(f"text{k}", clone(featurizer), n_num + n_cat + k) for k in range(len(schema.text))]
    if isinstance(estimator, ImageModel) and schema.image:  # the image column, as given: the model decodes it
        parts.append(("image", "passthrough", [len(schema.columns) - 1]))
    if not parts and (schema.text or schema.image) and not isinstance(estimator, (DummyClassifier, DummyRegressor)):
        kind = "text" if schema.text else "image"
        raise ConfigError(f"{type(estimator).__name__} reads only numeric and categorical columns and this task has "
                          f"none besides its {kind}; use a {kind} candidate (frugal list)")
    # TF-IDF features stay sparse (a dense copy of a bigram vocabulary would not fit); others are dense
    prep = ColumnTransformer(parts, remainder="drop", sparse_threshold=1.0 if featurizer is not None else 0.0)
    return Pipeline([("prep", prep), ("model", estimator)])
