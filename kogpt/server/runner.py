"""Runs generations for the server: admitted in order, up to `slots` at once, handed to the event loop chunk by chunk.

A request is admitted (`admit`: `slots` run and a bounded number wait, the others get 429 with
`Retry-After`), then waits its turn in an asyncio queue: a waiting request holds no thread, and one
whose client leaves is dropped from the queue without running. Requests in their turn run together:
the engine decodes their rows in one batch (continuous batching). Each prompt of a request is one
engine request with a row per choice, fed once; a thread drives the engine's blocking stream and
passes its `Chunk`s to the loop. The engine request shares the generation's cancel event, so a
client that leaves, or a shutdown, stops the generation at its next token or prompt chunk.

Shutdown (`shutdown`): waiting requests and streams end at once with `errors.shutting_down()`;
plain requests that already run get `grace` seconds to finish first.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from collections import deque
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING

from kogpt.server.errors import APIError, shutting_down
from kogpt.settings import SamplingSettings

if TYPE_CHECKING:
    from kogpt.engine import Chunk, Extras

log = logging.getLogger(__name__)

MAX_QUEUE = 64  # requests admitted beyond those running
TOKENIZER_THREADS = 2
_END = object()


@dataclass
class Stats:
    """Generations by outcome: what tests read to see that a cancel really happened."""

    started: int = 0
    finished: int = 0
    cancelled: int = 0
    failed: int = 0
    running: int = 0
    left: int = 0  # callers that stopped listening before their generation ended
    dropped: int = 0  # requests whose client left (or the server stopped) while they waited their turn
    refused: int = 0  # requests refused because the queue was full


class Ticket:
    """A place in the queue, from admission to the reply's end; `release` is idempotent."""

    def __init__(self, runner: Runner) -> None:
        self.runner, self.released = runner, False

    def release(self) -> None:
        if not self.released:
            self.released = True
            self.runner.admitted -= 1


class _Generation:
    def __init__(self, out: asyncio.Queue, loop: asyncio.AbstractEventLoop, graceful: bool) -> None:
        self.out, self.loop, self.graceful = out, loop, graceful
        self.cancel = threading.Event()

    def stop(self, reason: object) -> None:
        """Cancel the engine request and wake the reader with `reason` (loop thread only)."""
        self.cancel.set()
        self.out.put_nowait(reason)


class Runner:
    """Streams completions of one loaded `KoGPT` to asyncio callers, `slots` requests at a time
    (by default as many as the engine decodes rows together)."""

    def __init__(self, gpt, max_queue: int = MAX_QUEUE, slots: int | None = None) -> None:
        self.gpt = gpt
        self.max_queue = max_queue
        self.slots = slots if slots is not None else gpt.engine.max_batch
        self.stats = Stats()
        self.admitted = 0
        self.stopping = False
        self._deadline: float | None = None  # loop time when running plain requests get their 503
        self._stats_lock = threading.Lock()
        self._active = 0  # requests in their turn
        self._waiters: deque[asyncio.Future] = deque()
        self._running: set[_Generation] = set()
        self._seconds: deque[float] = deque(maxlen=16)  # recent turns, for Retry-After
        self._tokenizer = ThreadPoolExecutor(TOKENIZER_THREADS, thread_name_prefix="kogpt-tokenize")

    @property
    def context_length(self) -> int:
        return self.gpt.context_length

    @property
    def waiting(self) -> int:
        """Requests waiting for their turn (admitted ones may still be tokenizing)."""
        return len(self._waiters)

    def admit(self) -> Ticket:
        """A place for one request; 503 when stopping, 429 with `Retry-After` when the queue is full."""
        if self.stopping:
            raise shutting_down()
        if self.admitted >= self.slots + self.max_queue:  # `slots` running and `max_queue` waiting
            self.stats.refused += 1
            turns = self.admitted / self.slots
            wait = sum(self._seconds) / len(self._seconds) * turns if self._seconds else 1.0
            retry = str(min(60, max(1, math.ceil(wait))))
            raise APIError(
                429,
                f"the server is busy: {self.admitted} requests are queued (its limit, --max-queue); retry later",
                code="rate_limit_exceeded",
                headers={"Retry-After": retry},
            )
        self.admitted += 1
        return Ticket(self)

    async def tokenize(self, prompt: str) -> list[int]:
        """The prompt's token ids, computed in a small thread pool: the event loop keeps serving."""
        return await asyncio.get_running_loop().run_in_executor(self._tokenizer, self.gpt.encode, prompt)

    async def turn(self) -> _Turn:
        """Wait for this request's turn (in order, without a thread); leave it with `done()`."""
        if self.stopping:
            raise shutting_down()
        if self._active >= self.slots or self._waiters:  # a turn is handed over by `_next`
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            except BaseException:
                if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                    self._next()  # the turn was handed over just as the caller left: pass it on
                else:
                    self._waiters.remove(waiter) if waiter in self._waiters else None
                    self.stats.dropped += 1
                raise
        else:
            self._active += 1
        return _Turn(self)

    def _next(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self._active -= 1

    async def stream(
        self, ids: list[int], settings: SamplingSettings, seeds: list[int], graceful: bool = False,
        extras: Extras | None = None,
    ) -> AsyncIterator[tuple[int, Chunk]]:
        """(row, chunk) of the completions of `ids`, one row per seed, fed once and decoded together
        (call it in the caller's turn). Closing this generator (`aclosing`, a cancelled task) cancels
        the generation; a failure in the thread is raised here, and `shutting_down()` when the server
        stops (a `graceful` one: after the grace)."""
        loop = asyncio.get_running_loop()
        generation = _Generation(asyncio.Queue(), loop, graceful)
        if self.stopping:
            if not graceful or self._deadline is None:
                raise shutting_down()
            loop.call_at(self._deadline, generation.stop, shutting_down())  # a later choice of a running request

        def put(item) -> None:
            try:
                loop.call_soon_threadsafe(generation.out.put_nowait, item)
            except RuntimeError:  # the loop is closed: the server is gone, nobody listens
                generation.cancel.set()

        def work() -> None:  # each row (choice) counts as a generation
            self._count("started", len(seeds), len(seeds))
            rest, tokens, unfinished = "cancelled", {}, set(range(len(seeds)))
            more = () if extras is None else (extras,)  # the engine's default otherwise
            chunks = self.gpt.engine.stream_rows(ids, settings, seeds, generation.cancel, *more)
            try:
                for row, chunk in chunks:
                    tokens[row] = chunk.tokens
                    put((row, chunk))
                    if chunk.finish_reason:
                        unfinished.discard(row)
                    elif generation.cancel.is_set():  # the engine may have run ahead: nobody reads the rest
                        break
            except BaseException as exc:  # handed to the caller
                rest = "failed"
                put(exc)
            finally:
                chunks.close()
                self._count("finished", len(seeds) - len(unfinished), -(len(seeds) - len(unfinished)))
                self._count(rest, len(unfinished), -len(unfinished))
                if unfinished and rest == "cancelled":
                    total = sum(tokens.values())
                    log.info("generation cancelled after %d token%s", total, "" if total == 1 else "s")
                put(_END)

        self._running.add(generation)
        threading.Thread(target=work, name="kogpt-serve", daemon=True).start()
        ended = False
        try:
            while True:
                item = await generation.out.get()
                if item is _END:
                    ended = True
                    return
                if isinstance(item, BaseException):
                    ended = True
                    raise item
                yield item
        finally:
            self._running.discard(generation)
            if not ended:
                generation.cancel.set()
                self._count("left", 1, 0)

    def shutdown(self, grace: float) -> None:
        """Stop serving (loop thread): waiting requests and streams end now with 503 /
        `server_shutting_down`; plain requests that run get `grace` seconds more."""
        if self.stopping:
            return
        self.stopping = True
        self._deadline = asyncio.get_running_loop().time() + grace
        log.info("shutting down: %d waiting, %d running", len(self._waiters), len(self._running))
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_exception(shutting_down())
        for generation in list(self._running):
            if not generation.graceful:
                generation.stop(shutting_down())
            else:
                generation.loop.call_at(self._deadline, generation.stop, shutting_down())

    def cancel_all(self) -> None:
        """Cancel every generation at its next token (any thread): the server has stopped."""
        self.stopping = True
        for generation in list(self._running):
            generation.cancel.set()

    def wait_idle(self, seconds: float) -> bool:
        """Wait until no generation runs; False if one still runs after `seconds`."""
        deadline = time.monotonic() + seconds
        while self.stats.running and time.monotonic() < deadline:
            time.sleep(0.02)
        return not self.stats.running

    def _count(self, outcome: str, n: int, running: int) -> None:
        """`n` more generations of `outcome`; `running` more (or fewer) running."""
        with self._stats_lock:
            setattr(self.stats, outcome, getattr(self.stats, outcome) + n)
            self.stats.running += running


class _Turn:
    def __init__(self, runner: Runner) -> None:
        self.runner, self.started = runner, time.monotonic()

    def done(self) -> None:
        runner = self.runner
        runner._seconds.append(time.monotonic() - self.started)
        runner._next()
