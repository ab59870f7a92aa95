"""A Parquet dataset (a folder or a glob of files) read lazily.

``select`` reads the target and the group columns of every row in the process that runs the command, and the
feature columns only as one pass of statistics (a column's kind, its missing values, its distinct values). The
feature values themselves are read where they are used: each trial reads the row groups that hold its fold's
rows, so a worker is sent the files' names and the rows' positions, never the table. Workers on other machines
must see the same paths (a shared file system).
"""

from __future__ import annotations

import glob
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import DataError

SUFFIXES = (".parquet", ".pq")
_BATCH = 1 << 16  # rows per batch of the statistics pass


def dataset_files(text: str) -> list[str] | None:
    """The Parquet files DATA names when it is a glob or a folder holding Parquet files; None when it is not one
    (a single file, a folder of images)."""
    if any(ch in text for ch in "*?[") and not Path(text).is_file():
        files = sorted(p for p in glob.glob(text, recursive=True) if p.lower().endswith(SUFFIXES))
        if not files:
            raise DataError(f"no Parquet file matches {text}")
        return files
    path = Path(text)
    if path.is_dir():
        files = sorted(str(p) for p in path.rglob("*") if p.suffix.lower() in SUFFIXES and p.is_file())
        return files or None
    return None


@dataclass
class ColumnProfile:
    """What ``load_task`` asks of a feature column, counted over the rows that have a target."""

    numeric: bool
    present: int  # values not missing
    distinct: int  # distinct values (counted up to more than half the rows: enough to call it an identifier)
    examples: list = field(default_factory=list)  # a few distinct values, for messages
    counted_all: bool = True  # False: ``distinct`` stopped counting, past half the rows


@dataclass
class ParquetRows:
    """The rows of a Parquet dataset, read on demand: ``take(idx)`` reads the rows ``idx`` (in the task's
    numbering) of the schema's columns, from the row groups that hold them. Small to send: file names,
    row-group offsets and the rows' positions."""

    files: tuple[str, ...]
    row_groups: np.ndarray  # (G, 2): file index, row group index within it
    starts: np.ndarray  # (G + 1,): the first row of each row group in the dataset, then the total
    columns: list[str]
    numeric: frozenset  # the columns pandas reads as numbers: integers and floats (not booleans, not decimals)
    positions: np.ndarray | None = None  # task row -> dataset row (rows with a target, a sample); None: all
    schema: object | None = None  # the Schema whose columns ``take`` returns

    @classmethod
    def open(cls, files: list[str]) -> "ParquetRows":
        import pyarrow as pa
        import pyarrow.parquet as pq

        first, groups, starts = None, [], [0]
        for i, f in enumerate(files):
            try:
                meta = pq.ParquetFile(f).metadata
            except (OSError, pa.ArrowException) as exc:
                raise DataError(f"cannot read {f} as Parquet: {str(exc).splitlines()[0][:160]}") from None
            schema = meta.schema.to_arrow_schema()
            if first is None:
                first = schema
            elif not schema.equals(first):
                theirs = {n: str(t) for n, t in zip(first.names, first.types)}
                ours = {n: str(t) for n, t in zip(schema.names, schema.types)}
                diff = sorted(set(theirs.items()) ^ set(ours.items()))[:3]
                raise DataError(f"{f} has other columns than {files[0]} ({diff}); a dataset's files share one "
                                "schema")
            for r in range(meta.num_row_groups):
                groups.append((i, r))
                starts.append(starts[-1] + meta.row_group(r).num_rows)
        if starts[-1] == 0:
            raise DataError(f"the Parquet dataset ({len(files)} files, {files[0]} first) has no rows")
        numeric = frozenset(n for n, t in zip(first.names, first.types)
                            if pa.types.is_integer(t) or pa.types.is_floating(t))
        return cls(tuple(files), np.asarray(groups, dtype=np.int64).reshape(-1, 2), np.asarray(starts),
                   list(first.names), numeric)

    @property
    def n_rows(self) -> int:
        return int(self.starts[-1])

    def __len__(self) -> int:
        return self.n_rows if self.positions is None else len(self.positions)

    @property
    def nbytes(self) -> int:
        """What sending it costs (its row positions): Ray's executor puts it in the object store once."""
        return 0 if self.positions is None else self.positions.nbytes

    def with_rows(self, positions: np.ndarray, schema) -> "ParquetRows":
        return replace(self, positions=np.asarray(positions, dtype=np.int64), schema=schema)

    def read(self, columns: list[str], rows: np.ndarray | None = None) -> pd.DataFrame:
        """Raw ``columns`` of the dataset rows ``rows`` (ascending, distinct; None: all), index 0..n-1."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        if rows is None:
            g_of = range(len(self.row_groups))
        else:
            g_of = np.unique(np.searchsorted(self.starts, rows, side="right") - 1)
            bounds = np.searchsorted(rows, self.starts)  # rows[bounds[g]:bounds[g + 1]] lie in row group g
        parts, opened = [], {}
        for g in g_of:
            f, r = self.row_groups[g]
            pf = opened.get(f) or opened.setdefault(f, pq.ParquetFile(self.files[f]))
            table = pf.read_row_group(int(r), columns=columns)
            if rows is not None:
                local = rows[bounds[g]:bounds[g + 1]] - self.starts[g]
                if len(local) < table.num_rows:
                    table = table.take(pa.array(local))
            parts.append(table)
        if not parts:
            return pd.DataFrame({c: [] for c in columns})
        table = pa.concat_tables(parts)
        parts.clear()
        return table.to_pandas(split_blocks=True, self_destruct=True)  # each column freed as it is converted

    def take(self, idx) -> pd.DataFrame:
        """The schema's columns of the task rows ``idx`` (any order, repeats allowed), as read, indexed by ``idx``
        (``data.take_rows`` puts them in the canonical dtypes)."""
        idx = np.asarray(idx, dtype=np.int64)
        src = idx if self.positions is None else self.positions[idx]
        wanted, back = np.unique(src, return_inverse=True)
        frame = self.read(self.schema.columns, wanted)
        frame = frame.iloc[back] if len(wanted) != len(src) or np.any(np.diff(src) < 0) else frame
        return frame.set_axis(idx)

    def profiles(self, columns: list[str], keep: np.ndarray) -> dict[str, ColumnProfile]:
        """One pass over ``columns`` of the rows ``keep`` marks, a batch at a time: each column's kind (from
        the files' types), its values present, and its distinct values for the non-numeric ones (counted
        until they pass half the rows, past which the column is an identifier whatever follows)."""
        import pyarrow as pa
        import pyarrow.compute as pc
        import pyarrow.parquet as pq

        present = dict.fromkeys(columns, 0)
        seen = {c: set() for c in columns if c not in self.numeric}
        cap = int(keep.sum()) // 2 + 1
        offset = 0
        for f in self.files:
            for batch in pq.ParquetFile(f).iter_batches(batch_size=_BATCH, columns=columns):
                mask = keep[offset:offset + batch.num_rows]
                offset += batch.num_rows
                if not mask.all():
                    batch = batch.filter(pa.array(mask))
                for c in columns:
                    col = batch.column(c)
                    present[c] += len(col) - col.null_count
                    if c in seen and len(seen[c]) <= cap:
                        seen[c].update(pc.unique(col.drop_null()).to_pylist())
        return {c: ColumnProfile(c in self.numeric, present[c], len(seen.get(c, ())), list(seen.get(c, ()))[:200],
                                 len(seen.get(c, ())) <= cap) for c in columns}

