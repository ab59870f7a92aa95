"""Quality: fit every candidate on the same repeated k-fold splits, score each fold overall and per group."""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator

import numpy as np
import pandas as pd

from ..candidates import Candidate, build_pipeline
from ..data import Schema, Splits, Task, fold_rows
from ..errors import ConfigError, need
from .metrics import Metric, Replay, score


@dataclass
class FoldScores:
    """One candidate's evidence: J fold scores (higher-is-better form), the same per group, fit times."""

    name: str
    scores: np.ndarray  # (J,)
    group_scores: dict[str, np.ndarray] = field(default_factory=dict)  # "col=value" -> (J,), NaN if undefined
    fit_s: float = float("nan")
    error: str | None = None
    outputs: list[dict] | None = None  # per fold: what the model answered on its test rows (for resampling)


def group_masks(task: Task) -> dict[str, np.ndarray]:
    """"col=value" -> boolean row mask, for every group column the task names."""
    return masks_of(task.groups)


def masks_of(groups: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    masks = {}
    for col, values in groups.items():
        for v in sorted(set(values)):
            masks[f"{col}={v}"] = values == v
    return masks


def model_outputs(pipe, X: pd.DataFrame, n_classes: int | None) -> dict[str, np.ndarray]:
    """What a scorer may ask for: labels, and for classifiers probabilities (or decision values).

    Probabilities always have one column per class, even when the model never saw some class.
    """
    out = {"predict": np.asarray(pipe.predict(X))}
    if n_classes:
        for method in ("predict_proba", "decision_function"):
            if hasattr(pipe, method):
                raw = np.asarray(getattr(pipe, method)(X))
                if method == "predict_proba" and raw.shape[1] != n_classes:
                    full = np.zeros((len(X), n_classes))
                    full[:, np.asarray(pipe.classes_, dtype=int)] = raw
                    raw = full
                out[method] = raw
                break
    return out


def _fit_fold(estimator, schema: Schema, scale: bool, X: pd.DataFrame, y: np.ndarray,
              train: np.ndarray, test: np.ndarray, embeddings=()) -> dict:
    """One (candidate, fold) trial. ``X``: the task's rows, or a lazy Parquet dataset (``ParquetRows``), of
    which the trial reads its fold's rows only."""
    import warnings

    from ..candidates.tables import using_embeddings

    pipe = build_pipeline(estimator, schema, scale)
    X_train, X_test = fold_rows(X, train, test)
    try:
        with warnings.catch_warnings(), using_embeddings(embeddings) as lent:
            warnings.simplefilter("ignore")
            t0 = time.perf_counter()
            pipe.fit(X_train, y[train])
            fit_s = time.perf_counter() - t0 + lent.seconds  # embeddings taken from the table cost time too
            out = model_outputs(pipe, X_test, len(schema.classes) if schema.classes else None)
    except Exception as exc:  # a candidate that fails is reported as failed, never crashes the run
        return {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:160] if str(exc) else ''}"}
    return {"fit_s": fit_s, "outputs": out}


LOCAL = (None, "", "local")


def parallel(executor: str | None, n_jobs: int, memmap: bool = True) -> Callable[[Iterable], Iterator]:
    """What every expensive step runs its trials through, inside ``executor_backend``: ``delayed`` calls ->
    their results in order, each as soon as it and those before it are done (so each is stored as it
    completes); ``n_jobs`` local processes, or every worker of the cluster ``executor`` names.

    ``memmap=False``: loky workers get copies of large arrays rather than read-only memory maps, for trials
    whose results keep their inputs' arrays (a compressed model shares the original's weights): skops saves
    a memory map as a ``numpy.memmap`` it cannot load back."""
    from joblib import Parallel

    def alone(tasks: Iterable) -> Iterator:
        return ((_alone, (f, *args), kwargs) for f, args, kwargs in tasks)

    if executor in LOCAL or not executor.startswith("ray"):
        par = Parallel(n_jobs=n_jobs if executor in LOCAL else -1, return_as="generator",
                       max_nbytes="1M" if memmap else None)
        return lambda tasks: par(alone(tasks))
    return lambda tasks: _ray_tasks(alone(tasks))


def _alone(f, *args, **kwargs):
    """A trial as its worker runs it: any joblib call inside it (scikit-learn's) runs in the trial's own thread.
    Without this a Dask worker hands them back to the cluster as nested tasks (joblib's backend travels with
    the trial), and a one-thread worker ran two or three trials at once."""
    from joblib import parallel_config

    with parallel_config(backend="sequential"):
        return f(*args, **kwargs)


def _ray_tasks(tasks: Iterable) -> Iterator:
    """joblib's ``delayed`` calls as Ray tasks, results in order, at most twice the cluster's CPUs running or
    queued (a slow trial holds back the results after it, not the work: the window refills as any finishes).

    Not Ray's joblib backend: it returns whole lists only (no results as they complete, so nothing could be
    stored before a round ended) and starts a pool of fresh actors per call, each importing frugalml again,
    where tasks reuse Ray's warm workers. Large arguments (the rows) go to the object store once."""
    import ray

    window = 2 * max(1, int(ray.cluster_resources().get("CPU", 1)))
    remote, shared = {}, {}  # remote: one Ray function per Python function
    submitted, running = [], set()  # every task's result, in order; those not finished

    def put(a):
        size = a.memory_usage(deep=False).sum() if isinstance(a, pd.DataFrame) else getattr(a, "nbytes", 0)
        if size > 1 << 20:
            if id(a) not in shared:
                shared[id(a)] = (a, ray.put(a))  # the object is kept, so its id is not reused meanwhile
            return shared[id(a)][1]
        return a

    def finished_in_order():
        nonlocal given
        while given < len(submitted) and submitted[given] not in running:
            yield ray.get(submitted[given])
            submitted[given] = None  # Ray frees a result once nothing refers to it
            given += 1

    given = 0
    for f, args, kwargs in tasks:
        fn = remote.setdefault(f, ray.remote(f))
        submitted.append(fn.remote(*map(put, args), **{k: put(v) for k, v in kwargs.items()}))
        running.add(submitted[-1])
        while len(running) >= window:
            done, _ = ray.wait(list(running), num_returns=1)
            running.difference_update(done)
            yield from finished_in_order()
    running.clear()  # no more to send: each result in order, as it comes
    yield from finished_in_order()


@contextmanager
def executor_backend(executor: str | None, n_jobs: int = -1):
    """Where ``parallel`` sends its calls, for ``--executor``: local processes (loky), an existing Dask cluster
    (``dask://HOST:PORT``, joblib's Dask backend), or Ray tasks (``ray://HOST:PORT``: a cluster through Ray
    Client; ``ray:auto``: the Ray this process runs, else the one ``ray start --head`` runs on this machine,
    else a local one started with at most ``n_jobs`` CPUs, kept for the process's later steps)."""
    import joblib

    if executor in LOCAL:
        yield None
        return
    if executor.startswith("dask://"):
        distributed = need("distributed", "--executor dask://", "dask")
        address = "tcp://" + executor[len("dask://"):]
        try:
            client = distributed.Client(address, timeout="10s")
        except OSError as exc:
            raise ConfigError(f"cannot reach the Dask scheduler at {address}: {exc}") from None
        try:
            with joblib.parallel_backend("dask"):
                yield client
        finally:
            client.close()
        return
    if executor == "ray:auto" or executor.startswith("ray://"):
        yield _ray(executor, n_jobs)  # parallel() sends the calls as Ray tasks
        return
    raise ConfigError(f"--executor {executor!r} is not supported; use local, dask://HOST:PORT, ray://HOST:PORT "
                      "or ray:auto")


def check_ray_client(executor: str, timeout_s: float = 10.0) -> None:
    """``ray://HOST:PORT`` well formed, and its port answering: a TCP check first, as Ray Client itself gives up
    on a dead address only after 30 s."""
    import socket

    host, _, port = executor[len("ray://"):].rpartition(":")
    if not (host and port.isdigit() and 0 < int(port) < 65536):
        raise ConfigError(f"--executor {executor}: expected ray://HOST:PORT (Ray Client's port, 10001 by default)")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except OSError as exc:
        raise ConfigError(f"cannot reach Ray at {executor}: {exc.strerror or 'timed out'}") from None


def _ray(executor: str, n_jobs: int):
    """Ray, connected as ``executor`` says; a local Ray this starts sends no usage statistics."""
    import os

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray = need("ray", f"--executor {executor}", "ray")
    if ray.is_initialized():
        return ray
    quiet = dict(log_to_driver=False, configure_logging=False)
    if executor == "ray:auto":
        try:  # the Ray that `ray start --head` runs on this machine (or RAY_ADDRESS names)
            ray.init(address="auto", **quiet)
        except ConnectionError:  # none: a local one, for this process
            ray.init(num_cpus=n_jobs if n_jobs > 0 else os.cpu_count(), include_dashboard=False, **quiet)
    else:
        check_ray_client(executor)
        try:
            ray.init(address=executor, **quiet)
        except (OSError, RuntimeError) as exc:  # ConnectionError is an OSError
            hint = "" if os.environ.get("RAY_AUTH_MODE") else " (a cluster that requires its token: export " \
                "RAY_AUTH_MODE=token, the token in ~/.ray/auth_token)"
            raise ConfigError(f"cannot reach Ray at {executor}: {(str(exc).splitlines() or [''])[0][:200]}{hint}") \
                from None
    import atexit

    atexit.register(ray.shutdown)
    return ray


def progress_reporter(progress: Callable | None) -> Callable[..., None]:
    """A ``progress`` callback of the verbs as a ``(stage, done, total, what)`` callable: a no-op for None; a
    callback that takes only ``(stage, done, total)`` (the form before ``what``) still gets those three."""
    if progress is None:
        return lambda stage, done, total, what="": None
    import inspect

    try:
        inspect.signature(progress).bind("", 0, 0, "")
    except TypeError:
        return lambda stage, done, total, what="": progress(stage, done, total)
    except ValueError:  # no signature to read (a builtin): the current form
        pass
    return progress


def evaluate_quality(task: Task, candidates: list[Candidate], splits: Splits, metric: Metric, *,
                     seed: int = 0, n_jobs: int = -1, executor: str | None = None,
                     progress: Callable[[int, int, str], None] | None = None, store=None) -> list[FoldScores]:
    """Fit every candidate on every split (in parallel) and score it overall and per group.

    ``store`` (a ``trials.TrialStore``) supplies fits finished by an earlier, interrupted run and keeps
    each new one as it completes. ``progress(done, total, what)``: after each fit, ``what`` names the fit
    the results now wait on ("lightgbm, fold 3/10"; the results come back in order).
    """
    from joblib import delayed

    from .trials import estimator_key

    # fold by fold: a worker's consecutive trials share their rows (read once from a Parquet dataset)
    jobs = [(ci, j) for j in range(len(splits.indices)) for ci in range(len(candidates))]
    n_classes = len(task.schema.classes) if task.kind == "classification" else None
    built = {}
    for ci, c in enumerate(candidates):
        try:
            built[ci] = c.build(task.kind, seed)
        except Exception as exc:  # a factory that fails is the user's candidate failing, reported as such
            if isinstance(exc, ConfigError):
                raise
            built[ci] = exc
    results: dict[tuple[int, int], dict] = {}
    keys = {ci: estimator_key(c.name, built[ci]) for ci, c in enumerate(candidates)}
    for ci, j in jobs:
        if isinstance(built[ci], Exception):
            results[(ci, j)] = {"error": f"{type(built[ci]).__name__}: {built[ci]}"}
        elif store is not None and (stored := store.load(keys[ci], j)) is not None:
            results[(ci, j)] = stored
    runnable = [job for job in jobs if job not in results]
    from sklearn.base import clone

    from ..candidates.tables import embed_distinct, tables_for

    # a frozen featurizer's features of a text or an image are the same in every fold: computed once, here
    embeddings = embed_distinct([built[ci] for ci, _ in runnable], task.X, task.schema.text + task.schema.image,
                                n_jobs)
    with executor_backend(executor, n_jobs):
        stream = parallel(executor, n_jobs)(delayed(_fit_fold)(clone(built[ci]), task.schema, candidates[ci].scale, task.X, task.y,
                                        *splits.indices[j], embeddings=tables_for(built[ci], embeddings))
                     for ci, j in runnable)
        def fit_name(k: int) -> str:  # the k-th fit, or the last one once all are done
            ci, j = runnable[min(k, len(runnable) - 1)]
            return f"{candidates[ci].name}, fold {j + 1}/{len(splits.indices)}"

        if progress and runnable:
            progress(0, len(runnable), fit_name(0))
        for k, res in enumerate(stream):
            results[runnable[k]] = res
            if store is not None:
                store.save(keys[runnable[k][0]], runnable[k][1], res)
            if progress:
                progress(k + 1, len(runnable), fit_name(k + 1))

    masks = group_masks(task)
    out = []
    for ci, c in enumerate(candidates):
        fold = [results[(ci, j)] for j in range(len(splits.indices))]
        errors = [r["error"] for r in fold if "error" in r]
        if errors:
            out.append(FoldScores(c.name, np.full(len(fold), np.nan), error=errors[0]))
            continue
        scores = np.empty(len(fold))
        gscores = {g: np.empty(len(fold)) for g in masks}
        for j, (r, (_, test)) in enumerate(zip(fold, splits.indices)):
            replay = Replay(task.kind, n_classes, r["outputs"])
            local = np.arange(len(test))
            scores[j] = score(metric, replay, local, task.y[test])
            for g, mask in masks.items():
                sel = local[mask[test]]
                gscores[g][j] = score(metric, replay, sel, task.y[test][sel]) if len(sel) else np.nan
        out.append(FoldScores(c.name, scores, gscores, float(np.mean([r["fit_s"] for r in fold])),
                              outputs=[r["outputs"] for r in fold]))
    return out
