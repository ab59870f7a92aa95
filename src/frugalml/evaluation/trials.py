"""The per-trial results store: each finished (candidate, fold) fit is saved as it completes, so a
killed run continues with ``--resume`` and loses nothing, and a finished run can be re-decided (another
metric, tolerance or group) without fitting again.

Files are ``.npz`` arrays read with ``allow_pickle=False``: the store is safe to load.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from ..data import Splits, Task

FINGERPRINT = "fingerprint.json"


def data_fingerprint(task: Task, splits: Splits) -> str:
    """Changes whenever the rows, the target or the splits change (so stored predictions would be wrong)."""
    h = hashlib.sha256()
    h.update(pd.util.hash_pandas_object(task.X, index=False).to_numpy().tobytes())
    h.update(np.ascontiguousarray(task.y).tobytes())
    h.update(json.dumps([task.schema.to_json(), splits.folds, splits.repeats, splits.seed]).encode())
    return h.hexdigest()[:16]


def estimator_key(name: str, estimator) -> str:
    """A file-safe key for one candidate and its exact settings."""
    digest = hashlib.sha256(repr(estimator).encode()).hexdigest()[:10]
    return f"{re.sub(r'[^A-Za-z0-9_.-]', '_', name)}-{digest}"


class TrialStore:
    def __init__(self, path: Path, fingerprint: str, resume: bool):
        self.path = Path(path)
        if self.path.exists():
            try:
                same = json.loads((self.path / FINGERPRINT).read_text())["data"] == fingerprint
            except (OSError, ValueError, KeyError):
                same = False
            if not (resume and same):
                shutil.rmtree(self.path)
        self.path.mkdir(parents=True, exist_ok=True)
        (self.path / FINGERPRINT).write_text(json.dumps({"data": fingerprint}))

    def _file(self, key: str, fold: int) -> Path:
        return self.path / f"{key}-fold{fold}.npz"

    def load(self, key: str, fold: int) -> dict | None:
        f = self._file(key, fold)
        if not f.exists():
            return None
        try:
            with np.load(f, allow_pickle=False) as z:
                outputs = {k[4:]: z[k] for k in z.files if k.startswith("out_")}
                return {"fit_s": float(z["fit_s"]), "outputs": outputs}
        except (OSError, ValueError, KeyError):
            return None  # damaged (e.g. killed mid-write): fit again

    def save(self, key: str, fold: int, result: dict) -> None:
        if "outputs" not in result:
            return  # failures are not stored: a resumed run tries them again
        f = self._file(key, fold)
        tmp = f.with_name(f.name + ".tmp.npz")
        np.savez(tmp, fit_s=np.float64(result["fit_s"]), **{f"out_{k}": v for k, v in result["outputs"].items()})
        os.replace(tmp, f)

    def __len__(self) -> int:
        return len(list(self.path.glob("*-fold*.npz")))
