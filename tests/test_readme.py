"""The README's commands, run as written: every ``frugal ...`` line of its code blocks (the venv's ``frugal``, in
a scratch directory standing for the repository, so ``runs/...`` lands there), and its Python snippet; each must
exit 0 and leave what the README promises. ``make ...`` lines are what runs this suite: they are only checked to
be Makefile targets.

Commands are taken from README.md when the tests are collected, so an edited README is tested as edited. One that
reads a run directory another writes (``compress runs/rf``, ``frugalml.load("runs/fair")``) runs that one first.
Timings on the 2-core machine (loaded): list 1.5 s, env 3 s; every other command 20 to 80 s, so those are marked
slow.

Every ``frugal`` line of the README and of ``docs/*.md`` is also parsed against the CLI itself, without running
it (``test_documented_command_parses``, fast: 0.1 s a line): its verb must exist and its options and arguments
must parse, so the pages cannot drift from the CLI. Code blocks in the language ``console`` hold commands that
need something the tests do not start (a Dask or Ray cluster), or that another test covers on a smaller model
(``bench-lm`` on the real SmolLM2 took 3.5 minutes of CI; tests/test_lm_bench.py runs the verb on a tiny
Llama): they are parsed, never run. Output goes in ``text``
blocks, which are neither parsed nor run.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
FRUGAL = Path(sys.executable).with_name("frugal")  # the venv's entry point, as .venv/bin/frugal in the README
FAST = {"list", "env"}  # the commands that take seconds; the others are marked slow


def code_blocks(text: str) -> list[tuple[str, str]]:
    """(language, body) of every fenced code block."""
    return re.findall(r"^```(\w*)\n(.*?)^```", text, flags=re.S | re.M)


RUN_LANGS = ("", "sh", "bash", "shell")  # blocks whose commands are run as written
PARSE_LANGS = RUN_LANGS + ("console",)  # blocks whose commands are parsed (console: not run, see the docstring)


def shell_lines(text: str, langs: tuple[str, ...] = RUN_LANGS) -> list[str]:
    """The command lines of the shell blocks (blocks without a language), comments and blank lines left out."""
    lines = []
    for lang, body in code_blocks(text):
        if lang in langs:
            lines += [ln.strip() for ln in body.splitlines() if ln.strip() and not ln.strip().startswith("#")]
    return lines


def frugal_commands(text: str, langs: tuple[str, ...] = RUN_LANGS) -> list[list[str]]:
    """Each ``.venv/bin/frugal ...`` line as arguments (a trailing ``# comment`` dropped)."""
    out = []
    for line in shell_lines(text, langs):
        args = shlex.split(line, comments=True)
        if args and Path(args[0]).name == "frugal":
            out.append(args[1:])
    return out


def command_id(args: list[str]) -> str:
    return "frugal " + " ".join(args)


def out_dir(args: list[str]) -> str | None:
    return args[args.index("--out") + 1] if "--out" in args else None


COMMANDS = frugal_commands(README)
PRODUCERS = {out_dir(a): a for a in COMMANDS if out_dir(a)}  # run directory -> the command that writes it
SERVERS = {f"http://127.0.0.1:{a[a.index('--port') + 1] if '--port' in a else '8000'}": a
           for a in COMMANDS if a[0] == "serve"}  # URL -> the README line that serves it


def test_readme_has_commands_and_its_make_lines_are_makefile_targets():
    assert len(COMMANDS) >= 5 and {a[0] for a in COMMANDS} >= {"select", "compress", "list", "env"}
    makefile = (ROOT / "Makefile").read_text()
    targets = set(re.findall(r"^([A-Za-z][\w-]*):", makefile, flags=re.M))
    phony = set(re.search(r"^\.PHONY:(.*)$", makefile, flags=re.M).group(1).split())
    make = [shlex.split(ln, comments=True) for ln in shell_lines(README) if ln.startswith("make ")]
    assert make, "the README names no make target"
    for args in make:
        assert args[1] in targets and args[1] in phony, f"README's `{' '.join(args)}`: no such Makefile target"


PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
DOCUMENTED = list(dict.fromkeys((page.relative_to(ROOT).as_posix(), tuple(args)) for page in PAGES
                                for args in frugal_commands(page.read_text(), PARSE_LANGS)))


def usage_error() -> type[Exception]:
    """click's UsageError, the base of what a command line that does not parse raises (NoSuchOption,
    BadParameter, MissingParameter), from the click typer runs on (typer 0.29 ships its own copy)."""
    import typer

    return next(c for c in typer.BadParameter.__mro__ if c.__name__ == "UsageError")


def parse_frugal(args: list[str]) -> None:
    """Parse ``frugal ARGS`` as the CLI would, without running it: UsageError (an unknown verb or option, a
    missing argument, a value of the wrong type) if it does not parse. A trailing ``&`` (a line started in the
    background) is the shell's, not frugal's."""
    import typer

    from frugalml.cli import app

    args = args[:-1] if args and args[-1] == "&" else args
    commands = getattr(typer.main.get_command(app), "commands", {})
    if not args or args[0] not in commands:
        raise usage_error()(f"no such command {args[0] if args else ''!r}; frugal has {', '.join(commands)}")
    try:  # make_context parses and converts every parameter; the command's callback is never invoked
        commands[args[0]].make_context("frugal " + args[0], list(args[1:]), resilient_parsing=False)
    except typer.Exit:  # an eager option (--help) stopped parsing once it parsed
        pass


@pytest.mark.parametrize("page,args", [pytest.param(page, list(args), id=f"{page}: {command_id(list(args))}")
                                       for page, args in DOCUMENTED])
def test_documented_command_parses(page, args):
    """Every ``frugal`` line of the README and docs/ names a verb the CLI has, with options and arguments it
    accepts (quick: nothing runs)."""
    try:
        parse_frugal(args)
    except usage_error() as exc:
        pytest.fail(f"{page}: `{command_id(args)}` does not parse: {exc.format_message()}", pytrace=False)


def test_parse_check_catches_mistakes_and_the_pages_show_every_verb(capsys):
    """The check above fails on what it is there to catch; every verb is shown on some page."""
    import typer

    from frugalml.cli import app

    verbs = set(typer.main.get_command(app).commands)
    shown = {args[0] for _, args in DOCUMENTED}
    assert verbs - shown - {"demo"} == set(), "no page shows these verbs"  # demo: `make demo` runs it
    parse_frugal(["select", "builtin:fair", "--group", "religious", "--out", "runs/x"])
    parse_frugal(["serve", "runs/fair", "&"])
    parse_frugal(["select", "--help"])  # an eager option parses, though the required DATA is missing
    assert "Usage: frugal select" in capsys.readouterr().out
    for wrong in (["select", "builtin:fair", "--gruop", "religious"],  # a misspelled option
                  ["compress", "runs/rf", "--tolerance", "0.02"],  # a required option left out (--data)
                  ["select", "builtin:fair", "--folds", "five"],  # a value of the wrong type
                  ["generate", "builtin:smollm2"],  # a required argument left out
                  ["list", "extra"],  # an argument too many
                  ["selct", "builtin:fair"]):  # a misspelled verb
        with pytest.raises(usage_error()):
            parse_frugal(wrong)


class Workdir:
    """A scratch directory standing for the repository; each README command runs there at most once."""

    def __init__(self, path: Path):
        self.path = path
        self.done: dict[str, subprocess.CompletedProcess] = {}
        self.servers: list[subprocess.Popen] = []  # `frugal serve ... &`: left running for the bench lines

    def run(self, args: list[str]) -> subprocess.CompletedProcess:
        key = command_id(args)
        if key not in self.done and args[-1] == "&":
            self.done[key] = self.start_server(args[:-1])
        if "--url" in args:  # a bench line measures a server a README line starts
            url = args[args.index("--url") + 1]
            assert url in SERVERS, f"{command_id(args)}: no README line serves {url}"
            assert self.run(SERVERS[url]).returncode == 0, f"{command_id(SERVERS[url])} failed"
        if key not in self.done:
            for i, arg in enumerate(args):  # a run directory read here is written by an earlier command
                if arg in PRODUCERS and args[i - 1] != "--out":
                    assert self.run(PRODUCERS[arg]).returncode == 0, f"{command_id(PRODUCERS[arg])} failed"
            # COLUMNS: rich wraps the tables of `frugal list` at the terminal's width
            self.done[key] = subprocess.run([str(FRUGAL), *args], cwd=self.path, capture_output=True, text=True,
                                            timeout=1800, env={**os.environ, "COLUMNS": "400"})
        return self.done[key]


    def start_server(self, args: list[str]) -> subprocess.CompletedProcess:
        """A README server line: started in the background, 0 once its /healthz answers 200."""
        from frugalml.serve.server import wait_ready

        for i, arg in enumerate(args):
            if arg in PRODUCERS:
                assert self.run(PRODUCERS[arg]).returncode == 0, f"{command_id(PRODUCERS[arg])} failed"
        port = args[args.index("--port") + 1] if "--port" in args else "8000"
        proc = subprocess.Popen([str(FRUGAL), *args], cwd=self.path, stderr=subprocess.PIPE, text=True)
        self.servers.append(proc)
        try:
            wait_ready(f"http://127.0.0.1:{port}", 300, alive=lambda: proc.poll() is None)
        except Exception as exc:
            return subprocess.CompletedProcess(args, 1, "", str(exc))
        return subprocess.CompletedProcess(args, 0, "", "")

    def stop_servers(self) -> list[int]:
        import signal

        codes = []
        for proc in self.servers:
            proc.send_signal(signal.SIGTERM)
            codes.append(proc.wait(timeout=60))
        return codes


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    w = Workdir(tmp_path_factory.mktemp("readme"))
    yield w
    assert w.stop_servers() == [0] * len(w.servers)  # SIGTERM drains and exits 0


def _assert_run_dir(run: Path, command: str, validate_decision) -> dict:
    """What the README says a run directory holds."""
    decision = json.loads((run / "decision.json").read_text())
    validate_decision(decision)
    assert decision["command"] == command
    assert (run / "report.md").read_text().strip()
    assert (run / "model" / "meta.json").exists() and (run / "model" / "model.skops").exists()
    assert (run / "report.html").read_text().strip()
    if command == "select":
        assert (run / "folds.json").exists() and (run / "trials").is_dir()
    import frugalml

    assert frugalml.load(run).name == decision["recommended"]
    return decision


@pytest.mark.parametrize("args", [pytest.param(a, id=command_id(a), marks=[] if a[0] in FAST else [pytest.mark.slow])
                                  for a in COMMANDS])
def test_readme_command_runs_as_written(args, workdir, validate_decision):
    res = workdir.run(args)
    assert FRUGAL.exists(), f"{FRUGAL} not found: run the tests with the venv's python"
    assert res.returncode == 0, f"{command_id(args)} exited {res.returncode}: {res.stderr[-2000:]}"
    verb = args[0]
    if verb in ("select", "compress"):
        decision = _assert_run_dir(workdir.path / out_dir(args), verb, validate_decision)
        if "--group" in args:
            groups = [args[i + 1] for i, a in enumerate(args) if a == "--group"]
            assert decision["groups"] == groups
        if "--tolerance" in args:
            assert decision["tolerance"] == float(args[args.index("--tolerance") + 1])
        if "--candidate" in args:
            assert args[args.index("--candidate") + 1] in {c["name"] for c in decision["candidates"]}
    elif verb == "generate":
        answer = res.stdout.strip().splitlines()[0].lower()
        prompt = args[2].lower()
        if prompt.startswith("repeat exactly:"):  # the README's prompt-lookup example repeats a sentence
            assert prompt.split(":", 1)[1].strip().rstrip(".") in answer, res.stdout
        if "capital of france" in prompt:
            assert "paris" in answer, res.stdout
    elif verb == "bench":
        assert "VALID" in res.stdout or "tokens/s" in res.stdout or "requests/s" in res.stdout, res.stdout[-2000:]
        if args[1] in PRODUCERS:  # a run directory: the results land in it
            assert (workdir.path / args[1] / "bench.json").exists()
    elif verb == "bench-lm":
        assert "tokens/s" in res.stdout, res.stdout[-2000:]
        if out_dir(args):  # --out: the result joins the folder's bench_lm.json, and its report is written
            assert (workdir.path / out_dir(args) / "bench_lm.json").exists()
            assert (workdir.path / out_dir(args) / "report.html").read_text().strip()
    elif verb == "report":
        for name in ("report.html", "report.md"):
            assert (workdir.path / args[1] / name).read_text().strip(), f"{args[1]}/{name} is empty"
    elif verb == "list":
        from frugalml.candidates import CANDIDATES
        from frugalml.compression import TECHNIQUES
        from frugalml.data import DATASETS

        assert [n for n in [*CANDIDATES, *DATASETS, *TECHNIQUES] if n not in res.stdout] == []
        assert "metrics" in res.stdout
    elif verb == "env":
        import frugalml

        assert res.stdout.splitlines()[0] == f"frugalml {frugalml.__version__}" and "logical cores" in res.stdout


PYTHON = [body for lang, body in code_blocks(README) if lang == "python"]


@pytest.mark.slow  # it reads runs/fair, which the README's first select writes (about a minute)
@pytest.mark.parametrize("code", PYTHON, ids=[f"snippet{i}" for i in range(len(PYTHON))])
def test_readme_python_snippet_runs(code, workdir, monkeypatch):
    """The snippet as written, with ``df`` (which it leaves to the reader) the table of the run it loads."""
    from frugalml.data import read_table
    from frugalml.runtime.model_dir import DeployedModel

    for path in re.findall(r"""frugalml\.load\(["']([^"']+)["']\)""", code):
        assert path in PRODUCERS, f"the snippet loads {path}, which no README command writes"
        assert workdir.run(PRODUCERS[path]).returncode == 0
        source = PRODUCERS[path][1]  # builtin:NAME, the data the run was selected on
    df = read_table(source)[0]
    monkeypatch.chdir(workdir.path)
    namespace = {"df": df}
    exec(compile(code, "README.md", "exec"), namespace)
    model = namespace["model"]
    assert isinstance(model, DeployedModel)
    target = json.loads((workdir.path / path / "decision.json").read_text())["data"]["target"]
    labels = model.predict(df)  # original label values; the extra columns (the target among them) ignored
    assert labels.shape == (len(df),) and set(labels) <= set(df[target])
    proba = model.predict_proba(df)
    assert proba.shape == (len(df), len(model.classes_))
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-5)


CURLS = [shlex.split(ln) for ln in shell_lines(README) if ln.startswith("curl ")]


@pytest.mark.slow  # it serves runs/fair, which the README's first select writes
@pytest.mark.parametrize("args", CURLS, ids=[f"curl{i}" for i in range(len(CURLS))])
def test_readme_curl_lines_answer_as_shown(args, workdir):
    """A README `curl` line, sent with httpx to the server a README line starts: 200 and the keys it shows."""
    import httpx

    url = next(a for a in args[1:] if not a.startswith("-") and "localhost" in a)
    base = "http://127.0.0.1:" + url.split("localhost:", 1)[1].split("/", 1)[0]
    assert base in SERVERS, f"no README line serves {base}"
    assert workdir.run(SERVERS[base]).returncode == 0
    body = json.loads(args[args.index("-d") + 1])
    r = httpx.post(base + "/" + url.split("/", 1)[1], json=body, timeout=60)
    assert r.status_code == 200, r.text
    assert {"predictions", "probabilities", "classes"} <= set(r.json())
