"""`import frugalml` and `frugal --help` must not load heavy libraries."""

import subprocess
import sys

HEAVY = ("torch", "transformers", "onnxruntime", "ray", "sklearn", "lightgbm", "pandas")


def _loaded(code: str) -> set[str]:
    out = subprocess.run([sys.executable, "-c", code + "\nimport sys; print(' '.join(sorted(sys.modules)))"],
                         capture_output=True, text=True, check=True)
    return set(out.stdout.split())


def test_import_frugalml_is_light():
    mods = _loaded("import frugalml")
    assert not mods & set(HEAVY)


def test_cli_help_is_light():
    mods = _loaded("import sys\nfrom frugalml.cli import main\nsys.argv=['frugal','--help']\n"
                   "import contextlib, io\nwith contextlib.redirect_stdout(io.StringIO()): main(['--help'])")
    assert not mods & set(HEAVY)


def test_select_help_lists_contract_options():
    out = subprocess.run([sys.executable, "-m", "frugalml.cli", "select", "--help"], capture_output=True, text=True)
    assert out.returncode == 0
    for opt in ("--target", "--group", "--task", "--metric", "--tolerance", "--cost-priority", "--folds",
                "--repeats", "--seed", "--executor", "--out"):
        assert opt in out.stdout
