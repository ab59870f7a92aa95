"""Progress: a rich bar per long step that says what runs, on a terminal only; library warnings kept off the
screen unless --debug (in the CLI process and in the joblib workers it starts)."""

import io
import os
import re
import subprocess
import sys
import textwrap

import pytest
from rich.console import Console

import frugalml.cli as cli
from conftest import linear_data

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
BAR = ("━", "╺", "╸")


def screen(buf: io.StringIO) -> str:
    """What a terminal was sent, without the escape codes; every frame on its own line."""
    return "\n".join(line.strip() for line in re.split(r"[\r\n]", ANSI.sub("", buf.getvalue())) if line.strip())


def terminal():
    """A rich console that believes it is a terminal, writing into a buffer."""
    buf = io.StringIO()
    return buf, (lambda quiet=False: Console(file=buf, force_terminal=True, width=120, quiet=quiet))


@pytest.fixture(scope="module")
def selected(tmp_path_factory):
    """`frugal select` (dummy and decision_tree, 200 rows, 2 folds) run on a terminal: (root, what it showed)."""
    root = tmp_path_factory.mktemp("progress")
    linear_data(n=200).to_csv(root / "d.csv", index=False)
    buf, console = terminal()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(cli, "_console", console)
        code = cli.main(["select", str(root / "d.csv"), "--target", "label", "--candidate", "dummy",
                         "--candidate", "decision_tree", "--folds", "2", "--repeats", "1", "--jobs", "1",
                         "--stability-draws", "20", "--no-memory-probe", "--out", str(root / "run"), "--json"])
    assert code == 0
    return root, screen(buf)


def test_select_bar_names_the_candidate_and_fold(selected):
    _, shown = selected
    assert any(c in shown for c in BAR)
    # every fit: "fitting: NAME, fold j/J", the one the results wait on; the last one at the end
    assert re.search(r"fitting: (dummy|decision_tree), fold [12]/2 .*/4", shown), shown
    assert "fitting: decision_tree, fold 2/2" in shown
    assert "cost: measuring decision_tree" in shown and "refitting on all rows: " in shown
    assert "stability of the decision: 20 draws of the rows" in shown


def test_compress_bar_names_the_variant(selected, capsys):
    from frugalml.evaluation import CostConfig
    from frugalml.verbs.compress import compress

    root, _ = selected
    buf, console = terminal()
    # the real bar and runner of the CLI, with a cost measurement fast enough for a test
    cli._run(compress, (str(root / "run"), str(root / "d.csv")), console(), quiet=True, techniques=["onnx-trees"],
             n_boot=200, cost_priority="size", out=root / "c",
             cost=CostConfig(latency_calls=30, time_budget_s=0.01, batch_large=50, memory_probe=False))
    shown = screen(buf)
    assert "trying techniques: onnx-trees" in shown, shown
    assert "cost: measuring original" in shown and "cost: measuring onnx-trees" in shown
    assert capsys.readouterr().out == ""  # quiet: no table


def test_bench_bar_counts_each_run(selected):
    from frugalml.serve.loadgen import BenchConfig, bench

    root, _ = selected
    buf, console = terminal()
    bar, update = cli._progress(console(), counts=False)
    seen = []
    with bar:
        bench(str(root / "run"), config=BenchConfig(scenario="server", qps=25, duration_s=0.6, min_duration_s=0,
                                                    min_queries=0), out=root / "b.json",
              progress=lambda *a: (seen.append(a), update(*a)))
    shown = screen(buf)
    assert re.search(r"qps 25: \d+ requests", shown), shown
    assert "starting: serving" in shown
    runs = [a for a in seen if a[0] == "run"]
    assert runs[-1][1] == runs[-1][2] == 0.6  # seconds of --duration-s, to the end
    assert all(0 <= a[1] <= 0.6 for a in runs)


def test_bench_lm_reports_each_prompt():
    from frugalml.runtime.lm.lm_bench import BenchConfig, measure_speed

    class Gen:
        prefill_s, decode_s, tokens = 0.01, [0.01, 0.01], [1, 2]

    class Engine:
        class config:
            speculative = False

        def encode(self, text):
            return [1, 2, 3]

        def generate(self, ids, n):
            return Gen(), {}

    seen = []
    measure_speed(Engine(), {"qa": ["a", "b"], "code": ["c"]}, BenchConfig(), lambda *a: seen.append(a))
    assert [a[3] for a in seen] == ["prompt 1/3 (qa)", "prompt 2/3 (qa)", "prompt 3/3 (code)", "3 prompts"]
    assert [a[1:3] for a in seen] == [(0, 3), (1, 3), (2, 3), (3, 3)] and {a[0] for a in seen} == {"batch-1"}


def test_a_callback_without_what_still_works():
    from frugalml.evaluation.quality import progress_reporter

    seen = []
    progress_reporter(lambda stage, done, total: seen.append((stage, done, total)))("fit", 1, 4, "dummy, fold 1/2")
    new = progress_reporter(lambda stage, done, total, what="": seen.append(what))
    new("fit", 2, 4, "dummy, fold 2/2")
    progress_reporter(None)("fit", 3, 4, "ignored")
    assert seen == [("fit", 1, 4), "dummy, fold 2/2"]


def test_no_bar_and_no_progress_text_off_a_terminal(selected, capsys, monkeypatch):
    for var in ("FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE"):
        monkeypatch.delenv(var, raising=False)
    root, _ = selected
    code = cli.main(["select", str(root / "d.csv"), "--target", "label", "--candidate", "dummy", "--folds", "2",
                     "--repeats", "1", "--jobs", "1", "--stability-draws", "0", "--no-memory-probe", "--allow-baseline",
                     "--out", str(root / "pipe"), "--json"])
    err = capsys.readouterr().err
    assert code == 0
    assert not any(c in err for c in BAR) and "fitting" not in err and "cost:" not in err, err
    # the same callback factory the commands use: nothing for a pipe, nothing when --quiet
    assert cli._progress(Console(file=io.StringIO())) == (None, None)
    assert cli._progress(Console(file=io.StringIO(), force_terminal=True, quiet=True)) == (None, None)


# A command that warns the way libraries do: in this process, in a joblib worker, and joblib's own "A worker
# stopped while some jobs were given to the executor" (raised in this process by loky's manager thread when a
# worker restarts: here its memory-leak check is made to fire, as a worker's growth past 300 MB does).
WARNING_SCRIPT = textwrap.dedent("""
    import sys, time, warnings
    import typer
    from joblib import Parallel, delayed
    import frugalml.cli as cli

    def in_worker(i):
        from joblib.externals.loky import process_executor
        process_executor._MAX_MEMORY_LEAK_SIZE = -1  # the next memory check of this worker finds a "leak"
        warnings.warn("warned in a worker", UserWarning)
        time.sleep(0.6)
        return i

    @cli.app.command("warn")
    def warn(debug: bool = typer.Option(False, "--debug")):
        warnings.warn("warned in the parent", UserWarning)
        Parallel(n_jobs=2)(delayed(in_worker)(i) for i in range(8))
        from frugalml.errors import ConfigError
        raise ConfigError("stopped here")

    sys.exit(cli.main(sys.argv[1:]))
""")


@pytest.mark.parametrize("debug", [False, True])
def test_library_warnings_only_with_debug(tmp_path, debug):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS"}
    args = ["warn"] + (["--debug"] if debug else [])
    res = subprocess.run([sys.executable, "-c", WARNING_SCRIPT, *args], capture_output=True, text=True,
                         env=env, cwd=tmp_path, timeout=120)
    messages = ("warned in the parent", "warned in a worker",
                "A worker stopped while some jobs were given to the executor")
    if debug:
        assert res.returncode != 0 and "stopped here" in res.stderr  # --debug raises
        assert all(m in res.stderr for m in messages), res.stderr
    else:
        assert res.returncode == 2 and res.stderr == "error: stopped here\n", res.stderr
