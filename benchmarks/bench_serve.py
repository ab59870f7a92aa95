"""frugal serve under load, against what an engineer would otherwise deploy, measured with frugal bench in one run.

Every server runs in its own process on 127.0.0.1 and is measured over HTTP by `frugalml.bench` (the load
generator of `frugal bench`), so the servers and the generator share only the machine's cores.

1. Predictors. Two models chosen by `frugal select`: a random forest on builtin:fair (tabular; served from its
   ONNX graph) and MiniLM embeddings + logistic regression on builtin:debates (text). Each is served three ways:
   `frugal serve` with dynamic batching (the defaults), `frugal serve --max-batch-size 1` (no batching), and
   the endpoint a user writes by hand (FastAPI calling the scikit-learn pipeline's `.predict`, one request at
   a time: `--handwritten`, below). For each, the server scenario's sweep finds the goodput: the highest
   Poisson arrival rate whose p99 latency meets the objective (MLPerf's rules: minimum duration and queries).
   Then `frugal serve` (batched) takes twice its peak rate: every answer must be 200 or 429, never a 5xx.
2. Language model. SmolLM2-135M-Instruct through the OpenAI API (streamed chat, temperature 0, 64 tokens,
   the engine's built-in prompts) with 1, 4, 16 and 32 concurrent clients (offline scenario), against
   llama.cpp's `llama-server` on the same GGUF file with 16 parallel slots and continuous batching, built from
   the sources vendored in the llama-cpp-python source package (`make bench-serve` builds it).

Usage: python benchmarks/bench_serve.py [--part predictors|lm|all] [--duration-s 6] [--llama-server PATH]
       [--json benchmarks/results_serve.json]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import frugalml
from frugalml.serve import BenchConfig
from frugalml.serve.server import wait_ready

HERE = Path(__file__).resolve().parent
RUNS = HERE.parent / "runs"
MODELS = {  # name -> (data, candidate, p99 objective in ms)
    "tabular": ("builtin:fair", "random_forest", 25.0),
    "text": ("builtin:debates", "minilm_linear", 130.0),  # MLPerf's BERT server objective
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A server in its own process; stopped with SIGTERM (and waited for) on exit."""

    def __init__(self, argv: list[str], ready_timeout_s: float = 300, health: str = "/healthz"):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.argv = [a.replace("{port}", str(self.port)) for a in argv]
        self.ready_timeout_s, self.health = ready_timeout_s, health

    def __enter__(self):
        self.proc = subprocess.Popen(self.argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            wait_ready(self.url, self.ready_timeout_s, alive=lambda: self.proc.poll() is None, health=self.health)
        except Exception:
            self.__exit__()
            raise RuntimeError(f"{self.argv[0]} did not start: {self.proc.stderr.read()[-2000:]}") from None
        return self

    def __exit__(self, *exc):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def run_dir(name: str) -> Path:
    data, candidate, _ = MODELS[name]
    out = RUNS / f"bench-serve-{name}"
    if not (out / "model" / "meta.json").exists():
        print(f"selecting {candidate} on {data} -> {out}", flush=True)
        frugalml.select(data, candidates=[candidate], folds=2, repeats=1, out=out, overwrite=True)
    return out


def frugal(*args: str) -> list[str]:
    return [sys.executable, "-m", "frugalml.cli", *args]


def sweep(url: str, run: Path, slo_ms: float, duration_s: float) -> dict:
    # the sweep starts low (the start must pass, as in LoadGen) and doubles; the query minimum is half of what
    # the start rate schedules, so only a server that falls behind fails it
    cfg = BenchConfig(scenario="server", sweep=True, qps=2, slo_p99_ms=slo_ms, duration_s=duration_s,
                      min_duration_s=duration_s, min_queries=int(duration_s), timeout_s=30, sweep_max_runs=16)
    out = frugalml.bench(str(run), url=url, config=cfg, out=Path("/tmp") / f"bench-{os.getpid()}.json")
    peak = out["sweep"]["peak_qps"]
    at = out["result"] or {}
    steps = [(st["qps"], st["passed"], round(st["result"].get("p99_e2el_ms") or float("nan"), 1))
             for st in out["sweep"]["steps"]]
    return {"peak_qps": peak, "goodput": out["sweep"]["goodput"], "p99_ms": at.get("p99_e2el_ms"),
            "median_ms": at.get("median_e2el_ms"), "steps (qps, valid, p99 ms)": steps}


def overload(url: str, run: Path, qps: float, duration_s: float) -> dict:
    cfg = BenchConfig(scenario="server", qps=qps, duration_s=duration_s, min_duration_s=0, min_queries=0,
                      timeout_s=30)
    r = frugalml.bench(str(run), url=url, config=cfg, out=Path("/tmp") / f"bench-{os.getpid()}.json")["result"]
    fivexx = sum(n for code, n in r["statuses"].items() if str(code).startswith("5"))
    return {"qps": qps, "sent": r["sent"], "completed": r["completed"], "rejected": r["rejected"],
            "failed": r["failed"], "5xx": fivexx, "statuses": r["statuses"]}


def predictors(duration_s: float) -> dict:
    results = {}
    for name in MODELS:
        run = run_dir(name)
        slo = MODELS[name][2]
        ways = {"frugal serve (batched)": frugal("serve", str(run), "--port", "{port}"),
                "frugal serve --max-batch-size 1": frugal("serve", str(run), "--port", "{port}",
                                                          "--max-batch-size", "1"),
                "hand-written FastAPI + sklearn": [sys.executable, __file__, "--handwritten", str(run),
                                                   "--port", "{port}"]}
        results[name] = {"slo_p99_ms": slo, "candidate": MODELS[name][1], "data": MODELS[name][0]}
        for way, argv in ways.items():
            with Server(argv) as server:
                print(f"{name}: {way}: sweeping", flush=True)
                results[name][way] = sweep(server.url, run, slo, duration_s)
                print(f"  {results[name][way]}", flush=True)
                if way == "frugal serve (batched)":
                    peak = results[name][way]["peak_qps"] or 10
                    results[name]["overload_2x"] = overload(server.url, run, 2 * peak, duration_s)
                    print(f"  2x overload: {results[name]['overload_2x']}", flush=True)
        base = results[name]["frugal serve (batched)"]["goodput"] or 0
        for other in ("frugal serve --max-batch-size 1", "hand-written FastAPI + sklearn"):
            g = results[name][other]["goodput"]
            results[name][f"ratio to {other}"] = base / g if g else None
    return results


def lm(duration_s: float, llama_server: str | None, concurrencies=(1, 4, 16, 32), max_tokens: int = 64) -> dict:
    from frugalml.runtime.lm.gguf_loading import builtin_smollm2

    gguf = str(builtin_smollm2())
    per_slot = 1024
    servers = {"frugal serve": (frugal("serve", "builtin:smollm2", "--port", "{port}", "--max-batch-size", "32",
                                       "--context", str(per_slot)), "/healthz")}
    if llama_server:
        servers["llama-server -np 16"] = ([llama_server, "-m", gguf, "--host", "127.0.0.1", "--port", "{port}",
                                           "-np", "16", "-kvu", "-c", str(16 * per_slot), "-t", "2", "-cb",
                                           "--metrics", "--no-webui"], "/health")
    results = {"max_tokens": max_tokens, "model": "SmolLM2-135M-Instruct", "gguf": Path(gguf).name}
    for name, (argv, health) in servers.items():
        results[name] = {}
        with Server(argv, health=health) as server:
            for c in concurrencies:
                cfg = BenchConfig(scenario="offline", concurrency=c, num_requests=max(4, 2 * c), max_tokens=max_tokens,
                                  duration_s=duration_s, timeout_s=300)
                r = frugalml.bench(url=server.url, config=cfg, out=Path("/tmp") / f"bench-{os.getpid()}.json")["result"]
                keep = ("completed", "failed", "rejected", "duration", "output_throughput", "request_throughput",
                        "median_ttft_ms", "p99_ttft_ms", "median_ttft_content_ms", "median_tpot_ms", "p99_tpot_ms",
                        "median_itl_ms", "total_output_tokens")
                results[name][c] = {k: r.get(k) for k in keep}
                print(f"{name}, {c} clients: {results[name][c]}", flush=True)
    one = results["frugal serve"][concurrencies[0]]["output_throughput"]
    results["frugal 16 clients / frugal 1 client"] = results["frugal serve"][16]["output_throughput"] / one
    if "llama-server -np 16" in results:
        results["frugal / llama-server at 16 clients"] = (results["frugal serve"][16]["output_throughput"]
                                                          / results["llama-server -np 16"][16]["output_throughput"])
    return results


def handwritten(run: str, port: int) -> None:
    """What a user writes without frugalml: FastAPI calling the pipeline's .predict on each request."""
    import numpy as np
    import pandas as pd
    import uvicorn
    from fastapi import FastAPI

    from frugalml.data import prepare_frame
    from frugalml.runtime.model_dir import load_pipeline

    pipeline, schema, _ = load_pipeline(run)
    classes = np.asarray(schema.classes, dtype=object)
    app = FastAPI()

    @app.post("/v1/predict")
    def predict(body: dict):
        X = prepare_frame(pd.DataFrame(body["rows"]), schema)
        return {"predictions": classes[pipeline.predict(X)].tolist(),
                "probabilities": pipeline.predict_proba(X).tolist()}

    @app.get("/healthz")
    def healthz():
        return {"status": "ok"}

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--part", choices=("predictors", "lm", "all"), default="all")
    ap.add_argument("--duration-s", type=float, default=6.0)
    ap.add_argument("--llama-server", default=None, help="llama.cpp's llama-server binary (make bench-serve builds it)")
    ap.add_argument("--json", default=str(HERE / "results_serve.json"))
    ap.add_argument("--handwritten", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.handwritten:
        return handwritten(args.handwritten, args.port)
    results = {"machine": {"cores": os.cpu_count()}, "duration_s": args.duration_s}
    if args.part in ("predictors", "all"):
        results["predictors"] = predictors(args.duration_s)
    if args.part in ("lm", "all"):
        if args.llama_server is None:
            print("no --llama-server: the language-model part runs without llama.cpp's server", flush=True)
        results["lm"] = lm(args.duration_s, args.llama_server)
    Path(args.json).write_text(json.dumps(results, indent=2, default=str))
    print(json.dumps(results, indent=2, default=str))


if __name__ == "__main__":
    main()
