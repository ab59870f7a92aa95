import json
import subprocess
import sys
import textwrap

import pytest

import frugalml
from conftest import linear_data
from frugalml.candidates import CANDIDATES
from frugalml.cli import main

FAST = ["--folds", "3", "--repeats", "1"]


def test_select_cli_with_a_user_candidate(tmp_path, capsys, monkeypatch, validate_decision):
    (tmp_path / "my_models.py").write_text(textwrap.dedent("""
        from sklearn.linear_model import RidgeClassifier

        def ridge():
            return RidgeClassifier(alpha=1.0)
    """))
    monkeypatch.chdir(tmp_path)
    linear_data(n=300).to_csv(tmp_path / "d.csv", index=False)
    code = main(["select", "d.csv", "--target", "label", "--group", "region", "--candidate", "linear",
                 "--candidate", "my_models:ridge", "--out", "run", "--json", "--strict-groups", "--allow-baseline",
                 "--stability-draws", "20", *FAST])
    out = capsys.readouterr().out
    assert code == 0
    d = json.loads(out)
    validate_decision(d)
    assert {c["name"] for c in d["candidates"]} == {"linear", "ridge"}
    # the settings recorded are the arguments given
    assert {k: d["settings"][k] for k in ("folds", "repeats", "strict_groups", "allow_baseline")} == {
        "folds": 3, "repeats": 1, "strict_groups": True, "allow_baseline": True}
    assert d["stability"]["draws"] == 20 and d["groups"] == ["region"] and d["data"]["target"] == "label"
    assert json.loads((tmp_path / "run" / "decision.json").read_text()) == d
    assert (tmp_path / "run" / "model" / "meta.json").exists()


def test_select_prints_the_summary_table(tmp_path, capsys):
    code = main(["select", "builtin:penguins", "--candidate", "linear", "--candidate", "decision_tree",
                 "--out", str(tmp_path / "p"), *FAST])
    out = capsys.readouterr().out
    assert code == 0
    assert "recommended" in out and "linear" in out and "run directory" in out
    model = frugalml.load(tmp_path / "p")
    assert set(model.predict(frugalml.load_task("builtin:penguins").X.head(20))) <= {"Adelie", "Chinstrap", "Gentoo"}


def test_list_and_env(capsys, monkeypatch):
    from importlib import metadata

    from frugalml.compression import TECHNIQUES
    from frugalml.data import DATASETS
    from frugalml.evaluation import EnergyMeter

    monkeypatch.setenv("COLUMNS", "400")  # rich wraps table cells at the terminal's width
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    names = [*CANDIDATES, *DATASETS, *TECHNIQUES]  # everything registered is listed, built-in or plug-in
    assert [n for n in names if n not in out] == []
    assert main(["env"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"frugalml {frugalml.__version__}"
    for pkg in ("numpy", "scikit-learn", "onnxruntime", "torch"):
        assert f"{pkg} {metadata.version(pkg)}" in lines
    meter = EnergyMeter.create()
    assert f"energy: {meter.source} ({meter.method})" in lines


@pytest.mark.slow
def test_demo_runs_end_to_end(tmp_path):
    res = subprocess.run([sys.executable, "-m", "frugalml.cli", "demo", "--out", str(tmp_path / "demo")],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    d = json.loads((tmp_path / "demo" / "decision.json").read_text())
    assert len(d["candidates"]) >= 8 and d["groups"] == ["religious", "age_band"]
    assert "recommended" in res.stdout and "predictions for 3 rows" in res.stdout
    # it ends with the report a person opens, and no library warning reached the screen
    last = res.stdout.strip().splitlines()[-1]
    assert last == f"open the report: {(tmp_path / 'demo' / 'report.html').resolve()}"
    assert "<svg" in (tmp_path / "demo" / "report.html").read_text()
    assert "Warning" not in res.stderr


def test_parquet_input_and_rows_without_target(tmp_path, capsys):
    df = linear_data(n=300)
    df.loc[:9, "label"] = None  # ten rows without a target are dropped, and the report says so
    df.to_parquet(tmp_path / "d.parquet")
    code = main(["select", str(tmp_path / "d.parquet"), "-t", "label", "-c", "linear", "--out", str(tmp_path / "r"),
                 "--json", *FAST])
    d = json.loads(capsys.readouterr().out)
    assert code == 0 and d["data"]["rows"] == 290 and d["data"]["dropped_rows"] == 10
    assert "10 rows without a target dropped" in (tmp_path / "r" / "report.md").read_text()
