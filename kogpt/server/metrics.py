"""`GET /metrics`: the server's figures in Prometheus' text format, with `prometheus_client`.

Each `ServerState` has its own registry, so several apps in one process never collide. The
runner's counts (`Runner.stats`, `Runner.waiting`) are read when Prometheus scrapes, by a collector;
the tokens and the latencies come from the record of each finished choice, which the completions
route hands to `observe`.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from kogpt.server.runner import Runner
    from kogpt.transcript import Record

GENERATION_OUTCOMES = ("finished", "cancelled", "failed")  # one per choice (prompt x n)
REQUEST_OUTCOMES = ("refused", "dropped")  # one per request, before anything ran
FIRST_TOKEN_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 40.0, 80.0, 160.0)
PER_TOKEN_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

_followed: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # Runner -> its server's Metrics


class Metrics:
    """The figures of one server; `runner` returns its `Runner`, None while the model loads."""

    def __init__(self, runner: Callable[[], Runner | None]) -> None:
        self.registry = CollectorRegistry()
        self.registry.register(_RunnerCollector(runner))
        self.prompt_tokens = Counter(
            "kogpt_prompt_tokens",
            "Prompt tokens of finished choices (a prompt run n times counts n times)",
            registry=self.registry,
        )
        self.generation_tokens = Counter(
            "kogpt_generation_tokens", "Tokens generated in finished choices", registry=self.registry
        )
        self.first_token = Histogram(
            "kogpt_time_to_first_token_seconds",
            "Seconds from the engine taking a choice (prompt included) to its first token",
            buckets=FIRST_TOKEN_BUCKETS,
            registry=self.registry,
        )
        self.per_token = Histogram(
            "kogpt_time_per_output_token_seconds",
            "Seconds per generated token after the first, one observation per finished choice",
            buckets=PER_TOKEN_BUCKETS,
            registry=self.registry,
        )

    def follow(self, runner: Runner) -> None:
        """Count the choices `runner` finishes (see `observe`)."""
        _followed[runner] = self

    def add(self, record: Record) -> None:
        self.prompt_tokens.inc(record.prompt_tokens)
        self.generation_tokens.inc(record.completion_tokens)
        first = record.first_token_seconds
        if first is not None:
            self.first_token.observe(first)
            if record.completion_tokens > 1:
                self.per_token.observe(max(0.0, record.seconds - first) / (record.completion_tokens - 1))

    def exposition(self, accept: str | None) -> tuple[bytes, str]:
        """The text Prometheus asked for (its Accept header) and its Content-Type."""
        encoder, content_type = choose_encoder(accept or "")
        return encoder(self.registry), content_type


def observe(runner: Runner, record: Record) -> None:
    """A choice of `runner` finished: count its tokens and times (the completions route calls this)."""
    metrics = _followed.get(runner)
    if metrics is not None:
        metrics.add(record)


class _RunnerCollector(Collector):
    """The runner's own counts, read at scrape time: zero while the model loads."""

    def __init__(self, runner: Callable[[], Runner | None]) -> None:
        self.runner = runner

    def collect(self) -> Iterator[Metric]:
        runner = self.runner()
        stats = runner.stats if runner is not None else None
        generations = CounterMetricFamily(
            "kogpt_generations", "Generations (one per choice) by how they ended", labels=["outcome"]
        )
        for outcome in GENERATION_OUTCOMES:
            generations.add_metric([outcome], getattr(stats, outcome) if stats else 0)
        requests = CounterMetricFamily(
            "kogpt_requests",
            "Requests that never ran: refused (429, the queue was full) or dropped (the client left, or the "
            "server stopped, while they waited)",
            labels=["outcome"],
        )
        for outcome in REQUEST_OUTCOMES:
            requests.add_metric([outcome], getattr(stats, outcome) if stats else 0)
        yield generations
        yield requests
        yield GaugeMetricFamily(
            "kogpt_requests_waiting", "Requests waiting for their turn", value=runner.waiting if runner else 0
        )
        yield GaugeMetricFamily(
            "kogpt_generations_running", "Generations running now", value=stats.running if stats else 0
        )
        engine = runner.gpt.engine if runner is not None else None
        yield GaugeMetricFamily(
            "kogpt_batch_rows", "Rows decoding in the running batch now", value=getattr(engine, "rows", 0)
        )
        yield CounterMetricFamily(
            "kogpt_prompt_tokens_fed", "Prompt tokens the engine computed (those not taken from the prefix cache)",
            value=getattr(engine, "fed_tokens", 0),
        )
        yield CounterMetricFamily(
            "kogpt_prompt_tokens_reused", "Prompt tokens taken from the prefix cache", value=getattr(engine, "reused_tokens", 0)
        )
