"""uvicorn, set up for kogpt: slow clients time out, connections are capped, SIGTERM reaches the app.

uvicorn closes idle keep-alive connections (`timeout_keep_alive`) but has no read timeout for a
request's head or body, and its `limit_concurrency` answers 503 only once a request has arrived,
so connections that send half a header stay open forever. `GuardedH11` (uvicorn's h11 protocol)
adds both timeouts, answering 408 as nginx and Node do, and refuses connections beyond
`max_connections` at once with a 503.

`Server` calls `on_shutdown` on the event loop as soon as SIGTERM (or Ctrl-C) arrives, before
uvicorn waits for the requests in flight: the app then ends them with OpenAI-style errors.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from kogpt.server.errors import APIError

log = logging.getLogger(__name__)

HEADER_SECONDS = 10.0
BODY_SECONDS = 30.0
MAX_CONNECTIONS = 512
KEEP_ALIVE_SECONDS = 5  # uvicorn's default, shorter than HEADER_SECONDS
SHUTDOWN_MARGIN = 5.0  # uvicorn cancels what is left this long after --shutdown-timeout


class GuardedH11(H11Protocol):
    """uvicorn's h11 protocol with a deadline for each request's head and body, and a connection cap."""

    header_timeout = HEADER_SECONDS
    body_timeout = BODY_SECONDS
    max_connections = MAX_CONNECTIONS
    last_warning = float("-inf")

    def connection_made(self, transport) -> None:  # type: ignore[override]
        self._phase: str | None = None
        self._timer: asyncio.TimerHandle | None = None
        super().connection_made(transport)
        if len(self.connections) > self.max_connections:
            now = self.loop.time()
            if now - GuardedH11.last_warning > 10:  # once in a while, not once per connection of a flood
                GuardedH11.last_warning = now
                log.warning("more than %d connections: refusing new ones", self.max_connections)
            self._answer(503, "Service Unavailable", "too many connections; retry later", "too_many_connections")
            return
        self._watch()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._watch()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._watch()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_timer()
        super().connection_lost(exc)

    def _watch(self) -> None:
        """Start the deadline of the part of a request being read (head or body), once per part."""
        state = self.conn.their_state
        phase = "head" if state is h11.IDLE else "body" if state is h11.SEND_BODY else None
        if phase == self._phase or self.transport.is_closing():
            return
        self._stop_timer()
        self._phase = phase
        if phase is not None:
            seconds = self.header_timeout if phase == "head" else self.body_timeout
            self._timer = self.loop.call_later(seconds, self._expired, phase, seconds)

    def _stop_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _expired(self, phase: str, seconds: float) -> None:
        self._timer = None
        if self.transport.is_closing():
            return
        log.info("closing a connection whose request %s took more than %g s", phase, seconds)
        if self.cycle is not None and self.cycle.response_started:
            self.transport.close()
            return
        what = "headers" if phase == "head" else "body"
        message = f"the request's {what} did not arrive within {seconds:g} s"
        self._answer(408, "Request Timeout", message, "request_timeout")

    def _answer(self, status: int, reason: str, message: str, code: str) -> None:
        """A whole reply written straight to the socket, then closed (no request is being served)."""
        body = json.dumps(APIError(status, message, code=code).body()).encode()
        lines = [f"HTTP/1.1 {status} {reason}", "content-type: application/json", f"content-length: {len(body)}",
                 "connection: close"]
        if status == 503:
            lines.append("retry-after: 1")
        self.transport.write("\r\n".join([*lines, "", ""]).encode() + body)
        self.transport.close()


def protocol(header_timeout: float, body_timeout: float, max_connections: int) -> type[GuardedH11]:
    """`GuardedH11` with these limits (uvicorn makes one protocol object per connection)."""
    limits = {"header_timeout": header_timeout, "body_timeout": body_timeout, "max_connections": max_connections}
    return type("KoGPTH11", (GuardedH11,), limits)


class Server(uvicorn.Server):
    """A uvicorn server that tells the app (`on_shutdown`, on the loop) the moment it is asked to stop."""

    def __init__(self, config: uvicorn.Config, on_shutdown: Callable[[], None]) -> None:
        super().__init__(config)
        self.on_shutdown = on_shutdown
        self.loop: asyncio.AbstractEventLoop | None = None

    async def startup(self, sockets=None) -> None:
        self.loop = asyncio.get_running_loop()
        await super().startup(sockets)

    def handle_exit(self, sig, frame) -> None:
        if not self.should_exit and self.loop is not None and not self.loop.is_closed():
            self.loop.call_soon_threadsafe(self.on_shutdown)
        super().handle_exit(sig, frame)


def make_server(
    app,
    state,
    header_timeout: float = HEADER_SECONDS,
    body_timeout: float = BODY_SECONDS,
    max_connections: int = MAX_CONNECTIONS,
    log_level: str | None = None,
) -> Server:
    """The uvicorn server for `app` (serving `state`, a `ServerState`)."""
    config = uvicorn.Config(
        app,
        log_config=None,
        log_level=log_level,
        http=protocol(header_timeout, body_timeout, max_connections),
        timeout_keep_alive=KEEP_ALIVE_SECONDS,
        timeout_graceful_shutdown=state.shutdown_timeout + SHUTDOWN_MARGIN,
    )
    return Server(config, state.shutdown)


def run(server: Server, sockets) -> None:
    """Serve until stopped; then forget sse-starlette's process-wide exit flag, which would end every
    stream of a later server in this process at once."""
    try:
        server.run(sockets=sockets)
    finally:
        from sse_starlette.sse import AppStatus

        AppStatus.should_exit = False
