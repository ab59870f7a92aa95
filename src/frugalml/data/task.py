"""Load a table into a validated ``Task``: features, encoded target, groups, metric.

Every check here turns a mistake a user can make into one ``DataError`` line that says what to fix.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import DataError
from .builtin import DATASETS, Builtin

MISSING = "__missing__"  # the category that stands for a missing categorical value


@dataclass
class Schema:
    """What a deployed model expects: its columns and their kinds, and what it predicts."""

    task: str  # "classification" | "regression"
    numeric: list[str]
    categorical: list[str]
    target: str
    classes: list | None = None  # original label values, index = encoded class
    text: list[str] = field(default_factory=list)  # free-text columns, kept as strings for text candidates
    image: list[str] = field(default_factory=list)  # image columns: file paths (or, to predict, bytes or arrays)

    @property
    def columns(self) -> list[str]:
        return self.numeric + self.categorical + self.text + self.image

    def to_json(self) -> dict:
        return {"task": self.task, "numeric": self.numeric, "categorical": self.categorical,
                "target": self.target, "classes": self.classes, "text": self.text, "image": self.image}

    @classmethod
    def from_json(cls, d: dict) -> "Schema":
        return cls(d["task"], list(d["numeric"]), list(d["categorical"]), d["target"], d.get("classes"),
                   list(d.get("text") or []), list(d.get("image") or []))


@dataclass
class Task:
    X: pd.DataFrame  # features, already in the schema's canonical dtypes (or a lazy ``parquet.ParquetRows``)
    y: np.ndarray  # class indices (classification) or float values (regression)
    schema: Schema
    groups: dict[str, np.ndarray] = field(default_factory=dict)  # column -> group label per row (str)
    source: str = ""
    image_channels: int = 0  # an image task: 1 when every image is grayscale, else 3
    dropped_rows: int = 0  # rows dropped because the target was missing
    dropped_columns: dict[str, str] = field(default_factory=dict)  # column -> why it is not a feature
    sampled_from: int = 0  # rows with a target before ``--sample`` drew these (0: no sample)

    @property
    def kind(self) -> str:
        return self.schema.task

    @property
    def n_rows(self) -> int:
        return len(self.y)


def prepare_frame(df: pd.DataFrame, schema: Schema) -> pd.DataFrame:
    """Put a frame's feature columns into canonical dtypes: float64 numbers, str categories, str texts.

    Extra columns are ignored; a missing one is an error. Used for training and for prediction, so
    both see identical inputs.
    """
    missing = [c for c in schema.columns if c not in df.columns]
    if missing:
        raise DataError(f"missing column(s) {', '.join(map(repr, missing))}; the model needs {schema.columns}")
    out = {}
    for c in schema.numeric:
        try:
            out[c] = pd.to_numeric(df[c], errors="raise").astype("float64").to_numpy()
        except (ValueError, TypeError):
            raise DataError(f"column {c!r} must be numeric, found values like {df[c].dropna().iloc[:3].tolist()}") from None
    for c in schema.categorical:
        col = df[c]
        if col.dtype == _frame_strings():  # strings as read (Arrow-backed): kept so, not made into Python objects
            out[c] = col.fillna(MISSING).array
            continue
        values = col.astype(object).to_numpy()
        mask = pd.isna(col).to_numpy()
        values = np.where(mask, MISSING, values) if mask.any() else values
        if pd.api.types.infer_dtype(values, skipna=False) != "string":  # strings already: not made a second time
            values = values.astype(str).astype(object)
        out[c] = values
    for c in schema.text:  # a missing text is an empty one
        col = df[c]
        out[c] = np.where(pd.isna(col).to_numpy(), "", col.astype(object).to_numpy()).astype(str).astype(object)
    for c in schema.image:  # paths, encoded bytes or arrays, as given: decoded by the model that reads them
        out[c] = df[c].to_numpy(dtype=object)
    return pd.DataFrame(out, index=df.index, columns=schema.columns, copy=False)  # a float column is not copied


@cache
def _frame_strings():
    """The dtype a frame gives a column of Python strings (pandas 3: its Arrow-backed ``str``)."""
    return pd.DataFrame({"s": np.array(["s"], dtype=object)})["s"].dtype


def read_table(data: str | Path | pd.DataFrame, lazy: bool = False) -> tuple[pd.DataFrame, str, "object | None"]:
    """Read DATA (a frame, a CSV/Parquet path, a folder or a glob of Parquet files, an image folder, or
    ``builtin:NAME``) -> (frame, source, builtin). ``lazy``: a Parquet dataset comes back unread, as
    ``ParquetRows`` (``load_task`` reads what it needs)."""
    if isinstance(data, pd.DataFrame):
        return data, "dataframe", None
    text = str(data)
    if text.startswith("builtin:"):
        b = DATASETS.get(text.split(":", 1)[1])
        return b.load(), text, b
    from .parquet import ParquetRows, dataset_files

    if (files := dataset_files(text)) is not None:
        rows = ParquetRows.open(files)
        return (rows if lazy else rows.read(rows.columns)), text, None
    path = Path(text)
    if not path.exists():
        raise DataError(f"file {text} not found; give a .csv or .parquet path, an image folder (DIR/label/*.png), "
                        "or builtin:NAME (see frugal list)")
    if path.is_dir():
        from .images import read_folder

        df = read_folder(path)
        return df, str(path), Builtin(path.name, lambda: df, "label", image=("image",))
    if path.stat().st_size == 0:
        raise DataError(f"file {text} is empty")
    suffix = path.suffix.lower()
    try:
        if suffix in (".parquet", ".pq"):
            df = pd.read_parquet(path)
        elif suffix in (".csv", ".txt", ".tsv"):
            df = pd.read_csv(path, sep="\t" if suffix == ".tsv" else ",", encoding="utf-8")
        else:
            raise DataError(f"file {text} has an unknown type {suffix!r}; use .csv or .parquet")
    except UnicodeDecodeError as exc:
        raise DataError(f"file {text} is not UTF-8 ({exc.reason} at byte {exc.start}); re-save it as UTF-8") from None
    except pd.errors.EmptyDataError:
        raise DataError(f"file {text} has no data") from None
    except (pd.errors.ParserError, OSError, ValueError) as exc:
        if isinstance(exc, DataError):
            raise
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(f"cannot read {text}: {first}") from None
    if df.shape[0] == 0:
        raise DataError(f"file {text} has a header but no rows")
    return df, str(path), None


def take_rows(X, idx) -> pd.DataFrame:
    """Rows ``idx`` of a task's features (``X.iloc[idx]``), read from the files for a lazy Parquet dataset."""
    return X.iloc[idx] if isinstance(X, pd.DataFrame) else prepare_frame(X.take(idx), X.schema)


_LAST_FOLD: dict = {}  # the fold this process last read from a Parquet dataset, for the trials that follow on it


def fold_rows(X, train: np.ndarray, test: np.ndarray) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A fold's training and test rows; from a Parquet dataset in one read of the row groups that hold them,
    kept for the next trial on the same fold in this process (select sends a fold's trials one after another),
    dropped before another is read: a process never holds two."""
    if isinstance(X, pd.DataFrame):
        return X.iloc[train], X.iloc[test]
    import hashlib

    key = [X.files] + [hashlib.blake2b(np.ascontiguousarray(a).tobytes(), digest_size=16).digest()
                       for a in (X.positions, train, test)]
    if _LAST_FOLD.get("key") != key:
        _LAST_FOLD.clear()
        both = take_rows(X, np.concatenate([train, test]))
        _LAST_FOLD.update(key=key, rows=(both.iloc[:len(train)], both.iloc[len(train):]))
    return _LAST_FOLD["rows"]


def all_rows(X) -> pd.DataFrame:
    """Every row of a task's features, as one frame (a Parquet dataset's are read here, once the last fold
    read is let go)."""
    _LAST_FOLD.clear()
    return X if isinstance(X, pd.DataFrame) else take_rows(X, np.arange(len(X)))


def infer_task(y: pd.Series) -> str:
    """Classification for labels (text, bools, few integer values); regression for other numbers."""
    if not pd.api.types.is_numeric_dtype(y) or pd.api.types.is_bool_dtype(y):
        return "classification"
    values = y.dropna()
    if np.all(np.mod(values, 1) == 0) and values.nunique() <= 20:
        return "classification"
    return "regression"


def load_task(data, target: str | None = None, *, groups: list[str] | tuple[str, ...] | None = None,
              task: str = "auto", features: list[str] | None = None, min_rows: int = 2,
              text: list[str] | tuple[str, ...] | None = None, image: list[str] | tuple[str, ...] | None = None,
              sample: int | None = None, seed: int = 0) -> Task:
    """Load DATA into a validated Task.

    ``groups`` name columns whose values define user groups (checked separately); they stay features.
    ``text`` names free-text columns: kept as strings (never one-hot encoded nor dropped as identifiers)
    for the text candidates; a builtin dataset has its own default.
    ``image`` names the column of image file paths (relative ones are read against the table's folder); an
    image task is a classification read from the image alone: its other columns serve as groups, not features.
    A folder of images (``DIR/label/*.png``) is such a table, with columns ``image`` and ``label``.
    A folder or a glob of Parquet files is read lazily: ``Task.X`` is then a ``ParquetRows``, whose rows are
    read where they are used.
    ``sample``: keep that many of the rows with a target, drawn with ``seed`` (stratified by class); only when
    asked for. ``min_rows`` is the smallest usable row count (select passes its number of folds).
    """
    from .parquet import ColumnProfile, ParquetRows

    df, source, builtin = read_table(data, lazy=True)
    lazy = df if isinstance(df, ParquetRows) else None
    if lazy is None:
        if df.columns.duplicated().any():
            dup = df.columns[df.columns.duplicated()].tolist()
            raise DataError(f"duplicate column name(s) {dup}; rename them")
        df.columns = [str(c) for c in df.columns]
    all_cols = list(df.columns)
    if target is None:
        if builtin is None:
            raise DataError("--target is required: name the column to predict")
        target = builtin.target
    if groups is None:
        groups = list(builtin.groups) if builtin is not None else []
    if text is None:
        text = list(builtin.text) if builtin is not None else []
    text = list(dict.fromkeys(text))  # a column named twice is one text column
    if image is None:
        image = list(builtin.image) if builtin is not None else []
    image = list(dict.fromkeys(image))
    if lazy is not None and (text or image):
        raise DataError(f"{source} is a Parquet dataset, read lazily for numeric and categorical columns; "
                        "--text and --image read a single .csv or .parquet file")
    if len(image) > 1:
        raise DataError(f"one image column per task, not {len(image)} ({', '.join(image)})")
    for c in image:
        if c not in all_cols:
            raise DataError(f"image column {c!r} not found; columns are {all_cols}")
        if c == target or c in groups or c in text:
            raise DataError(f"column {c!r} cannot be both the image column and the target, a group or a text column")
    if target not in all_cols:
        raise DataError(f"target column {target!r} not found; columns are {all_cols}")
    for g in groups:
        if g == target:
            raise DataError(f"group column {g!r} is the target; pick another column")
    for c in text:
        if c not in all_cols:
            raise DataError(f"text column {c!r} not found; columns are {all_cols}")
        if c == target:
            raise DataError(f"text column {c!r} is the target; pick another column")
        if c in groups:
            raise DataError(f"column {c!r} is both a group and a text column; a group needs few distinct values")
    if task not in ("auto", "classification", "regression"):
        raise DataError(f"--task must be auto, classification or regression, not {task!r}")
    if sample is not None and sample < 1:
        raise DataError(f"--sample must be a positive number of rows, not {sample}")
    if lazy is not None:  # here, the target and the groups of every row; the features stay in the files
        df = lazy.read(list(dict.fromkeys([target, *(g for g in groups if g in all_cols)])))

    y_raw = df[target]
    if y_raw.isna().all():
        raise DataError(f"target column {target!r} is empty (all values missing)")
    keep = ~y_raw.isna().to_numpy()
    dropped = int((~keep).sum())
    rows = np.flatnonzero(keep)
    kind = infer_task(y_raw.iloc[rows]) if task == "auto" else task
    sampled_from = 0
    if sample is not None and sample < len(rows):
        sampled_from = len(rows)
        rows = rows[draw_sample(y_raw.iloc[rows], kind, sample, seed)]
    df = df.iloc[rows].reset_index(drop=True)
    y_raw = df[target]
    if image and kind != "classification":
        raise DataError(f"an image task is a classification; target {target!r} looks like numbers to regress: "
                        "pass --task classification if its values are classes")

    if kind == "classification":
        classes, y = np.unique(y_raw.astype(object).to_numpy() if not pd.api.types.is_numeric_dtype(y_raw)
                               else y_raw.to_numpy(), return_inverse=True)
        if len(classes) < 2:
            raise DataError(f"target column {target!r} has a single class ({classes[0]!r}); nothing to predict")
        counts = np.bincount(y)
        if counts.min() < min_rows:
            rare = classes[int(np.argmin(counts))]
            raise DataError(f"class {rare!r} of {target!r} has only {counts.min()} row(s); each class needs at least "
                            f"{min_rows} (one per fold): lower --folds or merge rare classes"
                            + (f", or draw a larger --sample than {sample}" if sampled_from else ""))
        class_list = [c.item() if hasattr(c, "item") else c for c in classes]
    else:
        y = numeric_target(y_raw, target, "so it cannot be a regression target; use --task classification")
        class_list = None
    if len(y) < min_rows:
        raise DataError(f"only {len(y)} row(s) with a target; need at least {min_rows} (one per fold): lower --folds")

    cols = features if features is not None else [c for c in all_cols if c != target and c not in image]
    if image:  # read from the image alone: the other columns are groups or left out
        dropped_cols = {c: "not read: image candidates read the image only" for c in cols if c not in groups}
        df = df.copy()
        from .images import image_paths

        df[image[0]], channels = image_paths(df[image[0]], image[0], base_folder(source))
        schema = Schema(kind, [], [], target, class_list, [], image)
        return Task(X=prepare_frame(df, schema), y=y, schema=schema, groups=read_groups(df, groups), source=source,
                    dropped_rows=dropped, dropped_columns=dropped_cols, image_channels=channels,
                    sampled_from=sampled_from)
    for c in cols:
        if c not in all_cols:
            raise DataError(f"feature column {c!r} not found; columns are {all_cols}")
    if not cols and not text:
        raise DataError("no feature columns left besides the target")
    for c in text:
        if not df[c].dropna().astype(str).str.strip().ne("").any():
            raise DataError(f"text column {c!r} is empty (no row has any text); pick the column that holds the text")
    plain_cols = [c for c in cols if c not in text]
    if lazy is not None:  # one pass over the files, the rows kept only
        chosen = np.zeros(lazy.n_rows, dtype=bool)
        chosen[rows] = True
        profiles = lazy.profiles(plain_cols, chosen)
    else:
        profiles = {c: _profile(df[c]) for c in plain_cols}
    numeric, categorical, dropped_cols = [], [], {}
    for c in plain_cols:
        p: ColumnProfile = profiles[c]
        if p.present == 0:
            dropped_cols[c] = "empty"
            continue
        if not p.numeric and c not in groups and p.distinct > 50 and p.distinct > 0.5 * p.present:
            # one-hot encoding an identifier would make one column per row and learn nothing
            text_like = looks_like_text(pd.Series(p.examples, dtype=object))
            dropped_cols[c] = (f"identifier-like: {'' if p.counted_all else 'over '}{p.distinct} distinct values in "
                               f"{len(y)} rows"
                               + (f"; if it is free text, pass --text {c}" if text_like else ""))
            continue
        (numeric if p.numeric else categorical).append(c)
    if not numeric and not categorical and not text:
        raise DataError(f"no usable feature column (left out: {dropped_cols})")
    schema = Schema(kind, numeric, categorical, target, class_list, text)
    X = lazy.with_rows(rows, schema) if lazy is not None else prepare_frame(df, schema)

    group_values = read_groups(df, groups)
    return Task(X=X, y=y, schema=schema, groups=group_values, source=source, dropped_rows=dropped,
                dropped_columns=dropped_cols, sampled_from=sampled_from)


def draw_sample(y: pd.Series, kind: str, n: int, seed: int) -> np.ndarray:
    """Positions of ``n`` of ``y``'s rows, ascending: drawn with ``seed``, in each class's proportion for a
    classification (where every class has two rows or more)."""
    from sklearn.model_selection import train_test_split

    codes = pd.factorize(y)[0] if kind == "classification" else None
    if codes is not None and np.bincount(codes).min() < 2:
        codes = None
    try:
        chosen, _ = train_test_split(np.arange(len(y)), train_size=n, random_state=seed, stratify=codes)
    except ValueError:  # fewer rows than classes in a part: a plain draw
        chosen, _ = train_test_split(np.arange(len(y)), train_size=n, random_state=seed)
    return np.sort(chosen)


def _profile(col: pd.Series):
    from .parquet import ColumnProfile

    if pd.api.types.is_numeric_dtype(col) and not pd.api.types.is_bool_dtype(col):
        return ColumnProfile(True, int(col.notna().sum()), 0)
    distinct = col.dropna().unique()
    return ColumnProfile(False, int(col.notna().sum()), len(distinct), list(distinct[:200]))


def base_folder(source: str) -> Path | None:
    """The folder a table's relative image paths are read against: the table file's own."""
    path = Path(source)
    return path.parent if path.is_file() else None


def read_groups(df: pd.DataFrame, groups) -> dict[str, np.ndarray]:
    """Column -> group label per row (str; missing values form their own group), validated."""
    out = {}
    for g in groups:
        if g not in df.columns:
            raise DataError(f"group column {g!r} not found; columns are {list(df.columns)}")
        col = df[g]
        values = np.where(col.isna().to_numpy(), "(missing)", col.astype(str).to_numpy()).astype(object)
        if len(set(values)) < 2:
            raise DataError(f"group column {g!r} has a single value ({values[0]!r}); a group check needs at least two")
        out[g] = values
    return out


def numeric_target(col: pd.Series, name: str, why: str) -> np.ndarray:
    try:
        return pd.to_numeric(col, errors="raise").astype("float64").to_numpy()
    except (ValueError, TypeError):
        raise DataError(f"target {name!r} is not numeric, {why}") from None


def looks_like_text(col: pd.Series) -> bool:
    """Words rather than codes: most values hold a space."""
    values = col.dropna().astype(str)
    return len(values) > 0 and values.str.contains(" ").mean() > 0.5
