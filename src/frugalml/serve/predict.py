"""``POST /v1/predict`` for a model folder or run directory: rows checked against the saved input schema,
gathered with other requests' rows by the dynamic batcher, answered in request order."""

from __future__ import annotations

from typing import Annotated, Any, Optional, Union

import numpy as np
import pandas as pd

from ..data import Schema
from ..errors import ConfigError, DataError
from ..runtime.model_dir import DeployedModel
from .batcher import DynamicBatcher


def request_model(schema: Schema):
    """The pydantic body of /v1/predict for this schema: every feature column present in every row (null is a
    missing value), numbers for numeric columns, strings for texts, no unknown fields (a misspelt column is an
    error, not a silently missing one). The target column may ride along and is ignored."""
    from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr, create_model

    if schema.image:
        raise ConfigError("frugal serve does not serve image models yet (a request would carry the image's bytes); "
                          "load it in Python with frugalml.load and call predict on images")
    # a finite float32: ONNX Runtime reads numbers as float32, where larger ones would become inf
    number = Optional[Annotated[float, Field(strict=True, ge=-F32_MAX, le=F32_MAX, allow_inf_nan=False)]]
    category = Optional[Union[StrictStr, StrictInt, StrictFloat, StrictBool]]
    kinds = [(c, number) for c in schema.numeric] + [(c, category) for c in schema.categorical] + \
        [(c, Optional[StrictStr]) for c in schema.text]
    fields = {f"f{i}": (kind, Field(..., alias=c)) for i, (c, kind) in enumerate(kinds)}
    if schema.target not in schema.columns:
        fields["target"] = (Any, Field(None, alias=schema.target))
    row = create_model("Row", __config__=ConfigDict(extra="forbid", populate_by_name=False), **fields)

    class PredictRequest(BaseModel):
        model_config = ConfigDict(extra="forbid")
        rows: list[row] = Field(..., min_length=1, description="Feature values by column name, one object per row.")

    return PredictRequest


F32_MAX = float(np.finfo(np.float32).max)


def _plain(values) -> list:
    """numpy values -> JSON-native Python values."""
    return [v.item() if isinstance(v, np.generic) else v for v in values]


def predictor(model: DeployedModel):
    """-> predict(rows) -> one answer dict per row; what the batcher runs in its worker thread."""
    columns = model.schema.columns
    names = [f"f{i}" for i in range(len(columns))]
    numeric = set(model.schema.numeric)

    def predict(rows: list) -> list[dict]:
        # arrays of the final dtypes first (null -> NaN in numbers): the frame is then a wrapper, no per-column
        # conversions, which at a few rows cost more than the model
        frame = pd.DataFrame({c: np.array([getattr(r, n) for r in rows], dtype=np.float64 if c in numeric else object)
                              for c, n in zip(columns, names)}, columns=columns, copy=False)
        labels, proba = model.predict_with_proba(frame)
        if proba is not None:
            finite = np.isfinite(proba).all()
        else:
            finite = model.schema.task != "regression" or np.isfinite(np.asarray(labels, dtype=float)).all()
        if not finite:  # JSON has no NaN; the batcher then runs each request alone, so only this one gets a 422
            raise DataError("the model gives no finite answer for these rows: their numbers are far outside what it "
                            "was trained on")
        labels = _plain(labels)
        if proba is None:
            return [{"prediction": p} for p in labels]
        return [{"prediction": p, "probabilities": q} for p, q in zip(labels, proba.tolist())]

    return predict


def answer(model: DeployedModel, per_row: list[dict]) -> dict:
    out = {"predictions": [a["prediction"] for a in per_row]}
    if per_row and "probabilities" in per_row[0]:
        out["probabilities"] = [a["probabilities"] for a in per_row]
        out["classes"] = _plain(model.classes_)
    return out


class PredictorService:
    """The model folder's predictor behind the dynamic batcher; loaded in the background by the app."""

    def __init__(self, folder, schema: Schema, config, metrics):
        self.folder, self.schema, self.config, self.metrics = folder, schema, config, metrics
        self.body = request_model(schema)
        self.model = self.batcher = None

    def load(self) -> None:
        from ..runtime.model_dir import load

        self.model = load(self.folder, threads=self.config.threads)
        self.batcher = DynamicBatcher(predictor(self.model), self.config.max_batch_size or 64,
                                      self.config.max_wait_ms, self.config.max_queue, self.metrics)

    async def start(self) -> None:
        self.batcher.start()
        example = {c: (0.0 if c in self.schema.numeric else "") for c in self.schema.columns}
        await self.batcher.submit(self.body(rows=[example]).rows)  # the first runtime call pays one-off costs

    async def stop(self) -> None:
        await self.batcher.stop()
