"""A `kogpt serve` app running in this process on 127.0.0.1 (a free port), for the server tests."""

from __future__ import annotations

import socket
import threading
import time
from contextlib import contextmanager

WAIT_SECONDS = 30


@contextmanager
def running(app):
    """Serve `app` with uvicorn in a thread; yield its base URL; stop it afterwards."""
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_config=None, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
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
    certainly still running when the test acts (no timing involved)."""

    def __init__(self, gpt) -> None:
        self._gpt = gpt
        self.gate = threading.Event()

    def __getattr__(self, name):
        return getattr(self._gpt, name)

    def stream(self, prompt, settings=None, **overrides):
        chunks = self._gpt.stream(prompt, settings, **overrides)
        try:
            for n, chunk in enumerate(chunks):
                if n == 1:
                    self.gate.wait(WAIT_SECONDS)
                yield chunk
        finally:
            chunks.close()
