"""Runs generations for the server: each in a thread, handed to the event loop chunk by chunk.

`KoGPT.stream()` is a blocking iterator. A thread per generation drives it and passes its `Chunk`s to
the event loop; when the client leaves (or the server shuts down) the thread closes the iterator,
which stops the generation at its next token. The engine queues the callers of one `KoGPT` in
order, so a request waiting its turn can be cancelled there.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from kogpt.settings import SamplingSettings

if TYPE_CHECKING:
    from kogpt.engine import Chunk

log = logging.getLogger(__name__)

_END = object()


@dataclass
class Stats:
    """Generations by outcome: what tests and `/health` read to see that a cancel really happened."""

    started: int = 0
    finished: int = 0
    cancelled: int = 0
    failed: int = 0
    running: int = 0
    left: int = 0  # callers that stopped listening before their generation ended


class Runner:
    """Streams completions of one loaded `KoGPT` to asyncio callers."""

    def __init__(self, gpt) -> None:
        self.gpt = gpt
        self._stats_lock = threading.Lock()
        self.stats = Stats()
        self.closing = threading.Event()  # shutdown: every generation stops at its next token

    @property
    def context_length(self) -> int:
        return self.gpt.context_length

    def prompt_tokens(self, prompt: str, settings: SamplingSettings) -> int:
        """The prompt's length in tokens as it will run (after truncation, if on); `KoGPTError` when
        it leaves no room in the context."""
        return len(self.gpt.fit_context(self.gpt.encode(prompt), settings))

    def count_tokens(self, text: str) -> int:
        return len(self.gpt.encode(text))

    async def stream(self, prompt: str, settings: SamplingSettings) -> AsyncIterator[Chunk]:
        """Yield the chunks of one completion. Closing this generator (`aclosing`, a cancelled task)
        cancels the generation; a failure in the thread is raised here."""
        loop = asyncio.get_running_loop()
        out: asyncio.Queue = asyncio.Queue()
        cancel = threading.Event()

        def put(item) -> None:
            try:
                loop.call_soon_threadsafe(out.put_nowait, item)
            except RuntimeError:  # the loop is closed: the server is gone, nobody listens
                cancel.set()

        def work() -> None:
            outcome, tokens = "finished", 0
            self._count("started", +1)
            try:
                if cancel.is_set():
                    outcome = "cancelled"
                    return
                chunks = self.gpt.stream(prompt, settings)
                try:
                    for chunk in chunks:
                        tokens = chunk.tokens
                        put(chunk)
                        if cancel.is_set() or self.closing.is_set():
                            outcome = "cancelled"
                            break
                finally:
                    chunks.close()  # stops the generation (in the engine's queue or at its next token)
            except BaseException as exc:  # handed to the caller
                outcome = "failed"
                put(exc)
            finally:
                self._count(outcome, -1)
                if outcome == "cancelled":
                    log.info("generation cancelled after %d tokens", tokens)
                put(_END)

        threading.Thread(target=work, name="kogpt-serve", daemon=True).start()
        ended = False
        try:
            while True:
                item = await out.get()
                if item is _END:
                    ended = True
                    return
                if isinstance(item, BaseException):
                    ended = True
                    raise item
                yield item
        finally:
            if not ended:
                cancel.set()
                self._count("left", 0)

    def wait_idle(self, seconds: float) -> bool:
        """Wait until no generation runs (after `closing` was set, each stops at its next token);
        False if one still runs after `seconds`."""
        deadline = time.monotonic() + seconds
        while self.stats.running and time.monotonic() < deadline:
            time.sleep(0.02)
        return not self.stats.running

    def _count(self, outcome: str, running: int) -> None:
        with self._stats_lock:
            setattr(self.stats, outcome, getattr(self.stats, outcome) + 1)
            self.stats.running += running
