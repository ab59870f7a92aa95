"""What the server counts, in Prometheus text at ``GET /metrics``.

Names follow Prometheus' conventions: one ``frugal_`` prefix, base units (``_seconds``), counters ending in
``_total``, no colons (reserved for recording rules), no request ids in labels. Each app has its own registry,
so two servers in one process (tests, ``frugal bench``) never mix their counts. Latency buckets reach down to
0.1 ms for the small predictors; the language-model buckets follow vLLM's so dashboards compare.
"""

from __future__ import annotations

from ..errors import need

FAST = (1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
TTFT = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10, 20, 40, 80, 160)
TPOT = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1, 2.5, 5, 7.5, 10, 20, 40, 80)
BATCH = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)


class Metrics:
    def __init__(self):
        pc = need("prometheus_client", "frugal serve", "serve")
        self.registry = r = pc.CollectorRegistry()
        self._text = pc.generate_latest
        self.content_type = pc.CONTENT_TYPE_LATEST
        self.requests = pc.Counter("frugal_requests", "HTTP requests answered, by route and status.",
                                   ["route", "status"], registry=r)
        self.latency = pc.Histogram("frugal_request_duration_seconds", "Time from request to the last byte sent.",
                                    ["route"], buckets=FAST, registry=r)
        self.rejected = pc.Counter("frugal_requests_rejected", "Requests refused before any work: queue full (429), "
                                   "body too large (413), no token (401), draining (503).", ["reason"], registry=r)
        # dynamic batching (predictors)
        self.batch_rows = pc.Histogram("frugal_batch_size", "Rows per runtime call.", buckets=BATCH, registry=r)
        self.batch_requests = pc.Histogram("frugal_batch_requests", "Requests gathered into one runtime call.",
                                           buckets=BATCH, registry=r)
        self.queue_wait = pc.Histogram("frugal_queue_wait_seconds", "Time a request waited before its runtime call.",
                                       buckets=FAST, registry=r)
        self.queue_depth = pc.Gauge("frugal_queue_depth", "Requests waiting for a runtime call or a batch slot.",
                                    registry=r)
        self.inference = pc.Histogram("frugal_inference_seconds", "Duration of one runtime call (a whole batch).",
                                      buckets=FAST, registry=r)
        # language models
        self.ttft = pc.Histogram("frugal_time_to_first_token_seconds", "Arrival to the first generated token.",
                                 buckets=TTFT, registry=r)
        self.tpot = pc.Histogram("frugal_time_per_output_token_seconds", "Per request: (last token - first token) / "
                                 "(tokens - 1).", buckets=TPOT, registry=r)
        self.itl = pc.Histogram("frugal_inter_token_latency_seconds", "Gap between successive tokens of a request.",
                                buckets=TPOT, registry=r)
        self.e2e = pc.Histogram("frugal_e2e_request_latency_seconds", "Arrival to the last generated token.",
                                buckets=TTFT, registry=r)
        self.prompt_tokens = pc.Counter("frugal_prompt_tokens", "Prompt tokens prefilled.", registry=r)
        self.generation_tokens = pc.Counter("frugal_generation_tokens", "Tokens generated.", registry=r)
        self.finished = pc.Counter("frugal_request_success", "Generations finished, by reason.", ["finished_reason"],
                                   registry=r)
        self.prefix_hits = pc.Counter("frugal_prefix_cache_hits", "Requests whose prompt started from a cached "
                                      "prefix's K/V (the chat template's system part).", registry=r)
        self.running = pc.Gauge("frugal_requests_running", "Sequences in the running batch.", registry=r)
        self.waiting = pc.Gauge("frugal_requests_waiting", "Sequences waiting for a batch slot.", registry=r)

    def text(self) -> bytes:
        return self._text(self.registry)

    def observe_generation(self, submitted_s: float, token_s: list[float]) -> None:
        """A finished generation's timings (perf_counter seconds of its arrival and of each token)."""
        if not token_s:
            return
        self.ttft.observe(token_s[0] - submitted_s)
        self.e2e.observe(token_s[-1] - submitted_s)
        if len(token_s) > 1:
            self.tpot.observe((token_s[-1] - token_s[0]) / (len(token_s) - 1))
            for a, b in zip(token_s, token_s[1:]):
                self.itl.observe(b - a)
