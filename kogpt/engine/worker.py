"""The engine: one long-lived worker thread per loaded model, fed by a queue of requests.

Callers in any thread submit a `Request` and read its `Piece`s. On the CPU (dynamic caches) the
requests' rows decode together in one batch that they join and leave at any step (`scheduler.py`);
with static caches (CUDA graphs) requests are served one after another. The worker makes the
model's KV caches, compiles its step (CUDA) and runs every forward pass; nothing else touches them. Closing a stream (Ctrl-C, `break`, garbage
collection) cancels its request at the next token or prompt chunk; a worker exception reaches the
caller as a one-line `KoGPTError`.

A worker that has run torch must have ended before the interpreter exits: one still alive then,
even idle, aborts the process ("terminate called without an active exception", exit 134). So at
exit every worker is stopped (its running request cancelled at the next token) and joined,
including those of engines collected just before.
"""

from __future__ import annotations

import atexit
import logging
import queue
import threading
import time
import weakref
from collections.abc import Iterator
from contextlib import closing

import torch

from kogpt.engine import calls, decode, loop
from kogpt.engine.chunk import END, Chunk, Failure, Piece
from kogpt.engine.prefix import PrefixCache, PrefixStore, default_prefix_budget
from kogpt.engine.request import Request
from kogpt.engine.sampling import Extras
from kogpt.engine.scheduler import MAX_BATCH, Scheduler
from kogpt.settings import SamplingSettings

log = logging.getLogger(__name__)

WORKER_NAME = "kogpt-engine"
_STOP = object()
_model_locks: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_model_locks_guard = threading.Lock()
_cores: weakref.WeakSet = weakref.WeakSet()
_threads: set[threading.Thread] = set()  # every worker still to be joined at exit
_threads_guard = threading.Lock()


def _model_lock(model) -> threading.Lock:
    """One lock per model object: two engines over one model still never run it at once."""
    with _model_locks_guard:
        return _model_locks.setdefault(model, threading.Lock())


class _Core:
    """What the worker thread serves. It holds no reference to the `Engine`, so an engine that is no
    longer used is collected, and its finalizer hands the thread back."""

    def __init__(self, model, tokenizer, device, context, static_cache, compile, backend) -> None:
        self.model, self.tokenizer, self.device, self.context = model, tokenizer, device, context
        self.static_cache, self.compile, self.backend = static_cache, compile, backend
        self.prefill_chunk = decode.PREFILL_CHUNK.get(device.type, 128)
        self.requests: queue.SimpleQueue = queue.SimpleQueue()
        self.max_batch = MAX_BATCH
        self.prefix_budget = default_prefix_budget()
        self.current: Request | None = None
        self.scheduler: Scheduler | None = None
        self.serving = False
        self.start_lock = threading.Lock()
        self.last_stats: loop.Stats | None = None
        self.fed_tokens = self.reused_tokens = 0  # prompt tokens of finished requests, fed or reused

    def start(self) -> None:
        """Start the worker thread on the first request."""
        with self.start_lock:
            if self.serving:
                return
            self.serving = True
            _cores.add(self)
            thread = threading.Thread(target=self.serve, name=WORKER_NAME, daemon=True)
            with _threads_guard:
                _threads.difference_update([t for t in _threads if not t.is_alive()])
                _threads.add(thread)
            thread.start()

    def stop(self) -> None:
        """Cancel the running request; the thread ends after its current token or chunk."""
        current = self.current
        if current is not None:
            current.cancel.set()
        self.requests.put(_STOP)

    def serve(self) -> None:
        grad = torch.no_grad() if self.static_cache else torch.inference_mode()
        with grad:
            stepper = decode.Stepper(self.model, self.compile, self.backend)  # compiled in this thread
            (self.serve_one_by_one if self.static_cache else self.serve_batched)(stepper)
        self.serving = False
        while not self.requests.empty():  # anything still queued ends now (this thread alone takes from it)
            item = self.requests.get_nowait()
            if isinstance(item, Request):
                item.finished.set()
                item.events.put(END)

    def serve_batched(self, stepper: decode.Stepper) -> None:
        """Continuous batching (`scheduler.py`): requests join and leave the running batch."""
        store = PrefixStore(self.prefix_budget)
        scheduler = Scheduler(self.model, self.tokenizer, self.device, stepper, store, self.max_batch,
                              self.prefill_chunk)
        scheduler.on_finish = self.finished
        self.scheduler = scheduler
        while True:
            items = [self.requests.get()] if scheduler.idle else []
            while not self.requests.empty():  # this thread alone takes from the queue
                items.append(self.requests.get_nowait())
            for item in items:
                if item is _STOP:
                    scheduler.end_all()
                    return
                if callable(item):  # a command for the worker's state, e.g. forget the prefix cache
                    item(store)
                else:
                    scheduler.max_batch, scheduler.chunk = self.max_batch, self.prefill_chunk
                    scheduler.add(item)
            with _model_lock(self.model):
                try:
                    scheduler.tick()
                except Exception as exc:  # e.g. a sampler's bad value: the requests in flight get it
                    scheduler.fail_running(exc)

    def finished(self, request: Request) -> None:
        stats = request.stats
        log.debug("%d tokens in %.2f s (%d prompt tokens fed, %d reused)", stats.tokens,
                  time.perf_counter() - request.submitted, stats.prefill_tokens, stats.reused_tokens)
        self.last_stats = stats
        self.fed_tokens += stats.prefill_tokens
        self.reused_tokens += stats.reused_tokens

    def serve_one_by_one(self, stepper: decode.Stepper) -> None:
        """With static caches (CUDA graphs): one request at a time over the one-entry prefix cache."""
        prefix = PrefixCache(self.model, self.device, self.context, self.static_cache, stepper)
        while True:
            item = self.requests.get()
            if item is _STOP:
                break
            if callable(item):
                item(prefix)
                continue
            self.run(item, prefix, stepper)

    def run(self, request: Request, prefix: PrefixCache, stepper: decode.Stepper) -> None:
        if request.cancel.is_set():
            request.finished.set()
            request.events.put(END)
            return
        self.current = request
        request.started.set()
        log.debug("generating up to %d tokens after %d prompt tokens, seeds %s", request.budget, len(request.ids),
                  request.seeds)
        try:
            with _model_lock(self.model):
                loop.run(prefix, stepper, self.tokenizer, request.ids, request.settings, request.seeds,
                         request.budget, self.prefill_chunk, request.cancel.is_set, request.events.put, request.stats,
                         request.extras)
        except BaseException as exc:  # handed to the caller, who raises it
            prefix.forget()  # a failed forward may have half-written the cache
            request.events.put(Failure(exc))
        finally:
            self.finished(request)
            self.current = None
            request.finished.set()
            request.events.put(END)


class _OnCore:
    """An attribute of the `Engine` kept on its `_Core`, where the worker thread reads it."""

    def __set_name__(self, owner, name: str) -> None:
        self.name = name

    def __get__(self, engine, owner=None):
        return getattr(engine._core, self.name)

    def __set__(self, engine, value) -> None:
        setattr(engine._core, self.name, value)


class Engine:
    """Generation for one loaded model: `stream()` one sequence, or `submit()` + `pieces()` for many.

    `device` is where input ids go (the first block's device); `static_cache` preallocates KV
    caches in size buckets (CUDA), and `compile` compiles the one-token step over them.
    """

    def __init__(self, model, tokenizer, context: int, device: torch.device, static_cache: bool = False,
                 compile: bool = False, backend: str = "inductor") -> None:
        self.context = context
        self._core = _Core(model, tokenizer, device, context, static_cache, compile and static_cache, backend)
        weakref.finalize(self, self._core.stop)

    # Settings and counts that live on the worker's side (`_Core`), read and set through the engine:
    prefill_chunk = _OnCore()  # prompt tokens per forward
    max_batch = _OnCore()  # rows (all requests' samples together) that decode in one step; more wait
    prefix_budget = _OnCore()  # bytes the prefix cache may keep (read when the worker starts)
    last_stats = _OnCore()  # where the time of the last finished request went (`loop.Stats`)
    fed_tokens = _OnCore()  # prompt tokens computed so far (finished requests), not those reused
    reused_tokens = _OnCore()  # prompt tokens taken from the prefix cache so far

    @property
    def busy(self) -> bool:
        """Whether a request is being served now."""
        scheduler = self._core.scheduler
        return self._core.current is not None or (scheduler is not None and not scheduler.idle)

    @property
    def rows(self) -> int:
        """Rows decoding in the running batch now."""
        scheduler = self._core.scheduler
        return len(scheduler.batch) if scheduler is not None else int(self._core.current is not None)

    @property
    def peak_rows(self) -> int:
        """The most rows one decode step has run so far."""
        return self._core.scheduler.peak_rows if self._core.scheduler is not None else 0

    def submit(self, ids: list[int], settings: SamplingSettings, seeds: list[int], budget: int,
               cancel: threading.Event | None = None, extras: Extras | None = None) -> Request:
        request = Request(ids, settings, seeds, budget, cancel, extras)
        self._core.start()
        self._core.requests.put(request)
        return request

    def forget(self) -> None:
        """Empty the prefix cache (the next request starts cold); waits for requests queued before."""
        done = threading.Event()

        def clear(prefix: PrefixCache) -> None:
            prefix.forget()
            done.set()

        self._core.start()
        self._core.requests.put(clear)
        calls.wait(done, self._core)

    def pieces(self, request: Request) -> Iterator[Piece]:
        """The request's pieces as the worker makes them; leaving early cancels it."""
        try:
            while True:
                item = calls.get(request.events, self._core)
                if item is END:
                    return
                if isinstance(item, Failure):
                    error = calls.caller_error(item.exc, len(request.ids) + request.budget)
                    if error is item.exc:
                        raise error
                    raise error from item.exc
                yield item
        finally:
            if not request.finished.is_set():
                request.cancel.set()
                if request.started.is_set():
                    calls.wait(request.finished, self._core)

    def stream(self, ids: list[int], settings: SamplingSettings, seed: int,
               cancel: threading.Event | None = None, extras: Extras | None = None) -> Iterator[Chunk]:
        """One sequence after `ids`, as `Chunk`s of text (the last one has `finish_reason`); setting
        `cancel` from any thread ends it (see `Request`), even before its first chunk. With
        `extras.logprobs`, each chunk carries the log-probabilities of the tokens it adds."""
        with closing(self.stream_rows(ids, settings, [seed], cancel, extras)) as rows:
            yield from (chunk for _row, chunk in rows)

    def stream_rows(self, ids: list[int], settings: SamplingSettings, seeds: list[int],
                    cancel: threading.Event | None = None, extras: Extras | None = None) -> Iterator[tuple[int, Chunk]]:
        """One sequence per seed after `ids`, fed once and decoded together: (row, `Chunk`) as any
        row grows; each row's last chunk has its `finish_reason`. Leaving early or `cancel` ends them all."""
        budget = settings.new_tokens(len(ids), self.context)
        if budget == 0:
            yield from ((row, Chunk("", 0, 0.0, seed, finish_reason="length")) for row, seed in enumerate(seeds))
            return
        request = self.submit(ids, settings, seeds, budget, cancel, extras)
        yield from calls.chunks(self.pieces(request), request)

    def exclusive(self) -> threading.Lock:
        """The model's lock: hold it to run the model outside the worker (scoring a prompt), never
        during one of the worker's forward passes."""
        return _model_lock(self._core.model)


@atexit.register
def _stop_workers() -> None:
    """Before the interpreter tears down: cancel what runs, end every worker and join it."""
    for core in list(_cores):
        core.stop()
    with _threads_guard:
        threads = list(_threads)
    for thread in threads:
        thread.join()
