"""Issue 22: `GET /metrics` in Prometheus' text format: the runner's counts read at scrape time,
tokens and latencies from each finished choice, one registry per app."""

from __future__ import annotations

import asyncio

import pytest

pytest.importorskip("starlette")
pytest.importorskip("prometheus_client")
pytest.importorskip("httpx")

import httpx  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402
from starlette.testclient import TestClient  # noqa: E402

from kogpt.server.app import ServerState, create_app  # noqa: E402
from kogpt.settings import SamplingSettings  # noqa: E402
from tests.serving import GatedGPT, running, wait_for  # noqa: E402

PROMPT = "인간처럼 생각하고, 행동하는"
LOCAL = "http://127.0.0.1:8000"
HELD = {"prompt": PROMPT, "max_tokens": 8, "temperature": 0}  # greedy: 2+ chunks, so the gate holds it


def app(gpt=None, **options) -> tuple[TestClient, ServerState]:
    state = ServerState("kogpt", SamplingSettings(max_new_tokens=4), **options)
    if gpt is not None:
        state.ready(gpt)
    return TestClient(create_app(state), base_url=LOCAL), state


def scrape(http, **headers) -> dict[tuple[str, tuple], float]:
    """Every sample as {(name, sorted labels): value}."""
    response = http.get("/metrics", headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(samples, name: str, **labels) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def complete(http, **body) -> dict:
    response = http.post("/v1/completions", json={"prompt": PROMPT, **body})
    assert response.status_code == 200, response.text
    return response.json()


def test_a_completion_moves_the_counters(gpt):
    http, _ = app(gpt)
    before = scrape(http)
    assert value(before, "kogpt_generations_total", outcome="finished") == 0
    assert value(before, "kogpt_prompt_tokens_total") == 0
    reply = complete(http, max_tokens=5, n=2, temperature=1.0, seed=1)
    after = scrape(http)
    assert value(after, "kogpt_generations_total", outcome="finished") == 2
    assert value(after, "kogpt_generations_total", outcome="cancelled") == 0
    assert value(after, "kogpt_generation_tokens_total") == reply["usage"]["completion_tokens"]
    assert value(after, "kogpt_prompt_tokens_total") == 2 * reply["usage"]["prompt_tokens"]  # once per choice
    assert value(after, "kogpt_time_to_first_token_seconds_count") == 2
    assert value(after, "kogpt_time_to_first_token_seconds_bucket", le="+Inf") == 2
    assert value(after, "kogpt_time_to_first_token_seconds_sum") > 0
    assert value(after, "kogpt_requests_waiting") == 0 and value(after, "kogpt_generations_running") == 0


def test_per_token_latency_is_observed_per_choice(gpt):
    http, _ = app(gpt)
    tokens = complete(http, max_tokens=6, temperature=0)["usage"]["completion_tokens"]
    assert tokens > 1  # greedy on the tiny model: no early end
    samples = scrape(http)
    assert value(samples, "kogpt_generation_tokens_total") == tokens
    assert value(samples, "kogpt_time_per_output_token_seconds_count") == 1
    assert 0 < value(samples, "kogpt_time_per_output_token_seconds_sum") < 60
    complete(http, max_tokens=1, temperature=0)  # one token: a first-token time, no per-token time
    samples = scrape(http)
    assert value(samples, "kogpt_time_to_first_token_seconds_count") == 2
    assert value(samples, "kogpt_time_per_output_token_seconds_count") == 1


def test_refused_and_running_and_waiting_are_read_at_scrape_time(gpt):
    """One generation held running, one request waiting behind it, one refused (the queue is full)."""
    gated = GatedGPT(gpt)
    state = ServerState("kogpt", SamplingSettings(max_new_tokens=4), max_queue=0, max_batch=1)
    runner = state.ready(gated)

    with running(create_app(state)) as url:
        metrics = httpx.Client(base_url=url, timeout=60)

        def samples():
            return scrape(metrics)

        async def drive():
            async with httpx.AsyncClient(base_url=url, timeout=60) as client:
                first = asyncio.ensure_future(client.post("/v1/completions", json=HELD))
                await asyncio.to_thread(wait_for, lambda: runner.stats.started == 1, "the generation to start")
                refused = await client.post("/v1/completions", json={"prompt": PROMPT})
                assert refused.status_code == 429
                now = await asyncio.to_thread(samples)
                assert value(now, "kogpt_generations_running") == 1
                assert value(now, "kogpt_requests_total", outcome="refused") == 1
                gated.gate.set()
                assert (await first).status_code == 200

        asyncio.run(drive())
        wait_for(lambda: runner.stats.running == 0, "the generation to end")
        after = samples()
        assert value(after, "kogpt_generations_running") == 0
        assert value(after, "kogpt_generations_total", outcome="finished") == 1


def test_waiting_requests_are_counted(gpt):
    gated = GatedGPT(gpt)
    state = ServerState("kogpt", SamplingSettings(max_new_tokens=4), max_batch=1)
    runner = state.ready(gated)

    with running(create_app(state)) as url:

        async def drive():
            async with httpx.AsyncClient(base_url=url, timeout=60) as client:
                first = asyncio.ensure_future(client.post("/v1/completions", json=HELD))
                await asyncio.to_thread(wait_for, lambda: runner.stats.started == 1, "the first to run")
                second = asyncio.ensure_future(client.post("/v1/completions", json=HELD))
                await asyncio.to_thread(wait_for, lambda: runner.waiting == 1, "the second to wait")
                now = await asyncio.to_thread(lambda: scrape(httpx.Client(base_url=url, timeout=60)))
                assert value(now, "kogpt_requests_waiting") == 1
                gated.gate.set()
                assert [r.status_code for r in await asyncio.gather(first, second)] == [200, 200]

        asyncio.run(drive())


def test_a_loading_server_answers_with_zeros(gpt):
    http, state = app()
    samples = scrape(http)
    assert value(samples, "kogpt_generations_total", outcome="finished") == 0
    assert value(samples, "kogpt_requests_waiting") == 0


def test_apps_have_registries_of_their_own(gpt):
    one, _ = app(gpt)
    two, _ = app(gpt)
    complete(one, max_tokens=2)
    assert value(scrape(one), "kogpt_generations_total", outcome="finished") == 1
    assert value(scrape(two), "kogpt_generations_total", outcome="finished") == 0
    assert value(scrape(two), "kogpt_prompt_tokens_total") == 0


def test_openmetrics_when_asked(gpt):
    http, _ = app(gpt)
    response = http.get("/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"})
    assert response.headers["content-type"].startswith("application/openmetrics-text")
    assert response.text.rstrip().endswith("# EOF")


def test_the_key_covers_metrics_as_it_covers_models(gpt):
    http, _ = app(gpt, api_key="secret")
    assert http.get("/metrics").status_code == 401 == http.get("/v1/models").status_code
    assert http.get("/metrics", headers={"Authorization": "Bearer secret"}).status_code == 200
    assert http.post("/metrics", headers={"Authorization": "Bearer secret"}).status_code == 405
