"""Features computed once per run: a frozen featurizer's output for each distinct value of a task.

A frozen featurizer (the MiniLM encoder on a text, an image model's decoded pixels, HOG or backbone features)
gives a value the same features in every fold, so ``select`` computes them once per run (``embed_distinct``,
split among its worker processes) and every fold's fit, and the final refit, take them from that table
(``using_embeddings``). Only fits use the tables: the cost of a model is always measured on the featurizer
itself.

A featurizer takes part by defining ``frugal_table_key()``: what its features depend on (its settings and the
weights it reads), or None when they are not to be shared; ``_embed(values) -> (n, H) float32``; and
``dim_`` once fitted. Its ``transform`` asks ``lookup`` for the rows a table holds.
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from contextlib import contextmanager
from contextvars import ContextVar

import numpy as np
import pandas as pd
from sklearn.base import clone


class EmbeddingTable:
    """One frozen featurizer's features of distinct values: ``vectors[i]`` (float32) is that of ``values[i]``."""

    def __init__(self, encoder: tuple, values: list[str], vectors: np.ndarray, seconds_per_value: float):
        self.encoder = encoder  # ``frugal_table_key()`` of the featurizer that made them
        self.made_for: set[str] = set()  # the reprs of the unfitted featurizers it serves (``tables_for``)
        self.values = values
        self.vectors = vectors  # (n, H)
        self.seconds_per_value = seconds_per_value  # what computing them cost
        self._index = None

    def index(self) -> dict[str, int]:
        if self._index is None:
            self._index = {t: i for i, t in enumerate(self.values)}
        return self._index

    def __getstate__(self):  # sent to joblib's workers: the index is rebuilt there
        return {**self.__dict__, "_index": None}


MAX_TABLE_BYTES = 256 * 2**20  # a bigger table (175,000 MiniLM texts; 2,000 images at 224 px) is computed fold by fold
_TABLES_KEPT = 8  # tables kept in this process after a run (the last ones made); older ones are dropped
_KEPT_BYTES = 512 * 2**20  # and no more than this in all (the default image ladder's on elpv: 217 MB at most,
# benchmarks/probe_image.py)
_TABLES: OrderedDict[tuple, EmbeddingTable] = OrderedDict()  # (featurizer key, digest of the values) -> table
_ACTIVE: ContextVar[tuple] = ContextVar("frugal_embedding_tables", default=((), None))


class Lent:
    """What the tables saved inside one ``using_embeddings`` block: the seconds their rows took to compute."""

    def __init__(self):
        self.seconds = 0.0


def table_key(featurizer) -> tuple | None:
    key = getattr(featurizer, "frugal_table_key", None)
    return key() if key is not None else None


def frozen_featurizers(estimator) -> list:
    """The parts of an estimator (itself included, searched through its parameters) whose features are shared."""
    try:
        parts = [estimator, *estimator.get_params(deep=True).values()]
    except Exception:  # an estimator that cannot list its parameters holds nothing we could share
        return []
    return [p for p in parts if hasattr(p, "frugal_table_key")]


def distinct_values(X: pd.DataFrame, columns: list[str]) -> list[str]:
    """The distinct values of ``columns`` (as str; a missing one is ""), in order of appearance."""
    return list(dict.fromkeys("" if pd.isna(v) else str(v) for c in columns for v in X[c].to_numpy()))


def _embed_part(featurizer, values: list[str]) -> np.ndarray:
    return featurizer._embed(values)


def _embed_parallel(featurizer, values: list[str], n_jobs: int) -> tuple[np.ndarray, int]:
    """-> ((n, H) features of ``values``, processes used): pieces of similar-length values (for texts: little
    padding) computed in joblib's worker processes, one thread each (on the 2-core machine under load, a MiniLM
    batch took about 18 ms with one torch thread and about 500 ms with two)."""
    from joblib import Parallel, delayed, effective_n_jobs

    workers = effective_n_jobs(n_jobs)
    if workers == 1 or len(values) < 512:
        return featurizer._embed(values), 1
    order = np.argsort([len(t) for t in values], kind="stable")
    pieces = np.array_split(order, 4 * workers)
    done = Parallel(n_jobs=n_jobs)(delayed(_embed_part)(featurizer, [values[i] for i in idx]) for idx in pieces)
    out = np.zeros((len(values), featurizer.dim_), dtype=np.float32)
    for idx, vectors in zip(pieces, done):
        out[idx] = vectors
    return out, workers


def embed_distinct(estimators, X: pd.DataFrame, columns: list[str], n_jobs: int = 1) -> list[EmbeddingTable]:
    """For each frozen featurizer among ``estimators``, its features of every distinct value in ``X[columns]``,
    each computed once (in ``n_jobs`` joblib processes); a table made for the same values is reused.

    Bounded: at most ``_TABLES_KEPT`` tables (``_KEPT_BYTES`` in all) stay in the process, and none over
    ``MAX_TABLE_BYTES`` is made.
    """
    if not columns:
        return []
    values = distinct_values(X, columns)
    featurizers, made_for = {}, {}
    for est in estimators:
        for part in frozen_featurizers(est):
            try:
                fitted = clone(part).fit(values)  # the key may depend on the data (an image's channels)
            except Exception:  # it cannot run here: each fold's fit fails on its own, and says why
                continue
            if (key := table_key(fitted)) is not None:
                featurizers.setdefault(key, fitted)
                made_for.setdefault(key, set()).add(repr(part))
    if not featurizers:
        return []
    digest = hashlib.sha256("\0".join(values).encode("utf-8", "surrogatepass")).hexdigest()
    tables = []
    for key, fitted in featurizers.items():
        table = _TABLES.get((key, digest))
        if table is None:
            if len(values) * fitted.dim_ * 4 > MAX_TABLE_BYTES:
                continue
            try:
                t0 = time.perf_counter()
                vectors, workers = _embed_parallel(fitted, values, n_jobs)
            except Exception:
                continue
            # seconds per value in one process: what a fold's fit, in one worker, would have spent on a value
            table = EmbeddingTable(key, values, vectors, (time.perf_counter() - t0) * workers / max(1, len(values)))
            _TABLES[(key, digest)] = table
            while len(_TABLES) > _TABLES_KEPT or (len(_TABLES) > 1 and _kept_bytes() > _KEPT_BYTES):
                _TABLES.popitem(last=False)
        _TABLES.move_to_end((key, digest))
        table.made_for |= made_for[key]
        tables.append(table)
    return tables


def _kept_bytes() -> int:
    return sum(t.vectors.nbytes for t in _TABLES.values())


def tables_for(estimator, tables) -> list[EmbeddingTable]:
    """The tables among ``tables`` that ``estimator``'s featurizers read: what a fit of it is sent."""
    wanted = {repr(part) for part in frozen_featurizers(estimator)}
    return [t for t in tables if t.made_for & wanted]


@contextmanager
def using_embeddings(tables):
    """Inside, a frozen featurizer whose key matches a table's takes its features from the table (values not
    in it are computed as usual). For fits only: never around a cost measurement.

    Yields a ``Lent``: the seconds the rows taken from the tables cost to compute, which a fit's time includes.
    """
    lent = Lent()
    token = _ACTIVE.set((tuple(tables or ()), lent))
    try:
        yield lent
    finally:
        _ACTIVE.reset(token)


def lookup(featurizer, values: list, out: np.ndarray) -> list[int]:
    """Fill ``out``'s rows for the ``values`` the active table of ``featurizer`` holds (only str values can be
    looked up); -> the indices of the values still to compute."""
    tables, lent = _ACTIVE.get()
    key = table_key(featurizer) if tables else None
    table = next((t for t in tables if t.encoder == key), None) if key is not None else None
    if table is None:
        return list(range(len(values)))
    index = table.index()
    found = [(i, index[v]) for i, v in enumerate(values) if isinstance(v, str) and v in index]
    if found:
        mine, theirs = map(list, zip(*found))
        out[mine] = table.vectors[theirs]
        lent.seconds += len(found) * table.seconds_per_value
    return [i for i, v in enumerate(values) if not (isinstance(v, str) and v in index)]
