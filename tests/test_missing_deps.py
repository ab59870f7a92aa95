"""Without torch or transformers, every command that needs them says what to install: exit 2, one ``error:`` line
naming the pip command, no traceback; one that can do without them does, and says what it left out.

Each run hides the packages in a fresh interpreter the way an environment without them looks: no finder finds
them (``importlib.util.find_spec`` answers None, an import raises ModuleNotFoundError), and nothing stands in
``sys.modules`` for them (scipy and others probe it)."""

import json
import subprocess
import sys

import pandas as pd
import pytest

HIDE = """
import sys
HIDDEN = set(sys.argv[1].split(","))

class Hidden:
    def __init__(self, inner):
        self.inner = inner

    def find_spec(self, name, path=None, target=None):
        return None if name.split(".")[0] in HIDDEN else self.inner.find_spec(name, path, target)

    def __getattr__(self, attr):
        return getattr(self.inner, attr)

sys.meta_path[:] = [Hidden(f) for f in sys.meta_path]
from frugalml.cli import main
sys.exit(main(sys.argv[2:]))
"""


def frugal_without(modules: str, *args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", HIDE, modules, *args], capture_output=True, text=True,
                          timeout=300, cwd=cwd)


def one_error_line(out: subprocess.CompletedProcess) -> str:
    assert out.returncode == 2, out.stderr
    assert "Traceback" not in out.stderr and out.stdout == ""
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), out.stderr
    return lines[0]


def test_the_hiding_is_real():
    out = subprocess.run([sys.executable, "-c", HIDE.replace("from frugalml.cli import main\nsys.exit(main(sys.argv[2:]))",
                                                             "import importlib.util; print(importlib.util.find_spec('torch'))\n"
                                                             "import torch"), "torch"],
                         capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "None" and "No module named 'torch'" in out.stderr


def test_lm_commands_name_the_install_command():
    for module, args in [("torch", ["generate", "builtin:smollm2", "Hello", "--quantize", "int4"]),
                         ("torch", ["bench-lm", "builtin:smollm2"]),
                         ("transformers", ["generate", "builtin:smollm2", "Hello"]),
                         ("transformers", ["bench-lm", "builtin:smollm2", "--baseline", "hf"])]:
        assert one_error_line(frugal_without(module, *args)) == \
            f"error: frugal {args[0]} needs {module}; install with pip install 'frugalml[lm]'"


def test_bench_lm_baseline_checks_transformers_before_measuring():
    code = HIDE.replace("from frugalml.cli import main\nsys.exit(main(sys.argv[2:]))", """
from frugalml.errors import MissingDependency
from frugalml.runtime.lm.lm_bench import BenchConfig, bench_lm
try:
    bench_lm('no-such-model', cfg=BenchConfig(baseline='hf'))
except MissingDependency as exc:
    print(exc)
""")
    out = subprocess.run([sys.executable, "-c", code, "transformers"], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "--baseline hf needs transformers; install with pip install 'frugalml[lm]'"


def test_a_named_candidate_that_cannot_run_names_its_extra(tmp_path):
    assert one_error_line(frugal_without("torch", "select", "builtin:wine", "--candidate", "torch_mlp",
                                         "--out", str(tmp_path / "a"))) == \
        "error: candidate torch_mlp needs torch; install with pip install 'frugalml[torch]'"
    assert one_error_line(frugal_without("transformers", "select", "builtin:debates", "--candidate", "minilm_linear",
                                         "--out", str(tmp_path / "b"))) == \
        "error: candidate minilm_linear needs transformers; install with pip install 'frugalml[text]'"
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


@pytest.mark.slow
def test_the_default_ladder_runs_without_torch_and_says_what_it_left_out(tmp_path):
    out = frugal_without("torch", "select", "builtin:wine", "--folds", "2", "--repeats", "1", "--candidate", "linear",
                         "--quiet", "--out", str(tmp_path / "named"))
    assert out.returncode == 0, out.stderr  # a named candidate that needs nothing optional runs as usual
    out = frugal_without("torch", "select", "builtin:wine", "--folds", "2", "--repeats", "1", "--stability-draws", "0",
                         "--quiet", "--out", str(tmp_path / "run"))
    assert out.returncode == 0, out.stderr
    decision = json.loads((tmp_path / "run" / "decision.json").read_text())
    names = {c["name"] for c in decision["candidates"]}
    assert "torch_mlp" not in names and {"linear", "random_forest", "mlp"} <= names
    why = "candidate torch_mlp needs torch; install with pip install 'frugalml[torch]'"
    assert decision["settings"]["left_out"] == {"torch_mlp": why} and why in decision["reason"]


def test_compressing_a_hugging_face_folder_without_torch_or_transformers(tmp_path):
    folder = tmp_path / "hf"
    folder.mkdir()
    (folder / "config.json").write_text('{"model_type": "bert"}')
    (folder / "model.safetensors").write_bytes(b"")
    pd.DataFrame({"text": ["a fine film", "a dull film"] * 30, "label": [1, 0] * 30}).to_csv(tmp_path / "d.csv",
                                                                                              index=False)
    for module in ("torch", "transformers"):
        line = one_error_line(frugal_without(module, "compress", str(folder), "--data", str(tmp_path / "d.csv"),
                                             "--target", "label", "--out", str(tmp_path / "out")))
        assert line == f"error: a Hugging Face model needs {module}; install with pip install 'frugalml[text]'"
    assert not (tmp_path / "out").exists()
