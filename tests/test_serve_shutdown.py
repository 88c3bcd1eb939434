"""Issue 19, items 7 and 8: shutdown says so to every client, and slow clients cannot hold connections.

Shutdown is started as SIGTERM starts it, through uvicorn's `handle_exit` (here from the test's
thread: signals reach only the main thread); the slow clients are raw sockets."""

from __future__ import annotations

import json
import signal
import socket
import threading
import time

import pytest

pytest.importorskip("starlette")
httpx = pytest.importorskip("httpx")

from kogpt.server.app import ServerState, create_app  # noqa: E402
from kogpt.settings import SamplingSettings  # noqa: E402
from tests.serving import WAIT_SECONDS, GatedGPT, running, wait_for  # noqa: E402

PROMPT = "인간처럼 생각하고, 행동하는"


def gated_state(gpt, **options):
    gated = GatedGPT(gpt)
    state = ServerState("kogpt", SamplingSettings(max_new_tokens=50, temperature=0), **options)
    return gated, state, state.ready(gated)


def stream_lines(url: str, out: list[str], body: dict | None = None) -> None:
    body = body or {"prompt": PROMPT, "max_tokens": 50, "stream": True}
    with httpx.stream("POST", url + "/v1/completions", json=body, timeout=60) as response:
        out.append(str(response.status_code))
        out.extend(line for line in response.iter_lines() if line)


def post_in_thread(url: str, out: list, body: dict | None = None) -> threading.Thread:
    body = body or {"prompt": PROMPT, "max_tokens": 50}
    thread = threading.Thread(
        target=lambda: out.append(httpx.post(url + "/v1/completions", json=body, timeout=60)), daemon=True
    )
    thread.start()
    return thread


def sigterm() -> None:
    running.server.handle_exit(signal.SIGTERM, None)


def ends_with_shutdown_error(lines: list[str]) -> dict:
    assert lines[0] == "200" and lines[-1] == "data: [DONE]"
    events = [json.loads(line[6:]) for line in lines[1:-1]]
    assert all("error" not in e and e["choices"][0]["finish_reason"] is None for e in events[:-1])
    error = events[-1]["error"]
    assert error["code"] == "server_shutting_down" and error["type"] == "server_error"
    return error


def test_shutdown_ends_running_and_queued_streams_and_requests_with_errors(gpt):
    gated, state, runner = gated_state(gpt, max_batch=1)  # one runs, the others queue
    running_stream: list[str] = []
    queued_stream: list[str] = []
    queued_plain: list = []
    with running(create_app(state), state) as url:
        first = threading.Thread(target=stream_lines, args=(url, running_stream), daemon=True)
        first.start()
        wait_for(lambda: len(running_stream) >= 2, "the first chunk")  # then the generation waits at the gate
        second = threading.Thread(target=stream_lines, args=(url, queued_stream), daemon=True)
        second.start()
        third = post_in_thread(url, queued_plain)
        wait_for(lambda: runner.waiting == 2, "two requests to wait their turn")
        sigterm()
        for thread in (first, second, third):
            thread.join(WAIT_SECONDS)
        gated.gate.set()
        wait_for(lambda: runner.stats.running == 0, "the generation to stop")
    ends_with_shutdown_error(running_stream)
    ends_with_shutdown_error(queued_stream)
    assert len(queued_stream) == 3  # status, the error, [DONE]: no text
    (reply,) = queued_plain
    assert reply.status_code == 503 and reply.json()["error"]["code"] == "server_shutting_down"
    assert runner.stats.started == 1 and runner.stats.cancelled == 1 and runner.stats.dropped == 2


def test_a_plain_request_gets_the_shutdown_timeout_then_a_503(gpt, caplog):
    gated, state, runner = gated_state(gpt, shutdown_timeout=0.5)
    replies: list = []
    with running(create_app(state), state) as url:
        thread = post_in_thread(url, replies)
        wait_for(lambda: runner.stats.started == 1, "the generation to start")
        started = time.monotonic()
        sigterm()
        thread.join(WAIT_SECONDS)
        waited = time.monotonic() - started
        gated.gate.set()
        wait_for(lambda: runner.stats.running == 0, "the generation to stop")
    (reply,) = replies
    assert reply.status_code == 503 and reply.json()["error"]["code"] == "server_shutting_down"
    assert waited >= 0.5  # it had its time to finish
    assert "Traceback" not in caplog.text and "CancelledError" not in caplog.text


def test_the_timeout_also_bounds_a_later_choice_of_a_running_request(gpt):
    """n=2: both choices run together; the first ends after the shutdown began, within the timeout,
    the second runs past it: the request still gets its 503 at the deadline."""
    from tests.serving import _gated

    gated, state, runner = gated_state(gpt, shutdown_timeout=1.0)
    gates = [threading.Event(), threading.Event()]
    inner = gpt.engine.stream
    gated.engine.stream = lambda *args, **kwargs: _gated(inner(*args, **kwargs), gates[args[2]])  # by seed
    replies: list = []
    with running(create_app(state), state) as url:
        thread = post_in_thread(url, replies, {"prompt": PROMPT, "max_tokens": 50, "n": 2, "temperature": 0,
                                                     "seed": 0})  # choice i has seed i
        wait_for(lambda: runner.stats.started == 2, "both choices to start")
        sigterm()
        gates[0].set()  # the first choice ends; the second is held past the deadline
        thread.join(WAIT_SECONDS)
        gates[1].set()
        wait_for(lambda: runner.stats.running == 0, "the generation to stop")
    (reply,) = replies
    assert reply.status_code == 503 and reply.json()["error"]["code"] == "server_shutting_down"
    assert runner.stats.started == 2


def test_a_plain_request_that_finishes_within_the_timeout_is_answered(gpt):
    gated, state, runner = gated_state(gpt, shutdown_timeout=20)
    replies: list = []
    with running(create_app(state), state) as url:
        thread = post_in_thread(url, replies, {"prompt": PROMPT, "max_tokens": 5})
        wait_for(lambda: runner.stats.started == 1, "the generation to start")
        sigterm()
        time.sleep(0.3)
        gated.gate.set()
        thread.join(WAIT_SECONDS)
    (reply,) = replies
    assert reply.status_code == 200 and reply.json()["choices"][0]["finish_reason"] in ("stop", "length")


def raw(port: int, data: bytes) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=WAIT_SECONDS)
    sock.sendall(data)
    return sock


def read_all(sock: socket.socket) -> bytes:
    received = b""
    while piece := sock.recv(65536):
        received += piece
    return received


LIMITS = {"header_timeout": 0.5, "body_timeout": 0.5, "max_connections": 4}


def test_half_a_header_is_answered_408_and_closed(gpt):
    _, state, _ = gated_state(gpt)
    with running(create_app(state), state, **LIMITS) as url:
        port = int(url.rsplit(":", 1)[1])
        started = time.monotonic()
        with raw(port, b"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-") as sock:
            reply = read_all(sock)
        assert reply.startswith(b"HTTP/1.1 408 ")
        assert json.loads(reply.split(b"\r\n\r\n", 1)[1])["error"]["code"] == "request_timeout"
        assert time.monotonic() - started < 5


def test_a_header_sent_byte_by_byte_does_not_reset_the_deadline(gpt):
    _, state, _ = gated_state(gpt)
    with running(create_app(state), state, **LIMITS) as url:
        port = int(url.rsplit(":", 1)[1])
        sock = raw(port, b"G")
        started, closed = time.monotonic(), False
        try:
            for byte in b"ET /health HTTP/1.1\r\nX-Slow: " + b"a" * 100:
                sock.sendall(bytes([byte]))
                time.sleep(0.1)
        except OSError:  # reset by the server
            closed = True
        closed = closed or sock.recv(65536).startswith(b"HTTP/1.1 408")
        sock.close()
        assert closed and time.monotonic() - started < 5


def test_a_body_shorter_than_its_length_is_answered_408_and_never_runs(gpt):
    _, state, runner = gated_state(gpt)
    with running(create_app(state), state, **LIMITS) as url:
        port = int(url.rsplit(":", 1)[1])
        head = b"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        with raw(port, head + b'Content-Length: 100\r\n\r\n{"prompt": "a"') as sock:
            reply = read_all(sock)
        assert reply.startswith(b"HTTP/1.1 408 ")
    assert runner.stats.started == 0


def test_connections_beyond_the_limit_are_refused_at_once(gpt):
    _, state, _ = gated_state(gpt)
    limits = {**LIMITS, "header_timeout": 30}
    with running(create_app(state), state, **limits) as url:
        port = int(url.rsplit(":", 1)[1])
        idle = [raw(port, b"GET /hea") for _ in range(4)]
        try:
            with raw(port, b"") as extra:
                reply = read_all(extra)
            assert reply.startswith(b"HTTP/1.1 503 ") and b"retry-after: 1" in reply
        finally:
            for sock in idle:
                sock.close()
        wait_for(lambda: len(running.server.server_state.connections) == 0, "the idle connections to close")
        assert httpx.get(url + "/health", timeout=10).status_code == 200


def test_a_long_stream_is_not_cut_by_the_read_timeouts(gpt):
    gated, state, _ = gated_state(gpt)
    lines: list[str] = []
    with running(create_app(state), state, **LIMITS) as url:
        thread = threading.Thread(target=stream_lines, args=(url, lines), daemon=True)
        thread.start()
        wait_for(lambda: len(lines) >= 2, "the first chunk")
        time.sleep(1.2)  # more than both timeouts
        gated.gate.set()
        thread.join(WAIT_SECONDS)
    assert lines[-1] == "data: [DONE]" and all("error" not in line for line in lines)
