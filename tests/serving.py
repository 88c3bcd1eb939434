"""A `kogpt serve` app running in this process on 127.0.0.1 (a free port), for the server tests."""

from __future__ import annotations

import socket
import threading
import time
from contextlib import contextmanager

WAIT_SECONDS = 30


@contextmanager
def running(app, state=None, **limits):
    """Serve `app` with kogpt's uvicorn setup in a thread; yield its base URL; stop it afterwards.

    With `state` (the app's `ServerState`) the server is kogpt's own (`listener.make_server`:
    timeouts, connection cap, and `state.shutdown()` on `server.handle_exit`); `running.server`
    is the uvicorn server, for tests that stop it."""
    import uvicorn

    from kogpt.server import listener

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    if state is not None:
        server = listener.make_server(app, state, log_level="warning", **limits)
    else:
        server = uvicorn.Server(uvicorn.Config(app, log_config=None, log_level="warning"))
    running.server = server
    thread = threading.Thread(target=listener.run, args=(server, [sock]), daemon=True)
    thread.start()
    wait_for(lambda: server.started, "the server to start")
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(WAIT_SECONDS)


def wait_for(condition, what: str, seconds: float = WAIT_SECONDS) -> None:
    """Poll `condition` until it holds; fail after `seconds` (a bound, not a measurement)."""
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


class GatedGPT:
    """A `KoGPT` whose streams stop after their first chunk until `gate` is set: a generation that is
    certainly still running when the test acts (no timing involved). `engine.stream_rows` (what
    the server calls), `engine.stream` and `stream` are all gated."""

    def __init__(self, gpt) -> None:
        self._gpt = gpt
        self.gate = threading.Event()
        self.engine = _GatedEngine(gpt.engine, self.gate)

    def __getattr__(self, name):
        return getattr(self._gpt, name)

    def stream(self, prompt, settings=None, **overrides):
        return _gated(self._gpt.stream(prompt, settings, **overrides), self.gate)


class _GatedEngine:
    def __init__(self, engine, gate: threading.Event) -> None:
        self._engine, self.gate = engine, gate

    def __getattr__(self, name):
        return getattr(self._engine, name)

    def stream(self, *args, **kwargs):
        return _gated(self._engine.stream(*args, **kwargs), self.gate)

    def stream_rows(self, *args, **kwargs):
        return _gated(self._engine.stream_rows(*args, **kwargs), self.gate)


def _gated(chunks, gate: threading.Event):
    try:
        for n, chunk in enumerate(chunks):
            if n == 1:
                gate.wait(WAIT_SECONDS)
            yield chunk
    finally:
        chunks.close()


LOCAL = "http://127.0.0.1:8000"


@contextmanager
def api_client(gpt):
    """Starlette's in-process client for an app serving `gpt` (defaults: 4 new tokens)."""
    from starlette.testclient import TestClient

    from kogpt.server.app import ServerState, create_app
    from kogpt.settings import SamplingSettings

    state = ServerState("kogpt", SamplingSettings(max_new_tokens=4))
    state.ready(gpt)
    with TestClient(create_app(state), base_url=LOCAL, raise_server_exceptions=False) as client:
        yield client


def complete(http, **body) -> dict:
    """The JSON reply of a completion that must succeed."""
    response = http.post("/v1/completions", json=body)
    assert response.status_code == 200, response.text
    return response.json()
