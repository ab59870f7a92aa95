"""``frugal serve``: a model frugalml made or runs, behind an HTTP API (FastAPI on uvicorn).

``app`` builds the application, ``predict`` and ``batcher`` serve predictors with dynamic batching, ``lm`` the
OpenAI-shaped routes of a language model, ``http`` the front door (token, body limit, counts), ``metrics`` the
Prometheus series, ``server`` runs it (foreground with a graceful drain, or in a thread). ``frugal bench``
measures a server under load: ``loadgen`` sends it (MLPerf's scenarios), ``bench_stats`` computes vLLM's metrics
and LoadGen's validity, ``bench_table`` prints them.
"""

from .app import ServeConfig, create_app
from .loadgen import BenchConfig, bench
from .server import running, serve

__all__ = ["BenchConfig", "ServeConfig", "bench", "create_app", "running", "serve"]
