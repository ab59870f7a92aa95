"""The per-trial results store: each finished (candidate, fold) fit is saved as it completes, so a
killed run continues with ``--resume`` and loses nothing, and a finished run can be re-decided (another
metric, tolerance or group) without fitting again.

Each candidate's measured cost is stored too, with the artifact it was measured on (the final refit's skops
and ONNX bytes), so a resumed run neither refits nor re-times it. A cost is reused only under the same cost
settings, seed, machine and data; anything else measures again.

Fits are ``.npz`` arrays read with ``allow_pickle=False``; costs are JSON beside raw bytes whose SHA-256 the
JSON records (the skops bytes are only ever loaded through the trusted-types path, when a model is saved).
Nothing in the store is unpickled. Every file is written to a temporary name and renamed; an entry that
does not read back whole is measured again.
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
COSTS = "costs"
_ARTIFACT_FILES = {"skops": ".skops", "onnx": ".onnx"}  # artifact keys that hold bytes -> file suffix


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


def _plain(o):
    """numpy numbers in a cost dict as JSON numbers (anything else is not stored)."""
    if isinstance(o, (np.generic, np.ndarray)):
        return o.tolist()
    raise TypeError(f"{type(o).__name__} is not JSON")


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)


class TrialStore:
    def __init__(self, path: Path, fingerprint: str, resume: bool):
        self.path = Path(path)
        self.fingerprint = fingerprint
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

    def _cost_file(self, key: str, context: dict) -> Path:
        """One entry per candidate and measurement context (cost settings, seed, machine) on this data."""
        digest = hashlib.sha256(json.dumps([context, self.fingerprint], sort_keys=True, default=_plain).encode())
        return self.path / COSTS / f"{key}-{digest.hexdigest()[:12]}.json"

    def load_cost(self, key: str, context: dict) -> tuple[dict, dict] | None:
        """(cost, artifact) as ``measure_cost`` returned them for this candidate in this context; None when
        not stored, or stored under another context, or damaged."""
        f = self._cost_file(key, context)
        try:
            entry = json.loads(f.read_text())
            if entry["context"] != json.loads(json.dumps(context, default=_plain)) or entry["data"] != self.fingerprint:
                return None
            artifact = dict(entry["artifact"])
            for name, sha in entry["files"].items():
                data = None
                if sha is not None:
                    data = f.with_suffix(_ARTIFACT_FILES[name]).read_bytes()
                    if hashlib.sha256(data).hexdigest() != sha:
                        return None  # torn or damaged: measure again
                artifact[name] = data
            return dict(entry["cost"]), artifact
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return None

    def save_cost(self, key: str, context: dict, cost: dict, artifact: dict) -> None:
        """Store a measured cost with its artifact: the bytes first, then the JSON that vouches for them.
        A cost that is not plain JSON (a custom candidate's extra figure) is not stored: measured again."""
        f = self._cost_file(key, context)
        f.parent.mkdir(exist_ok=True)
        files = {}
        for name, suffix in _ARTIFACT_FILES.items():
            data = artifact.get(name)
            files[name] = None if data is None else hashlib.sha256(data).hexdigest()
            if data is not None:
                _write_atomic(f.with_suffix(suffix), data)
        rest = {k: v for k, v in artifact.items() if k not in _ARTIFACT_FILES}
        self._write_entry(f, {"context": context, "data": self.fingerprint, "cost": cost, "artifact": rest,
                              "files": files})

    def update_cost(self, key: str, context: dict, cost: dict) -> None:
        """Replace a stored entry's cost (peak memory, measured after all candidates were timed)."""
        f = self._cost_file(key, context)
        try:
            entry = json.loads(f.read_text())
        except (OSError, ValueError):
            return
        self._write_entry(f, {**entry, "cost": cost})

    @staticmethod
    def _write_entry(f: Path, entry: dict) -> None:
        try:
            text = json.dumps(entry, default=_plain)
        except (TypeError, ValueError):
            return
        _write_atomic(f, text.encode())

    def __len__(self) -> int:
        return len(list(self.path.glob("*-fold*.npz")))
