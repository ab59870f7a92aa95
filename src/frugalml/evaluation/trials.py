"""The per-trial results store: each finished trial is saved as it completes, so a killed run continues
with ``--resume`` and loses only the work in flight, and a finished run can be re-decided (another metric,
tolerance or group) without fitting again.

- ``select``: each (candidate, fold) fit's answers on its test rows.
- ``compress``: each variant tried (``save_variant``): its answers on the screening rows and its artifact
  (skops and ONNX bytes), so a resumed search judges it again without remaking it.
- Both: each measured cost, with the artifact it was measured on (select: the final refit's), so a resumed
  run neither refits nor re-times it. A cost is reused only under the same cost settings, seed, machine and
  data; anything else measures again.

The store records what its trials depend on (``fingerprint.json``: the data and splits, for compress also
the model); ``--resume`` against a store made for anything else is refused, never mixed.

Fits are ``.npz`` arrays read with ``allow_pickle=False``; other entries are JSON beside raw bytes whose
SHA-256 the JSON records (skops bytes are only ever loaded through the trusted-types path). Nothing in the
store is unpickled. Every file is written to a temporary name and renamed, the vouching JSON last; an entry
that does not read back whole (a torn record, a partial file) is listed as damaged and run again.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd

from ..data import Splits, Task
from ..errors import ConfigError

FINGERPRINT = "fingerprint.json"
COSTS = "costs"
VARIANTS = "variants"
_ARTIFACT_FILES = {"skops": ".skops", "onnx": ".onnx"}  # artifact keys that hold bytes -> file suffix


def data_fingerprint(task: Task, splits: Splits) -> str:
    """Changes whenever the rows, the target or the splits change (so stored predictions would be wrong)."""
    return rows_fingerprint(task.X, task.y, [task.schema.to_json(), splits.folds, splits.repeats, splits.seed])


def rows_fingerprint(X, y: np.ndarray, *parts) -> str:
    """A hash of the rows ``X`` (a frame's values; a lazy Parquet dataset's files, by path, size and time of
    change, and the rows taken from them), the labels ``y`` and ``parts``: arrays, dicts of arrays (groups'
    masks) or JSON values."""
    h = hashlib.sha256()
    if isinstance(X, pd.DataFrame):
        h.update(pd.util.hash_pandas_object(X, index=False).to_numpy().tobytes())
    else:
        import os

        h.update(json.dumps([(f, os.stat(f).st_size, os.stat(f).st_mtime_ns) for f in X.files]).encode())
        h.update(np.ascontiguousarray(X.positions).tobytes())
    h.update(np.ascontiguousarray(y).tobytes())
    for part in parts:
        if isinstance(part, dict):
            for a in part.values():
                h.update(np.ascontiguousarray(a).tobytes())
            h.update(json.dumps(sorted(part)).encode())
        elif isinstance(part, np.ndarray):
            h.update(np.ascontiguousarray(part).tobytes())
            h.update(b"|")
        else:
            h.update(json.dumps(part).encode())
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


def _write_artifact(f: Path, artifact: dict) -> tuple[dict, dict]:
    """An artifact's bytes beside the entry ``f`` -> (the rest of the artifact, each file's SHA-256 or None)."""
    files = {}
    for name, suffix in _ARTIFACT_FILES.items():
        data = artifact.get(name)
        files[name] = None if data is None else hashlib.sha256(data).hexdigest()
        if data is not None:
            _write_atomic(f.with_suffix(suffix), data)
    return {k: v for k, v in artifact.items() if k not in _ARTIFACT_FILES}, files


def _read_artifact(f: Path, entry: dict) -> dict:
    """The artifact an entry vouches for; ValueError when a file does not match its SHA-256."""
    artifact = dict(entry["artifact"])
    for name, sha in entry["files"].items():
        data = None
        if sha is not None:
            data = f.with_suffix(_ARTIFACT_FILES[name]).read_bytes()
            if hashlib.sha256(data).hexdigest() != sha:
                raise ValueError(f"{f.with_suffix(_ARTIFACT_FILES[name]).name} damaged")
        artifact[name] = data
    return artifact


class TrialStore:
    """``fingerprint``: what the stored trials depend on, by part (``{"data": ..., "model": ...}``; a string is
    ``{"data": it}``). ``resume`` with a store made for other parts is refused (never mixed); without ``resume``
    the store starts empty. ``reused`` and ``made`` count the entries read back and written, by kind ("fit",
    "variant", "cost"); ``damaged`` lists those that did not read back whole (each was made again)."""

    def __init__(self, path: Path, fingerprint: str | dict, resume: bool):
        self.path = Path(path)
        parts = fingerprint if isinstance(fingerprint, dict) else {"data": fingerprint}
        self.fingerprint = "-".join(parts[k] for k in sorted(parts)) if len(parts) > 1 else parts["data"]
        self.damaged: list[str] = []
        self.reused: dict[str, int] = {"fit": 0, "variant": 0, "cost": 0}
        self.made: dict[str, int] = {"fit": 0, "variant": 0, "cost": 0}
        if self.path.exists():
            if resume:
                try:
                    stored = json.loads((self.path / FINGERPRINT).read_text())
                except (OSError, ValueError) as exc:
                    raise ConfigError(f"--resume: {self.path} is not a trial store that can be read "
                                      f"({type(exc).__name__}); run without --resume to start over") from None
                changed = [k for k in sorted(parts) if stored.get(k) != parts[k]]
                if changed:
                    what = " and ".join({"data": "other data or splits", "model": "another model"}.get(k, k)
                                        for k in changed)
                    raise ConfigError(f"--resume refused: the trials stored in {self.path} are for {what}; "
                                      "nothing is mixed: run without --resume (or use another --out) to start over")
            else:
                shutil.rmtree(self.path)
        self.path.mkdir(parents=True, exist_ok=True)
        (self.path / FINGERPRINT).write_text(json.dumps(parts))

    def summary(self) -> dict:
        """For decision.json's settings: the entries reused and made by this run, and the damaged ones."""
        kinds = [k for k in self.reused if self.reused[k] or self.made[k]]
        return {"reused": {k: self.reused[k] for k in kinds}, "made": {k: self.made[k] for k in kinds},
                "damaged": list(self.damaged)}

    def _file(self, key: str, fold: int) -> Path:
        return self.path / f"{key}-fold{fold}.npz"

    def load(self, key: str, fold: int) -> dict | None:
        f = self._file(key, fold)
        if not f.exists():
            return None
        try:
            with np.load(f, allow_pickle=False) as z:
                outputs = {k[4:]: z[k] for k in z.files if k.startswith("out_")}
                result = {"fit_s": float(z["fit_s"]), "outputs": outputs}
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
            self.damaged.append(f.name)
            return None  # damaged (e.g. killed mid-write): fit again
        self.reused["fit"] += 1
        return result

    def save(self, key: str, fold: int, result: dict) -> None:
        if "outputs" not in result:
            return  # failures are not stored: a resumed run tries them again
        f = self._file(key, fold)
        tmp = f.with_name(f.name + ".tmp.npz")
        np.savez(tmp, fit_s=np.float64(result["fit_s"]), **{f"out_{k}": v for k, v in result["outputs"].items()})
        os.replace(tmp, f)
        self.made["fit"] += 1

    def _cost_file(self, key: str, context: dict) -> Path:
        """One entry per candidate and measurement context (cost settings, seed, machine) on this data."""
        digest = hashlib.sha256(json.dumps([context, self.fingerprint], sort_keys=True, default=_plain).encode())
        return self.path / COSTS / f"{key}-{digest.hexdigest()[:12]}.json"

    def load_cost(self, key: str, context: dict) -> tuple[dict, dict] | None:
        """(cost, artifact) as ``measure_cost`` returned them for this candidate in this context; None when
        not stored, or stored under another context, or damaged."""
        f = self._cost_file(key, context)
        if not f.exists():
            return None
        try:
            entry = json.loads(f.read_text())
            if entry["context"] != json.loads(json.dumps(context, default=_plain)) or entry["data"] != self.fingerprint:
                return None
            found = dict(entry["cost"]), _read_artifact(f, entry)
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            self.damaged.append(f"{COSTS}/{f.name}")
            return None  # torn or damaged: measure again
        self.reused["cost"] += 1
        return found

    def save_cost(self, key: str, context: dict, cost: dict, artifact: dict) -> None:
        """Store a measured cost with its artifact: the bytes first, then the JSON that vouches for them.
        A cost that is not plain JSON (a custom candidate's extra figure) is not stored: measured again."""
        f = self._cost_file(key, context)
        f.parent.mkdir(exist_ok=True)
        rest, files = _write_artifact(f, artifact)
        self._write_entry(f, {"context": context, "data": self.fingerprint, "cost": cost, "artifact": rest,
                              "files": files})
        self.made["cost"] += 1

    def save_variant(self, key: str, meta: dict, outputs: dict[str, np.ndarray], artifact: dict) -> None:
        """A compressed variant as it was made: what it is (``meta``: plain JSON), its answers on the rows it
        was judged on, and its artifact (skops and ONNX bytes): the files first, then the JSON that vouches
        for them by SHA-256."""
        import io

        f = self.path / VARIANTS / f"{key}.json"
        f.parent.mkdir(exist_ok=True)
        buf = io.BytesIO()
        np.savez(buf, **outputs)
        _write_atomic(f.with_suffix(".npz"), buf.getvalue())
        rest, files = _write_artifact(f, artifact)
        files["outputs"] = hashlib.sha256(buf.getvalue()).hexdigest()
        self._write_entry(f, {"data": self.fingerprint, "meta": meta, "artifact": rest, "files": files})
        self.made["variant"] += 1

    def load_variant(self, key: str) -> tuple[dict, dict, dict] | None:
        """(meta, outputs, artifact) as ``save_variant`` stored them; None when not stored. An entry that does
        not read back whole (a torn JSON, bytes that do not match their SHA-256) is listed in ``damaged``."""
        import io

        f = self.path / VARIANTS / f"{key}.json"
        if not f.exists():
            return None
        try:
            entry = json.loads(f.read_text())
            if entry["data"] != self.fingerprint:
                raise ValueError("another store's entry")
            data = f.with_suffix(".npz").read_bytes()
            if hashlib.sha256(data).hexdigest() != entry["files"].pop("outputs"):
                raise ValueError("outputs damaged")
            with np.load(io.BytesIO(data), allow_pickle=False) as z:
                outputs = {k: z[k] for k in z.files}
            artifact = _read_artifact(f, entry)
        except (OSError, ValueError, KeyError, TypeError, AttributeError, EOFError, zipfile.BadZipFile):
            self.damaged.append(f.name)
            return None
        self.reused["variant"] += 1
        return dict(entry["meta"]), outputs, artifact

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
