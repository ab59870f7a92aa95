"""Every bad input: exit code 2, one `error:` line on stderr, no traceback, nothing left in --out."""

import numpy as np
import pandas as pd
import pytest

from conftest import linear_data
from frugalml.cli import main


def run_cli(capsys, *args):
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.err


def assert_clean_error(code, err, *needles):
    assert code == 2, err
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), err
    assert "Traceback" not in err
    for n in needles:
        assert n in lines[0], lines[0]


def write(tmp_path, df, name="data.csv"):
    p = tmp_path / name
    df.to_csv(p, index=False)
    return str(p)


CASES = {
    "missing file": (lambda t: ["select", str(t / "nope.csv"), "--target", "y"], "not found"),
    "empty file": (lambda t: ["select", _touch(t / "empty.csv"), "--target", "y"], "empty"),
    "header only": (lambda t: ["select", _text(t / "h.csv", "a,b,y\n"), "--target", "y"], "no rows"),
    "unknown type": (lambda t: ["select", _text(t / "d.xlsx", "x"), "--target", "y"], "unknown type"),
    "not parquet": (lambda t: ["select", _text(t / "d.parquet", "not parquet at all"), "--target", "y"], "cannot read"),
    "unknown target": (lambda t: ["select", write(t, linear_data()), "--target", "nope"], "target column 'nope'"),
    "unknown group": (lambda t: ["select", write(t, linear_data()), "--target", "label", "--group", "nope"],
                      "group column 'nope'"),
    "one class": (lambda t: ["select", write(t, linear_data().assign(label="yes")), "--target", "label"], "single class"),
    "target all NaN": (lambda t: ["select", write(t, linear_data().assign(label=np.nan)), "--target", "label"],
                       "all values missing"),
    "fewer rows than folds": (lambda t: ["select", write(t, linear_data().head(6)), "--target", "label"],
                              "at least 5"),
    "single-valued group": (lambda t: ["select", write(t, linear_data().assign(region="north")), "--target",
                                       "label", "--group", "region"], "single value"),
    "unknown metric": (lambda t: ["select", write(t, linear_data()), "--target", "label", "--metric", "accurasy"],
                       "unknown metric"),
    "metric for the other task": (lambda t: ["select", write(t, linear_data()), "--target", "label", "--metric", "r2"],
                                  "regression metric"),
    "binary metric on 3 classes": (lambda t: ["select", write(t, linear_data()), "--target", "colour", "--metric",
                                              "f1"], "f1_macro"),
    "unknown candidate": (lambda t: ["select", write(t, linear_data()), "--target", "label", "--candidate", "xgb"],
                          "unknown candidate 'xgb'"),
    "candidate module missing": (lambda t: ["select", write(t, linear_data()), "--target", "label", "--candidate",
                                            "no_such_module:make"], "cannot import"),
    "non-UTF-8 CSV": (lambda t: ["select", _bytes(t / "latin1.csv", "name,y\ncaf\xe9,1\nna\xefve,0\n".encode("latin-1")),
                                 "--target", "y"], "not UTF-8"),
    "regression target not numeric": (lambda t: ["select", write(t, linear_data()), "--target", "label", "--task",
                                                 "regression"], "not numeric"),
    "bad task": (lambda t: ["select", write(t, linear_data()), "--target", "label", "--task", "ranking"], "--task"),
    "bad tolerance": (lambda t: ["select", write(t, linear_data()), "--target", "label", "--tolerance", "-1"],
                      "--tolerance"),
    "bad cost priority": (lambda t: ["select", write(t, linear_data()), "--target", "label", "--cost-priority",
                                     "vibes"], "--cost-priority"),
    "no target for a file": (lambda t: ["select", write(t, linear_data())], "--target is required"),
    "unknown builtin": (lambda t: ["select", "builtin:mnist"], "unknown dataset 'mnist'"),
    "unknown option": (lambda t: ["select", "builtin:wine", "--bogus"], "No such option"),
}


def _touch(p):
    p.write_bytes(b"")
    return str(p)


def _text(p, s):
    p.write_text(s)
    return str(p)


def _bytes(p, b):
    p.write_bytes(b)
    return str(p)


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_exits_2_with_one_line(case, tmp_path, capsys):
    make_args, needle = CASES[case]
    out = tmp_path / "run"
    code, err = run_cli(capsys, *make_args(tmp_path), "--out", str(out))
    assert_clean_error(code, err, needle)
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".run")]  # no temporary leftovers


def test_existing_run_directory_is_not_damaged(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "decision.json").write_text("{}")
    code, err = run_cli(capsys, "select", "builtin:wine", "--out", str(out))
    assert_clean_error(code, err, "already exists")
    assert (out / "decision.json").read_text() == "{}"
    # a failing run with --overwrite leaves the old one intact too
    code, err = run_cli(capsys, "select", "builtin:wine", "--metric", "r2", "--out", str(out), "--overwrite")
    assert_clean_error(code, err, "regression metric")
    assert (out / "decision.json").read_text() == "{}"


def test_console_script_reports_errors_without_traceback(tmp_path):
    import subprocess
    import sys

    res = subprocess.run([sys.executable, "-m", "frugalml.cli", "select", str(tmp_path / "x.csv"), "-t", "y"],
                         capture_output=True, text=True)
    assert res.returncode == 2
    assert res.stderr.startswith("error:") and "Traceback" not in res.stderr
    res = subprocess.run([sys.executable, "-m", "frugalml.cli", "select", str(tmp_path / "x.csv"), "-t", "y",
                          "--debug"], capture_output=True, text=True)
    assert "Traceback" in res.stderr
