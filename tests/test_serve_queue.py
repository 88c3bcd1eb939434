"""Issue 19, items 2, 6 and 9: requests whose client left never run (queued) or stop at once
(running); the queue is bounded (429 + Retry-After) and holds no thread per waiting request; n has
a documented bound; tokenizing runs off the event loop, once per prompt."""

from __future__ import annotations

import json
import threading

import pytest

pytest.importorskip("starlette")
httpx = pytest.importorskip("httpx")

from kogpt.server.app import ServerState, create_app  # noqa: E402
from kogpt.settings import SamplingSettings  # noqa: E402
from tests.serving import WAIT_SECONDS, GatedGPT, running, wait_for  # noqa: E402

PROMPT = "인간처럼 생각하고, 행동하는"
JSON = {"Content-Type": "application/json"}


def serve(gpt, **state):
    state = ServerState("kogpt", SamplingSettings(max_new_tokens=8), **state)
    return state, state.ready(gpt)


def ask(url: str, body: dict, timeout: float = 60) -> httpx.Response:
    return httpx.post(url + "/v1/completions", json=body, timeout=timeout)


def leave_early(url: str, body: dict) -> None:
    """A client that sends its request and hangs up before any reply."""
    with pytest.raises(httpx.ReadTimeout), httpx.Client(timeout=httpx.Timeout(30, read=0.3)) as http:
        http.post(url + "/v1/completions", json=body)


class in_thread:  # noqa: N801 - reads as a call
    """`function(*args)` in a thread; `result()` waits for it."""

    def __init__(self, function, *args) -> None:
        self.out: list = []
        self.thread = threading.Thread(target=lambda: self.out.append(function(*args)), daemon=True)
        self.thread.start()

    def result(self):
        self.thread.join(WAIT_SECONDS)
        return self.out[0]


def test_a_queued_request_whose_client_left_never_runs(gpt):
    gated = GatedGPT(gpt)
    state, runner = serve(gated, max_batch=1)  # one runs at a time: the others queue
    with running(create_app(state)) as url:
        first = in_thread(ask, url, {"prompt": PROMPT, "max_tokens": 8, "temperature": 0})
        wait_for(lambda: runner.stats.started == 1, "the first generation to start")
        for _ in range(3):  # wait their turn behind the gated one, then leave
            leave_early(url, {"prompt": PROMPT, "max_tokens": 8})
        wait_for(lambda: runner.stats.dropped == 3, "the queued requests to be dropped")
        gated.gate.set()
        assert first.result().status_code == 200
        assert ask(url, {"prompt": "안녕", "max_tokens": 2}).status_code == 200
    assert runner.stats.started == 2 and runner.stats.cancelled == 0  # the three never reached the engine
    assert runner.admitted == 0


class BlockedEngine:
    """An engine whose stream yields nothing until it is cancelled: a long prefill, say."""

    def __init__(self) -> None:
        self.cancels: list[threading.Event] = []

    def stream_rows(self, ids, settings, seeds, cancel=None):
        self.cancels.append(cancel)
        cancel.wait(WAIT_SECONDS)
        yield from ()


def test_a_running_request_stops_before_its_first_chunk_when_its_client_leaves(gpt):
    blocked = GatedGPT(gpt)
    blocked.engine = engine = BlockedEngine()
    state, runner = serve(blocked, max_batch=1)
    with running(create_app(state)) as url:
        leave_early(url, {"prompt": PROMPT, "max_tokens": 8})
        wait_for(lambda: runner.stats.left == 1, "the server to notice the client left")
        (cancel,) = engine.cancels
        wait_for(cancel.is_set, "the engine request to be cancelled", seconds=5)
        wait_for(lambda: runner.stats.running == 0, "the generation to end")
    assert runner.stats.cancelled == 1


def test_a_cancel_event_drops_a_request_waiting_in_the_engine(gpt):
    cancel = threading.Event()
    cancel.set()
    request = gpt.engine.submit(gpt.encode(PROMPT), SamplingSettings(max_new_tokens=4), [1], 4, cancel)
    assert list(gpt.engine.pieces(request)) == []
    assert request.finished.is_set() and not request.started.is_set()  # never ran


def test_the_queue_is_bounded_with_retry_after_and_no_thread_per_waiting_request(gpt):
    gated = GatedGPT(gpt)
    state, runner = serve(gated, max_queue=4, max_batch=1)
    with running(create_app(state)) as url:
        body = {"prompt": PROMPT, "max_tokens": 4, "temperature": 0}
        waiting = [in_thread(ask, url, body) for _ in range(5)]  # one runs, four wait
        wait_for(lambda: runner.admitted == 5, "five requests to be admitted")
        assert [t.name for t in threading.enumerate()].count("kogpt-serve") == 1
        refused = ask(url, body)
        assert refused.status_code == 429 and 1 <= int(refused.headers["retry-after"]) <= 60
        assert refused.json()["error"]["code"] == "rate_limit_exceeded"
        streamed = httpx.post(url + "/v1/completions", json={**body, "stream": True}, timeout=30)
        assert streamed.status_code == 429  # refused before the stream starts
        gated.gate.set()
        assert all(pending.result().status_code == 200 for pending in waiting)
    assert runner.stats.refused == 2 and runner.admitted == 0


@pytest.mark.parametrize(("prompts", "n", "ok"), [(1, 16, True), (2, 8, True), (2, 9, False), (17, 1, False)])
def test_a_request_holds_at_most_16_completions(gpt, prompts, n, ok):
    state, _ = serve(gpt)
    with running(create_app(state)) as url:
        response = ask(url, {"prompt": ["가"] * prompts, "n": n, "max_tokens": 1})
    assert (response.status_code == 200) is ok
    if not ok:
        assert response.json()["error"]["param"] == "n" and "16" in response.json()["error"]["message"]


class SlowTokenizer(GatedGPT):
    """`encode` blocks until `release` is set and counts its calls."""

    def __init__(self, gpt) -> None:
        super().__init__(gpt)
        self.entered, self.release, self.calls = threading.Event(), threading.Event(), []

    def encode(self, text):
        self.calls.append(len(text))
        self.entered.set()
        self.release.wait(WAIT_SECONDS)
        return self._gpt.encode(text)


def test_tokenizing_does_not_block_the_event_loop(gpt):
    slow = SlowTokenizer(gpt)
    slow.gate.set()
    state, _ = serve(slow)
    with running(create_app(state)) as url:
        reply = in_thread(ask, url, {"prompt": PROMPT, "max_tokens": 2})
        assert slow.entered.wait(WAIT_SECONDS)
        assert httpx.get(url + "/health", timeout=5).status_code == 200  # while the prompt is tokenized
        slow.release.set()
        assert reply.result().status_code == 200


def test_each_prompt_is_tokenized_once(gpt):
    slow = SlowTokenizer(gpt)
    slow.release.set()
    slow.gate.set()
    state, _ = serve(slow)
    with running(create_app(state)) as url:
        assert ask(url, {"prompt": [PROMPT, "안녕"], "n": 3, "max_tokens": 2}).status_code == 200
        assert len(slow.calls) == 2
        too_long = ask(url, {"prompt": "가" * gpt.context_length * 2, "max_tokens": 4})
        assert too_long.status_code == 400 and len(slow.calls) == 3


def test_sse_stream_of_a_request_that_waits_its_turn(gpt):
    """A stream admitted behind another gets its chunks once its turn comes, and ends in [DONE]."""
    gated = GatedGPT(gpt)
    state, runner = serve(gated)
    with running(create_app(state)) as url:
        first = in_thread(ask, url, {"prompt": PROMPT, "max_tokens": 8, "temperature": 0})  # greedy: 2+ chunks
        wait_for(lambda: runner.stats.started == 1, "the first generation to start")
        lines: list[str] = []

        def stream() -> None:
            body = {"prompt": "안녕", "max_tokens": 3, "stream": True, "temperature": 0}
            with httpx.stream("POST", url + "/v1/completions", json=body, headers=JSON, timeout=60) as response:
                lines.extend(line for line in response.iter_lines() if line)

        second = threading.Thread(target=stream, daemon=True)
        second.start()
        wait_for(lambda: runner.admitted == 2, "the stream to queue")
        gated.gate.set()
        second.join(WAIT_SECONDS)
        assert first.result().status_code == 200
    assert lines[-1] == "data: [DONE]"
    assert all("error" not in json.loads(line[6:]) for line in lines[:-1])
