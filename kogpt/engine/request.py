"""What a caller hands the worker: one `Request`, its rows' seeds, and its events queue."""

from __future__ import annotations

import queue
import threading
import time

from kogpt.engine.loop import Stats
from kogpt.engine.sampling import Extras
from kogpt.settings import SamplingSettings


class Request:
    """Generate up to `budget` tokens after `ids`, one row per seed; `events` carries the results.

    `extras` holds the API's options that are not kogpt settings (log-probabilities, OpenAI's
    penalties, a logit bias). Setting `cancel` (the caller's own event, if given) drops the request
    if it is still queued and stops it at its next token or prompt chunk if it runs: a server sets
    it when its client leaves.
    """

    def __init__(self, ids: list[int], settings: SamplingSettings, seeds: list[int], budget: int,
                 cancel: threading.Event | None = None, extras: Extras | None = None) -> None:
        self.ids, self.settings, self.seeds, self.budget = ids, settings, seeds, budget
        self.extras = extras if extras is not None else Extras()
        self.events: queue.SimpleQueue = queue.SimpleQueue()
        self.cancel = cancel if cancel is not None else threading.Event()
        self.started = threading.Event()
        self.finished = threading.Event()
        self.submitted = time.perf_counter()
        self.stats = Stats()
