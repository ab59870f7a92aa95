"""data: load CSV/Parquet/builtin tables into a validated Task, and split it the same way for every candidate."""

from .builtin import DATASETS, Builtin, register_dataset
from .splits import Splits, make_splits
from .task import MISSING, Schema, Task, all_rows, fold_rows, load_task, prepare_frame, read_table, take_rows

__all__ = ["DATASETS", "Builtin", "register_dataset", "Splits", "make_splits", "MISSING", "Schema", "Task",
           "load_task", "prepare_frame", "read_table", "take_rows", "fold_rows", "all_rows"]
