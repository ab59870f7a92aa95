"""A folder or a glob of Parquet files, read lazily: the same task and the same decision as the table read whole,
each trial reading only the row groups that hold its rows; ``--sample`` only where asked; bad datasets refused
in one line."""

import pickle

import numpy as np
import pandas as pd
import pytest

import frugalml
from conftest import linear_data, same_decision
from frugalml.data import load_task, take_rows
from frugalml.errors import DataError
from frugalml.evaluation import CostConfig

COST = CostConfig(latency_calls=30, time_budget_s=0.02, batch_large=100, memory_probe=False)
SELECT = dict(candidates=["dummy", "linear", "decision_tree"], folds=3, repeats=1, cost_priority="size",
              stability_draws=0, cost=COST, n_jobs=1)


def awkward(n=900, seed=0) -> pd.DataFrame:
    """linear_data with what load_task must judge from every row: a missing target, an identifier, an empty
    column, a categorical column with gaps, a boolean and an integer column."""
    df = linear_data(n=n, seed=seed)
    rng = np.random.default_rng(seed)
    df["row_id"] = [f"id-{i}" for i in range(n)]
    df["empty"] = np.nan
    df["shade"] = np.where(rng.random(n) < 0.2, None, rng.choice(["light", "dark"], n))
    df["flag"] = rng.random(n) < 0.5
    df["count"] = rng.integers(0, 9, n)
    df.loc[rng.choice(n, 25, replace=False), "label"] = None
    return df


def split_into_files(df: pd.DataFrame, folder, parts=3, row_group_size=128):
    folder.mkdir()
    for i, rows in enumerate(np.array_split(np.arange(len(df)), parts)):
        df.iloc[rows].to_parquet(folder / f"part-{i}.parquet", row_group_size=row_group_size, index=False)
    return folder


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    base = tmp_path_factory.mktemp("parquet")
    df = awkward()
    df.to_parquet(base / "whole.parquet", index=False)
    return df, base / "whole.parquet", split_into_files(df, base / "ds")


def test_the_lazy_task_is_the_task_read_whole(data):
    df, whole, folder = data
    for source in (folder, f"{folder}/*.parquet"):
        eager, lazy = (load_task(d, "label", groups=["region"]) for d in (whole, str(source)))
        assert not isinstance(lazy.X, pd.DataFrame) and lazy.n_rows == eager.n_rows == 875
        assert lazy.schema == eager.schema and lazy.dropped_columns.keys() == eager.dropped_columns.keys()
        assert set(lazy.dropped_columns) == {"row_id", "empty"}
        assert lazy.dropped_columns["row_id"].startswith("identifier-like: over ")  # counting stopped past half
        assert lazy.schema.categorical == ["colour", "region", "shade", "flag"]
        assert np.array_equal(lazy.y, eager.y) and np.array_equal(lazy.groups["region"], eager.groups["region"])
        idx = np.random.default_rng(1).integers(0, eager.n_rows, 300)  # unsorted, with repeats
        pd.testing.assert_frame_equal(take_rows(lazy.X, idx), eager.X.iloc[idx])
    # what a worker is sent: file names and row positions, not the rows
    assert len(pickle.dumps(lazy.X)) < eager.X.memory_usage(deep=True).sum() / 5


def test_a_fold_reads_only_the_row_groups_that_hold_its_rows(data, monkeypatch):
    import pyarrow.parquet as pq

    _, _, folder = data
    lazy = load_task(folder, "label").X
    read = []
    original = pq.ParquetFile.read_row_group
    monkeypatch.setattr(pq.ParquetFile, "read_row_group",
                        lambda self, i, *a, **k: read.append(i) or original(self, i, *a, **k))
    dataset_rows = lazy.positions[[3, 5, 140]]  # in the first file's row groups 0 and 1
    assert dataset_rows.max() < 256
    frame = lazy.take([3, 5, 140])
    assert read == [0, 1] and len(frame) == 3


def test_select_on_the_dataset_decides_as_on_the_table(data, tmp_path):
    df, whole, folder = data
    eager = frugalml.select(whole, "label", groups=["region"], **SELECT).decision
    lazy = frugalml.select(str(folder), "label", groups=["region"], out=tmp_path / "run", **SELECT).decision
    same_decision(eager, lazy)
    assert (lazy["data"]["read"], eager["data"]["read"]) == ("lazily", "in memory")
    assert lazy["data"]["rows"] == 875 and lazy["data"]["sampled_from"] is None
    model = frugalml.load(tmp_path / "run")  # the refit read every row from the files: it predicts as a model should
    assert (model.predict(df.dropna(subset=["label"]).head(50)) == model.predict(
        df.dropna(subset=["label"]).head(50))).all()


def test_sample_only_where_asked_stratified_and_alike_lazy_or_not(data, tmp_path):
    df, whole, folder = data
    eager = load_task(whole, "label", sample=300, seed=4)
    lazy = load_task(folder, "label", sample=300, seed=4)
    assert eager.n_rows == lazy.n_rows == 300 and eager.sampled_from == lazy.sampled_from == 875
    pd.testing.assert_frame_equal(take_rows(lazy.X, np.arange(300)), eager.X)
    full = load_task(whole, "label")
    share = np.bincount(full.y) / full.n_rows
    assert np.allclose(np.bincount(eager.y) / 300, share, atol=1 / 300 + 1e-9)  # stratified by class
    assert load_task(whole, "label", sample=5000).sampled_from == 0  # more than there are: every row
    decision = frugalml.select(str(folder), "label", sample=300, out=tmp_path / "run", **SELECT).decision
    assert (decision["data"]["rows"], decision["data"]["sampled_from"]) == (300, 875)
    report = (tmp_path / "run" / "report.md").read_text()
    assert "a sample (--sample, stratified by class) of the 875 rows" in report and "sampled from 875" in report


def test_a_changed_file_refuses_resume(data, tmp_path):
    df, _, _ = data
    folder = split_into_files(df, tmp_path / "ds")
    frugalml.select(str(folder), "label", out=tmp_path / "run", **SELECT)
    df.iloc[:300].assign(x1=0.0).to_parquet(folder / "part-0.parquet", row_group_size=128, index=False)
    with pytest.raises(frugalml.FrugalError, match="--resume refused"):
        frugalml.select(str(folder), "label", out=tmp_path / "run", resume=True, **SELECT)


def test_bad_datasets_are_one_line_and_exit_2(data, tmp_path, capsys):
    from frugalml.cli import main

    df, _, _ = data
    other = split_into_files(df, tmp_path / "other")
    df.head(10).rename(columns={"x1": "y1"}).to_parquet(other / "part-9.parquet", index=False)
    good, torn = split_into_files(df, tmp_path / "good"), split_into_files(df, tmp_path / "torn")
    (torn / "part-1.parquet").write_bytes((torn / "part-1.parquet").read_bytes()[:300])
    cases = [([f"{tmp_path}/nothing/*.parquet"], "no Parquet file matches"),
             ([str(other)], "other columns than"),
             ([str(torn)], "cannot read"),
             ([str(torn.parent / "ds-missing")], "not found"),
             ([str(good), "--text", "colour"], "read lazily"),
             ([str(good), "--sample", "0"], "--sample must be")]
    for args, says in cases:
        out = tmp_path / "run"
        code = main(["select", *args[:1], "-t", "label", "-q", "-c", "linear", "--out", str(out), *args[1:]])
        err = capsys.readouterr().err.strip()
        assert code == 2 and says in err and len(err.splitlines()) == 1, (args, err)
        assert not out.exists()
