"""The ``frugal`` command line: thin, flags -> public API. Heavy imports happen inside each command."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import List, Optional

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="frugalml: select the thinnest model on par with the best, and optimise it for inference.")


def _console(quiet: bool = False):
    from rich.console import Console

    return Console(stderr=True, quiet=quiet)


# the bar's label of each stage a progress callback reports; the callback's ``what`` follows it
_STAGES = {"fit": "fitting", "refit": "refitting on all rows", "cost": "cost", "memory": "peak memory",
           "stability": "stability of the decision", "search": "trying techniques",
           "chain": "chaining techniques", "confirm": "confirming on fresh rows",
           "load": "loading", "batch-1": "batch-1 timing", "bandwidth": "memory bandwidth",
           "batched": "batched timing", "baseline": "transformers generate", "quality": "quality vs float32",
           "start": "starting", "run": ""}


def _progress(console, counts: bool = True):
    """-> (bar, callback ``(stage, done, total, what="")``): a rich bar per stage on a terminal, labelled with
    the stage and what runs now ("fitting: lightgbm, fold 3/10"); (None, None) in a pipe or when quiet."""
    if not console.is_terminal or console.quiet:
        return None, None
    from rich.markup import escape
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TaskProgressColumn, TextColumn,
                               TimeElapsedColumn)

    bar = Progress(TextColumn("{task.description}"), BarColumn(),
                   MofNCompleteColumn() if counts else TaskProgressColumn(), TimeElapsedColumn(),
                   console=console, transient=True, refresh_per_second=4)
    tasks, last = {}, {}

    def update(stage, done, total, what=""):
        label = _STAGES.get(stage, stage)
        text = escape(f"{label}: {what}" if label and what else label or what)
        if stage not in tasks:
            tasks[stage] = bar.add_task(text, total=total)
        elif done < last[stage]:  # a new round (a chain round, the next run of a sweep): the bar starts again
            bar.reset(tasks[stage], total=total, description=text)
        bar.update(tasks[stage], completed=done, total=total, description=text)
        last[stage] = done

    return bar, update


def _run(verb, args: tuple, console, quiet: bool, show_json: bool = False, **kwargs):
    """Run a verb of the public API with a progress bar on a terminal, then print its decision."""
    from .report import print_summary

    bar, update = _progress(console)
    if bar is not None:
        with bar:
            result = verb(*args, progress=update, **kwargs)
    else:
        result = verb(*args, **kwargs)
    resumed = result.decision.get("settings", {}).get("resume")
    if resumed and not show_json:  # what --resume reused, and the stored entries that were damaged and redone
        damaged, made = resumed["damaged"], resumed["made"]
        counts = ", ".join(f"{n} {kind}s" for kind, n in resumed["reused"].items())
        typer.echo(f"resume: reused {counts or 'nothing'}; made {', '.join(f'{n} {k}s' for k, n in made.items())}" +
                   (f"; {len(damaged)} damaged entries made again: {', '.join(damaged[:5])}" if damaged else ""),
                   err=True)
    if show_json:
        import json

        typer.echo(json.dumps(result.decision, indent=2))
    elif not quiet:
        from rich.console import Console

        print_summary(result.decision, Console())
        typer.echo(f"run directory: {result.run_dir}")
        typer.echo(f"report: {result.run_dir / 'report.html'}")
    return result


# the cost-measurement options select and compress share
_THREADS = typer.Option(1, help="Threads for cost measurements.")
_THROUGHPUT_BATCH = typer.Option(1000, help="Rows per call when measuring throughput and peak memory.")
_MEMORY_PROBE = typer.Option(True, "--memory-probe/--no-memory-probe",
                             help="Measure peak memory in a child process per candidate (about 3 s each).")
_USD_PER_HOUR = typer.Option(0.096, help="Instance price for the $ column.")
_INSTANCE_VCPUS = typer.Option(2, help="vCPUs of that instance.")
_GRID_INTENSITY = typer.Option(475.0, help="Grid carbon intensity, gCO2e/kWh.")
_EXECUTOR = typer.Option("local", help="Where the trials run: local (--jobs processes), dask://HOST:PORT (a Dask "
                         "scheduler), ray://HOST:PORT (a Ray cluster, through Ray Client) or ray:auto (this "
                         "machine's Ray, started with --jobs CPUs if none runs). Costs are always measured here.")
_REQUESTS_PER_DAY = typer.Option(1_000_000, help="Predictions a day: the report counts yearly savings at this "
                                 "traffic.")


def _cost_config(threads, throughput_batch, memory_probe, usd_per_hour, instance_vcpus, grid_intensity):
    from .errors import ConfigError
    from .evaluation import CostConfig

    if threads < 1 or throughput_batch < 1 or instance_vcpus < 1:
        raise ConfigError("--threads, --throughput-batch and --instance-vcpus must be at least 1")
    return CostConfig(threads=threads, batch_large=throughput_batch, memory_probe=memory_probe,
                      usd_per_hour=usd_per_hour, instance_vcpus=instance_vcpus, grid_gco2e_per_kwh=grid_intensity)


@app.command()
def select(
    data: str = typer.Argument(..., help="CSV or Parquet file, a folder or a quoted glob of Parquet files (read "
                               "lazily), a folder of images (DIR/label/*.png), or builtin:NAME (see frugal list)."),
    target: Optional[str] = typer.Option(None, "--target", "-t", help="Column to predict (builtin datasets have a default)."),
    group: Optional[List[str]] = typer.Option(None, "--group", "-g", help="Column whose values are user groups; repeatable."),
    text: Optional[List[str]] = typer.Option(None, "--text", help="Free-text column, read by the text candidates "
                                             "(TF-IDF, MiniLM); repeatable. Builtin text datasets have a default."),
    image: Optional[str] = typer.Option(None, "--image", help="Column of image file paths (relative to the table's "
                                        "folder), read by the image candidates, each at several resolutions."),
    task: str = typer.Option("auto", help="auto, classification or regression."),
    metric: Optional[str] = typer.Option(None, help="A scikit-learn scorer name (accuracy, f1_macro, roc_auc, r2, ...) or rmse/mae/log_loss."),
    tolerance: float = typer.Option(0.01, help="Largest quality loss, in metric units, that still counts as on par."),
    alpha: float = typer.Option(0.05, help="Significance level of the non-inferiority tests."),
    min_group_size: int = typer.Option(30, help="Groups with fewer rows are reported but not tested."),
    cost_priority: str = typer.Option("latency", help="latency, size, energy or memory: what 'cheapest' means."),
    strict_groups: bool = typer.Option(False, help="A group too small to show non-inferiority rejects a candidate "
                                       "(by default only a group that shows harm does)."),
    allow_baseline: bool = typer.Option(False, help="Let the constant baseline be recommended."),
    stability_draws: int = typer.Option(200, help="Bootstrap draws of the rows that measure how stable the decision "
                                        "is (0: skip)."),
    folds: int = typer.Option(5, help="Folds per repeat."),
    repeats: int = typer.Option(2, help="Repeats of the k-fold split."),
    seed: int = typer.Option(0, help="Seed for splits and models."),
    sample: Optional[int] = typer.Option(None, help="Select on this many of the rows, drawn with --seed (stratified "
                                         "by class); the deployed model is fitted on them too. Default: every row."),
    candidate: Optional[List[str]] = typer.Option(None, "--candidate", "-c",
                                                  help="A registered name (restricts the ladder) or module:factory (adds one); repeatable."),
    out: Optional[Path] = typer.Option(None, help="Run directory (default runs/select-DATE-TIME)."),
    overwrite: bool = typer.Option(False, help="Replace --out if it exists (only once the new run is complete)."),
    resume: bool = typer.Option(False, help="Continue an interrupted run into --out, reusing its finished fits."),
    executor: str = _EXECUTOR,
    jobs: int = typer.Option(-1, help="Parallel fits (local executor; ray:auto's CPUs); -1 = all cores."),
    threads: int = _THREADS,
    throughput_batch: int = _THROUGHPUT_BATCH,
    memory_probe: bool = _MEMORY_PROBE,
    usd_per_hour: float = _USD_PER_HOUR,
    instance_vcpus: int = _INSTANCE_VCPUS,
    grid_intensity: float = _GRID_INTENSITY,
    requests_per_day: int = _REQUESTS_PER_DAY,
    json_out: bool = typer.Option(False, "--json", help="Print decision.json to stdout instead of the table."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress or table."),
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks and library warnings."),
):
    """Select the thinnest model on par with the best, overall and in every group."""
    import time

    if out is None:
        out = Path("runs") / time.strftime("select-%Y%m%d-%H%M%S")
    cost = _cost_config(threads, throughput_batch, memory_probe, usd_per_hour, instance_vcpus, grid_intensity)
    candidates = None
    if candidate:
        from .candidates import from_spec

        candidates = [from_spec(c) if ":" in c else c for c in candidate]
    from .verbs.select import select as run_select

    _run(run_select, (data,), _console(quiet), quiet, json_out, out=out, target=target, groups=group or None,
         text=text or None, image=image, task=task, metric=metric, tolerance=tolerance, alpha=alpha,
         min_group_size=min_group_size, cost_priority=cost_priority, strict_groups=strict_groups,
         allow_baseline=allow_baseline, stability_draws=stability_draws, folds=folds, repeats=repeats, seed=seed,
         sample=sample, candidates=candidates, overwrite=overwrite, resume=resume, executor=executor, n_jobs=jobs,
         cost=cost, requests_per_day=requests_per_day)


@app.command()
def compress(
    model: str = typer.Argument(..., help="A run directory of frugal select (or its model/ folder), an ONNX file, "
                                          "a scikit-learn model saved with skops or a local Hugging Face "
                                          "sequence-classifier folder (the last three read against --data; give "
                                          "--target)."),
    data: str = typer.Option(..., "--data", help="Labelled rows the model did not train on (CSV, Parquet, builtin:NAME)."),
    target: Optional[str] = typer.Option(None, "--target", "-t", help="Target column (default: the model's)."),
    group: Optional[List[str]] = typer.Option(None, "--group", "-g", help="Column whose values are user groups; repeatable."),
    text: Optional[List[str]] = typer.Option(None, "--text", help="Text column a Hugging Face model reads "
                                             "(default: the data's text-like columns); repeatable."),
    techniques: Optional[str] = typer.Option(None, help="Comma-separated techniques (default: all that apply; see frugal list)."),
    chain: bool = typer.Option(True, "--chain/--no-chain", help="Compress the variants that hold again with "
                               "later-stage techniques (fewer trees, then shallower; pruned, then int8)."),
    metric: Optional[str] = typer.Option(None, help="Metric (default: the one the model was selected with)."),
    tolerance: float = typer.Option(0.01, help="Largest quality loss, in metric units, a variant may cost."),
    alpha: float = typer.Option(0.05, help="Family-wise error level: the search screens on half the evaluation rows, "
                                "the variants that held are confirmed on the other half in a fixed sequence."),
    min_group_size: int = typer.Option(30, help="Groups with fewer confirmation rows are reported but not tested."),
    cost_priority: str = typer.Option("latency", help="latency, size, energy or memory."),
    seed: int = typer.Option(0, help="Seed for the calibration/evaluation split and the bootstrap."),
    out: Optional[Path] = typer.Option(None, help="Run directory (default runs/compress-DATE-TIME)."),
    overwrite: bool = typer.Option(False, help="Replace --out if it exists (only once the new run is complete)."),
    resume: bool = typer.Option(False, help="Continue an interrupted (or finished) run into --out, reusing the "
                                "variants and costs it stored."),
    executor: str = _EXECUTOR,
    jobs: int = typer.Option(1, help="Trials side by side (local executor; ray:auto's CPUs); -1 = all cores. "
                             "Default 1: a round is a few trials wide; more pays where trials are long."),
    threads: int = _THREADS,
    throughput_batch: int = _THROUGHPUT_BATCH,
    memory_probe: bool = _MEMORY_PROBE,
    usd_per_hour: float = _USD_PER_HOUR,
    instance_vcpus: int = _INSTANCE_VCPUS,
    grid_intensity: float = _GRID_INTENSITY,
    requests_per_day: int = _REQUESTS_PER_DAY,
    json_out: bool = typer.Option(False, "--json", help="Print decision.json to stdout instead of the table."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress or table."),
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks and library warnings."),
):
    """Compress a selected model (shrink forests, truncate boosting, distill into a thin student), keeping
    quality within tolerance overall and in every group."""
    import time

    from .verbs.compress import compress as run_compress

    if out is None:
        out = Path("runs") / time.strftime("compress-%Y%m%d-%H%M%S")
    names = [t.strip() for t in techniques.split(",") if t.strip()] if techniques else None
    cost = _cost_config(threads, throughput_batch, memory_probe, usd_per_hour, instance_vcpus, grid_intensity)
    _run(run_compress, (model, data), _console(quiet), quiet, json_out, target=target, groups=group or None,
         text=text or None, techniques=names, metric=metric, tolerance=tolerance, alpha=alpha, min_group_size=min_group_size,
         cost_priority=cost_priority, seed=seed, out=out, overwrite=overwrite, cost=cost, chain=chain,
         requests_per_day=requests_per_day, resume=resume, n_jobs=jobs, executor=executor)


_MODEL_HELP = "builtin:smollm2 (embedded), a .gguf file, or a local Hugging Face folder of a Llama-family model."


# the engine options generate and bench-lm share (what is benchmarked is what generates)
_QUANTIZE = typer.Option(None, help="int8 (per channel) or int4 (groups of 32): weight-only.")
_DTYPE = typer.Option("float32", help="float32 or bfloat16 (weights, activations, KV cache).")
_PACK = typer.Option(True, "--pack/--no-pack", help="Lay floating-point weights out once for oneDNN (same values, "
                                                    "faster matmuls).")
_COMPILE = typer.Option(False, "--compile", help="torch.compile the decode step (compile time reported).")
_DRAFT = typer.Option(None, help="Speculate with a draft model sharing the tokenizer (a model as above), or "
                                 "self:int8 / self:int4 [:LAYERS], the model's own copy.")
_DRAFT_TOKENS = typer.Option(4, help="Most tokens the draft guesses per pass (adapted to its acceptance).")
_PROMPT_LOOKUP = typer.Option(0, help="Speculate with prompt lookup, matching n-grams up to N.")
_NO_CACHE = typer.Option(False, "--no-cache", help="Quantize again rather than read the weights quantized on an "
                                                   "earlier run ($FRUGAL_CACHE_DIR, else ~/.cache/frugalml/lm).")


def _need_lm_engine(command: str) -> None:
    """The engine imports torch and reads tokenizers with transformers: say how to install them, up front."""
    from .errors import need

    for module in ("torch", "transformers"):
        need(module, f"frugal {command}", "lm")


def _engine_config(quantize, dtype, pack, compile_, draft, draft_tokens, prompt_lookup, no_cache):
    from .runtime.lm.engine import EngineConfig

    cfg = EngineConfig(quantize=quantize, dtype=dtype, pack=pack, compile=compile_, draft=draft,
                       draft_tokens=draft_tokens, prompt_lookup=prompt_lookup, cache=not no_cache)
    cfg.check()
    return cfg


@app.command()
def generate(
    model: str = typer.Argument(..., help=_MODEL_HELP),
    prompt: str = typer.Argument(..., help="The prompt text."),
    raw: bool = typer.Option(False, "--raw", help="Send the prompt as is, without the model's chat template."),
    quantize: Optional[str] = _QUANTIZE,
    dtype: str = _DTYPE,
    pack: bool = _PACK,
    compile_: bool = _COMPILE,
    draft: Optional[str] = _DRAFT,
    draft_tokens: int = _DRAFT_TOKENS,
    prompt_lookup: int = _PROMPT_LOOKUP,
    no_cache: bool = _NO_CACHE,
    max_new_tokens: int = typer.Option(128, help="Most tokens to generate."),
    temperature: float = typer.Option(0.0, help="0 = greedy; above 0 samples."),
    top_p: float = typer.Option(1.0, help="Nucleus sampling: keep the smallest set of tokens reaching this mass."),
    seed: int = typer.Option(0, help="Seed of the sampler."),
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks and library warnings."),
):
    """Generate text with frugalml's decode engine (static KV cache); text to stdout, statistics to stderr."""
    _need_lm_engine("generate")
    from .errors import DataError
    from .runtime.lm.engine import Engine
    from .runtime.lm.generate import SamplingConfig

    sampling = SamplingConfig(temperature, top_p, seed)
    sampling.check()
    if not prompt.strip():
        raise DataError("the prompt is empty; give some text")
    engine = Engine.load(model, _engine_config(quantize, dtype, pack, compile_, draft, draft_tokens, prompt_lookup,
                                               no_cache))
    ids = engine.encode(prompt, chat=not raw)
    out_ids: list[int] = []
    shown = ""

    def stream(token: int) -> None:  # decode the whole continuation, print what is new (multi-byte safe)
        nonlocal shown
        out_ids.append(token)
        text = engine.tokenizer.decode(out_ids, skip_special_tokens=True)
        if text.startswith(shown):
            sys.stdout.write(text[len(shown):])
            sys.stdout.flush()
            shown = text

    result, stats = engine.generate(ids, max_new_tokens, sampling, on_token=stream)
    sys.stdout.write("\n")
    extra = ""
    if "acceptance_rate" in stats:
        extra = f"; speculative acceptance {stats['acceptance_rate']:.2f}"
    if engine.compile_s is not None:
        extra += f"; compiled in {engine.compile_s:.1f} s"
    extra += f"; loaded in {sum(engine.timings.values()):.1f} s"  # read, quantized (or cached), packed
    typer.echo(f"prompt {len(ids)} tokens, time to first token {1000 * result.prefill_s:.1f} ms; "
               f"{len(result.tokens)} tokens, decode {result.decode_tokens_per_s:.1f} tokens/s{extra}", err=True)


@app.command()
def serve(
    target: str = typer.Argument(..., help="A run directory or model/ folder (POST /v1/predict), or a language model: "
                                 "builtin:smollm2, a .gguf file or a local Hugging Face folder (the OpenAI API)."),
    host: str = typer.Option("127.0.0.1", help="Address to listen on (127.0.0.1: this machine only)."),
    port: int = typer.Option(8000, help="Port (0: any free port, printed)."),
    max_batch_size: Optional[int] = typer.Option(None, help="Predictors: most rows per runtime call (default 64). "
                                                 "Language models: most sequences decoding at once (default 16)."),
    max_wait_ms: float = typer.Option(2.0, help="Predictors: longest a batch waits for more rows after its first "
                                      "request."),
    max_queue: int = typer.Option(256, help="Requests waiting beyond the running batch; more get 429 + Retry-After."),
    max_body_bytes: int = typer.Option(4 << 20, help="Largest request body (413 beyond)."),
    token_file: Optional[Path] = typer.Option(None, help="File holding a bearer token every request must carry "
                                              "(401 without it)."),
    drain_timeout_s: float = typer.Option(30.0, help="On SIGTERM: longest wait for requests in flight."),
    threads: Optional[int] = typer.Option(None, help="Predictors: ONNX Runtime threads (default: its own)."),
    context: int = typer.Option(2048, help="Language models: tokens per sequence, prompt + max_tokens "
                                "(sizes the KV cache)."),
    quantize: Optional[str] = _QUANTIZE,
    dtype: str = _DTYPE,
    pack: bool = _PACK,
    compile_: bool = _COMPILE,
    draft: Optional[str] = _DRAFT,
    draft_tokens: int = _DRAFT_TOKENS,
    prompt_lookup: int = _PROMPT_LOOKUP,
    no_cache: bool = _NO_CACHE,
    replicas: int = typer.Option(1, help="Predictors: copies of the server behind Ray Serve's proxy on --host/--port "
                                 "(needs the ray extra); 1 with --executor local: one process, no Ray."),
    executor: str = typer.Option("local", help="Where --replicas run: local (a Ray started for the purpose), ray:auto "
                                 "(the Ray `ray start` runs here) or ray://HOST:PORT (a cluster, Ray Client)."),
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks and library warnings."),
):
    """Serve a model over HTTP: /v1/predict with dynamic batching, or a language model through the OpenAI API
    (completions, chat, streaming) with continuous batching; /healthz, /metrics (Prometheus)."""
    from .errors import ConfigError, DataError
    from .serve import ServeConfig
    from .serve import serve as run_server
    from .serve.app import is_language_model

    token = None
    if token_file is not None:
        try:
            token = token_file.read_text().strip()
        except OSError as exc:
            raise DataError(f"cannot read --token-file {token_file}: {exc.strerror}") from None
        if not token or any(c.isspace() for c in token):
            raise ConfigError(f"--token-file {token_file} must hold one token, without spaces")
    engine = None
    if is_language_model(target):
        _need_lm_engine("serve")
        engine = _engine_config(quantize, dtype, pack, compile_, draft, draft_tokens, prompt_lookup, no_cache)
    config = ServeConfig(host=host, port=port, max_batch_size=max_batch_size, max_wait_ms=max_wait_ms,
                         max_queue=max_queue, max_body_bytes=max_body_bytes, token=token,
                         drain_timeout_s=drain_timeout_s, threads=threads, context=context, engine=engine)
    if host not in ("127.0.0.1", "localhost", "::1") and token is None:
        typer.echo(f"warning: listening on {host} without --token-file: anyone who reaches it can use it", err=True)

    def listening(url: str) -> None:
        typer.echo(f"serving {target} at {url} (ready when {url}/healthz answers 200; Ctrl-C or SIGTERM stops)",
                   err=True)

    if replicas != 1 or executor != "local":
        from .serve.replicas import serve_replicas

        return serve_replicas(target, config, replicas, executor, on_listen=lambda url: typer.echo(
            f"serving {target} with {replicas} replicas (Ray Serve) at {url} (every replica answered /healthz 200; "
            "Ctrl-C or SIGTERM stops)", err=True))
    run_server(target, config, on_listen=listening)


@app.command()
def bench(
    target: Optional[str] = typer.Argument(None, help="A run directory or model/ folder, or a language model "
                                           "(builtin:smollm2, a .gguf, a Hugging Face folder), served on 127.0.0.1 "
                                           "for the run. Omit it with --url (or give it too: its schema and data "
                                           "are used, its run directory gets bench.json)."),
    url: Optional[str] = typer.Option(None, help="Measure the server already running there: frugal serve, or any "
                                      "OpenAI-compatible one (vLLM, llama-server, TGI)."),
    scenario: Optional[str] = typer.Option(None, help="single-stream (one request at a time), offline (all at once, "
                                           "--concurrency in flight) or server (Poisson arrivals at --qps). Default: "
                                           "server with --qps or --sweep, else single-stream."),
    qps: Optional[float] = typer.Option(None, help="Server scenario: arrivals per second (with --sweep: the rate "
                                        "the search starts from, which must pass)."),
    sweep: bool = typer.Option(False, "--sweep", help="Server scenario: find the highest rate that stays VALID "
                               "(doubling, then bisecting); needs an --slo-*."),
    duration_s: float = typer.Option(10.0, help="Seconds of load per run (then the requests in flight finish)."),
    num_requests: Optional[int] = typer.Option(None, help="At most this many requests per run."),
    concurrency: Optional[int] = typer.Option(None, help="Requests in flight at most (offline default 32; server: "
                                              "none, an open loop; beyond it requests wait: client queue time)."),
    slo_p99_ms: Optional[float] = typer.Option(None, help="Objective: p99 end-to-end latency in ms."),
    slo_ttft_ms: Optional[float] = typer.Option(None, help="Language models: objective on p99 time to first token."),
    slo_tpot_ms: Optional[float] = typer.Option(None, help="Language models: objective on p99 time per output token."),
    data: Optional[str] = typer.Option(None, help="Predictors: rows to send (CSV, Parquet, builtin:NAME; default: "
                                       "the data the run used). Language models: a JSONL of {\"prompt\": ...} "
                                       "(default: the engine's built-in prompts)."),
    rows: int = typer.Option(1, help="Predictors: rows per request."),
    max_tokens: int = typer.Option(64, help="Language models: max_tokens of every request (temperature 0)."),
    completions: bool = typer.Option(False, "--completions", help="Language models: /v1/completions with the raw "
                                     "prompt instead of /v1/chat/completions."),
    seed: int = typer.Option(0, help="Seed of the arrivals and of the rows or prompts sent."),
    timeout_s: float = typer.Option(120.0, help="A request unanswered after this many seconds fails."),
    min_duration_s: float = typer.Option(10.0, help="Server scenario: a shorter run is INVALID (LoadGen's rule)."),
    min_queries: int = typer.Option(100, help="Server scenario: fewer completed requests is INVALID."),
    token_file: Optional[Path] = typer.Option(None, help="File holding the bearer token of the --url server."),
    max_batch_size: Optional[int] = typer.Option(None, help="The server started here: as frugal serve's option."),
    max_wait_ms: float = typer.Option(2.0, help="The server started here: as frugal serve's option."),
    max_queue: int = typer.Option(256, help="The server started here: as frugal serve's option."),
    threads: Optional[int] = typer.Option(None, help="The server started here: ONNX Runtime threads."),
    context: int = typer.Option(2048, help="The server started here: language models' tokens per sequence."),
    out: Optional[Path] = typer.Option(None, help="Write bench.json into this folder (or to this .json file); "
                                       "default: into TARGET's run directory, if it is one."),
    json_out: bool = typer.Option(False, "--json", help="Print the JSON instead of the table."),
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks and library warnings."),
):
    """Load a server the way MLPerf LoadGen and vllm bench serve do: latency percentiles, throughput, TTFT/TPOT
    and goodput, with the Server scenario's VALID/INVALID verdict; results to stdout and bench.json."""
    from .errors import ConfigError, DataError
    from .serve import ServeConfig
    from .serve.app import is_language_model
    from .serve.loadgen import BenchConfig, bench as run_bench

    token = None
    if token_file is not None:
        try:
            token = token_file.read_text().strip()
        except OSError as exc:
            raise DataError(f"cannot read --token-file {token_file}: {exc.strerror}") from None
        if not token:
            raise ConfigError(f"--token-file {token_file} is empty")
    if scenario is None:
        scenario = "server" if qps is not None or sweep else "single-stream"
    config = BenchConfig(scenario=scenario, qps=qps, sweep=sweep, duration_s=duration_s, num_requests=num_requests,
                         concurrency=concurrency, slo_p99_ms=slo_p99_ms, slo_ttft_ms=slo_ttft_ms,
                         slo_tpot_ms=slo_tpot_ms, rows_per_request=rows, max_tokens=max_tokens,
                         api="completions" if completions else "chat", seed=seed, timeout_s=timeout_s,
                         min_duration_s=min_duration_s, min_queries=min_queries, token=token)
    config.check()
    serve_config = None
    if url is None and target is not None:
        if is_language_model(target):
            _need_lm_engine("bench")
        serve_config = ServeConfig(port=0, max_batch_size=max_batch_size, max_wait_ms=max_wait_ms,
                                   max_queue=max_queue, threads=threads, context=context)
    from contextlib import nullcontext

    bar, update = _progress(_console(), counts=False)  # a bar over each run on a terminal; nothing in a pipe
    with bar or nullcontext():
        result = run_bench(target, url=url, config=config, data=data, serve_config=serve_config, out=out,
                           progress=update)
    if json_out:
        import json

        typer.echo(json.dumps(result, indent=2))
    else:
        from rich.console import Console

        from .serve.bench_table import print_bench

        print_bench(result, Console())


@app.command("bench-lm")
def bench_lm(
    model: str = typer.Argument(..., help=_MODEL_HELP),
    quantize: Optional[str] = _QUANTIZE,
    dtype: str = _DTYPE,
    pack: bool = _PACK,
    compile_: bool = _COMPILE,
    draft: Optional[str] = _DRAFT,
    draft_tokens: int = _DRAFT_TOKENS,
    prompt_lookup: int = _PROMPT_LOOKUP,
    no_cache: bool = _NO_CACHE,
    batch: int = typer.Option(16, help="Requests running at once in the batched measurement (1 skips it)."),
    baseline: Optional[str] = typer.Option(None, help="hf: also time transformers' generate on the same weights."),
    new_tokens: int = typer.Option(64, help="Most new tokens per prompt (answers stop at end-of-sequence)."),
    threads: int = typer.Option(2, help="Threads for every measurement."),
    prompts_per_slice: int = typer.Option(2, help="Built-in prompts per task slice timed for speed."),
    prompt: Optional[List[str]] = typer.Option(None, "--prompt", help="Your own prompt, timed and checked as the "
                                                                      "slice 'user'; repeatable."),
    no_quality: bool = typer.Option(False, "--no-quality", help="Skip the quality comparison."),
    out: Optional[Path] = typer.Option(None, help="Add the result to this folder's bench_lm.json (one result per "
                                       "engine option, so several compare on one page) and write its report."),
    show_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of tables."),
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks and library warnings."),
):
    """Speed of one engine configuration (TTFT, TPOT, tokens/s, batch, memory, roofline) next to its quality."""
    _need_lm_engine("bench-lm")
    from .runtime.lm.lm_bench import BenchConfig, bench_lm as run_bench

    cfg = BenchConfig(new_tokens=new_tokens, batch=batch, threads=threads, prompts_per_slice=prompts_per_slice,
                      baseline=baseline, quality=not no_quality, user_prompts=tuple(p for p in prompt or () if p.strip()))
    cfg.check()
    engine_cfg = _engine_config(quantize, dtype, pack, compile_, draft, draft_tokens, prompt_lookup, no_cache)
    from contextlib import nullcontext

    bar, update = _progress(_console(quiet=show_json))  # a bar per phase on a terminal; nothing in a pipe
    with bar or nullcontext():
        result = run_bench(model, engine_cfg, cfg, progress=update)
    if show_json:
        import json

        typer.echo(json.dumps(result, default=float))
    else:
        from .report.terminal import print_lm_bench

        from rich.console import Console

        print_lm_bench(result, Console())
    if out is not None:
        from .report.render import save_bench_lm, write_reports

        page = write_reports(save_bench_lm(out, result))
        if not show_json:
            typer.echo(f"report: {page}")


@app.command()
def demo(
    out: Path = typer.Option(Path("runs/demo"), help="Run directory (replaced if it exists)."),
    quiet: bool = typer.Option(False, "--quiet", "-q"),
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks and library warnings."),
):
    """The whole selection on an embedded dataset (statsmodels' fair survey, groups: religiousness, age)."""
    console = _console(quiet)
    console.print("frugal demo: select on builtin:fair (6,366 rows; groups religious, age_band)")
    from .verbs.select import select as run_select

    result = _run(run_select, ("builtin:fair",), console, quiet, out=out, overwrite=True)
    from .data import read_table

    df, _, _ = read_table("builtin:fair")
    model = result.load()
    rows = df.drop(columns=["had_affair"]).head(3)
    if not quiet:
        typer.echo(f"frugalml.load('{out}') -> {model!r}; predictions for 3 rows: {list(model.predict(rows))}")
        typer.echo(f"open the report: {(result.run_dir / 'report.html').resolve()}")


@app.command()
def report(
    run_dir: Path = typer.Argument(..., help="A run directory: the --out of select, compress, bench or bench-lm."),
    requests_per_day: Optional[int] = typer.Option(None, help="Predictions a day for the yearly savings (default: "
                                                   "the run's own --requests-per-day)."),
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks and library warnings."),
):
    """(Re)render report.html and report.md from what a run directory holds."""
    from .report.render import write_reports

    page = write_reports(run_dir, requests_per_day)
    typer.echo(f"report: {page}")


@app.command("list")
def list_(debug: bool = typer.Option(False, "--debug", help="Show tracebacks and library warnings.")):
    """Registered candidates, datasets, metrics and runtimes."""
    from rich.console import Console
    from rich.table import Table

    from .candidates import CANDIDATES
    from .data import DATASETS
    from .evaluation.metrics import ALIASES, DEFAULTS

    console = Console()
    t = Table(title="candidates (thinnest first)")
    for col in ("name", "family", "tasks", "interpretable"):
        t.add_column(col)
    for name, c in sorted(CANDIDATES.items(), key=lambda kv: kv[1].rank):
        t.add_row(name, c.family, ", ".join(c.tasks), "yes" if c.interpretable else "")
    console.print(t)
    t = Table(title="datasets (builtin:NAME)")
    for col in ("name", "target", "groups", "source", "description"):
        t.add_column(col)
    for name, b in DATASETS.items():
        t.add_row(name, b.target, ", ".join(b.groups), b.source, b.description)
    console.print(t)
    from .compression import TECHNIQUES

    t = Table(title="compression techniques (frugal compress --techniques)")
    for col in ("name", "needs data", "description"):
        t.add_column(col)
    for name, tech in TECHNIQUES.items():
        t.add_row(name, "calibration rows" if tech.needs_data else "", tech.description)
    console.print(t)
    console.print(f"metrics: any scikit-learn scorer name; defaults {DEFAULTS}; plain names {', '.join(ALIASES)}")
    console.print("runtimes: onnxruntime (exported candidates), native (scikit-learn object via skops)")


@app.command()
def env(debug: bool = typer.Option(False, "--debug", help="Show tracebacks and library warnings.")):
    """Versions and hardware, for bug reports."""
    from .evaluation.energy import EnergyMeter
    from .verbs.run_dir import environment
    from .version import __version__

    e = environment()
    m = e["machine"]
    lines = [f"frugalml {__version__}", f"python {m['python']} on {m['platform']}",
             f"cpu {m['cpu']}, {m['cores']} logical cores"]
    if e["memory_gib"] is not None:
        lines.append(f"memory {e['memory_gib']:.1f} GiB")
    meter = EnergyMeter.create()
    lines.append(f"energy: {meter.source} ({meter.method})")
    lines += [f"{pkg} {v or 'not installed'}" for pkg, v in e["packages"].items()]
    lines += [f"{var}={v}" for var, v in e["threads_env"].items()]
    typer.echo("\n".join(lines))


def _click_exceptions():
    """Usage/exit/abort exception classes of click and of the copy of click that typer may carry."""
    import importlib

    found = {"UsageError": [], "Exit": [], "Abort": []}
    for name in ("click.exceptions", "typer._click.exceptions", "typer.exceptions"):
        try:
            mod = importlib.import_module(name)
        except ImportError:
            continue
        for key, classes in found.items():
            if isinstance(getattr(mod, key, None), type):
                classes.append(getattr(mod, key))
    return tuple(found["UsageError"]), tuple(found["Exit"]), tuple(found["Abort"])


class _LibraryWarningsHidden:
    """Library warnings (warnings.warn in joblib, scikit-learn, onnxruntime, torch...) kept off the user's screen:
    ignored in this process, and, through PYTHONWARNINGS, in the processes it starts (joblib's loky workers, the
    memory probe), which copy os.environ when they start. Undone on exit, so the library API, used in the same
    process afterwards, keeps Python's default behaviour."""

    def __enter__(self):
        import os
        import warnings

        self._saved = warnings.catch_warnings()
        self._saved.__enter__()
        warnings.simplefilter("ignore")
        self._env = os.environ.get("PYTHONWARNINGS")
        os.environ["PYTHONWARNINGS"] = "ignore"
        return self

    def __exit__(self, *exc):
        import os

        if self._env is None:
            os.environ.pop("PYTHONWARNINGS", None)
        else:
            os.environ["PYTHONWARNINGS"] = self._env
        self._saved.__exit__(*exc)
        return False


def main(argv: list[str] | None = None) -> int:
    """Entry point: one ``error:`` line and exit 2 for bad input; exit 1 for an internal failure. Library
    warnings are hidden unless ``--debug`` is among the arguments."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    if debug:
        return _main(args, debug)
    with _LibraryWarningsHidden():
        return _main(args, debug)


def _main(args: list[str], debug: bool) -> int:
    from .errors import FrugalError

    usage, exit_, abort = _click_exceptions()

    try:
        app(args=args, standalone_mode=False, prog_name="frugal")
        return 0
    except exit_ as exc:
        return getattr(exc, "exit_code", 0)
    except usage as exc:
        if debug:
            raise
        if exc.format_message():  # empty when bare `frugal` printed the help
            typer.echo(f"error: {exc.format_message()}", err=True)
        return 2
    except abort + (KeyboardInterrupt,):
        typer.echo("error: interrupted", err=True)
        return 130
    except FrugalError as exc:
        if debug:
            raise
        typer.echo(f"error: {exc}", err=True)
        return 2
    except Exception as exc:  # anything else is frugalml's fault: say so, briefly
        if debug:
            raise
        first = str(exc).splitlines()[0][:300] if str(exc) else ""
        typer.echo(f"error: internal failure: {type(exc).__name__}: {first} (run with --debug for the traceback)",
                   err=True)
        return 1


if __name__ == "__main__":
    sys.exit(main())


def _entry() -> None:  # the console script
    sys.exit(main())
