"""Sampling settings and the streaming generation loop.

`stream()` runs `model.generate` in a private worker thread and yields `Chunk`s of completed text.
The thread never escapes this module: its exception is re-raised in the caller, and when the
caller stops iterating (Ctrl-C, `break`, an error) the worker is told to stop and is joined.
"""

from __future__ import annotations

import logging
import math
import queue
import random
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from transformers import StoppingCriteria, StoppingCriteriaList
from transformers.generation.streamers import BaseStreamer

from kogpt.errors import KoGPTError, first_line
from kogpt.placement.options import input_device
from kogpt.settings import SamplingSettings
from kogpt.textstream import IncrementalDecoder, StopMatcher

log = logging.getLogger(__name__)


@dataclass
class Chunk:
    """A piece of streamed completion text, with the running totals.

    The last chunk of a stream has `finish_reason` set: 'eos' (the model ended the text), 'length'
    (max_length or max_new_tokens reached), or 'stop' (a stop sequence appeared; not included).
    """

    text: str
    tokens: int
    seconds: float
    seed: int
    first_token_seconds: float | None = None
    finish_reason: str | None = None

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds if self.seconds > 0 else math.nan


class _QueueStreamer(BaseStreamer):
    """Receives token ids from `generate` (in the worker) and hands them to the caller's queue."""

    def __init__(self, out: queue.Queue) -> None:
        self._out = out
        self._prompt_seen = False

    def put(self, value: torch.Tensor) -> None:
        if not self._prompt_seen:  # generate() first passes the whole prompt
            self._prompt_seen = True
            return
        for token_id in value.reshape(-1).tolist():
            self._out.put(token_id)

    def end(self) -> None:
        pass


class _StopOnEvent(StoppingCriteria):
    def __init__(self, event: threading.Event) -> None:
        self._event = event

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs) -> torch.Tensor:
        return torch.full((input_ids.shape[0],), self._event.is_set(), dtype=torch.bool, device=input_ids.device)


_DONE = object()
MIN_STATIC_CACHE = 256


def static_cache_length(needed: int, context: int) -> int:
    """Positions to allocate for a static KV cache: a power of two from 256, at most `context`.

    Few distinct sizes mean few `torch.compile` recompilations across prompts of varying length.
    """
    length = MIN_STATIC_CACHE
    while length < needed:
        length *= 2
    return max(needed, min(length, context))


def cache_kwargs(static_cache: bool, needed: int, context: int) -> dict:
    """`generate()` arguments for the KV cache: transformers' static cache, which `generate`
    compiles on CUDA (`torch.compile`, CUDA graphs), or nothing for the default dynamic cache."""
    if not static_cache:
        return {}
    return {"cache_implementation": "static", "max_cache_len": static_cache_length(needed, context)}


def stream(
    model,
    tokenizer,
    input_ids: list[int],
    settings: SamplingSettings,
    context: int,
    static_cache: bool = False,
) -> Iterator[Chunk]:
    """Generate a completion of `input_ids` and yield it as text chunks as tokens arrive.

    `static_cache` uses a preallocated KV cache (see `cache_kwargs`); it pays off on CUDA, where
    `generate` then compiles the decoding step.
    """
    budget = settings.new_tokens(len(input_ids), context)
    seed = settings.seed if settings.seed is not None else random.randrange(2**31)
    started = time.perf_counter()
    if budget == 0:
        yield Chunk("", 0, 0.0, seed, finish_reason="length")
        return
    tokens: queue.Queue = queue.Queue()
    stop_event = threading.Event()
    device = input_device(model)  # not model.device: that is `meta` when the first block is on disk
    ids = torch.tensor([input_ids], device=device)
    kwargs = dict(
        input_ids=ids,
        attention_mask=torch.ones_like(ids),
        max_new_tokens=budget,
        streamer=_QueueStreamer(tokens),
        stopping_criteria=StoppingCriteriaList([_StopOnEvent(stop_event)]),
        pad_token_id=tokenizer.eos_token_id,  # as the seed: KoGPT pads with [EOS]
        eos_token_id=tokenizer.eos_token_id,
        **settings.generate_kwargs(),
        **cache_kwargs(static_cache, len(input_ids) + budget, context),
    )
    log.debug("generating up to %d tokens after %d prompt tokens, seed %d", budget, len(input_ids), seed)

    def work() -> None:
        try:
            torch.manual_seed(seed)
            with torch.inference_mode():
                model.generate(**kwargs)
        except BaseException as exc:  # handed to the caller, who re-raises it
            tokens.put(exc)
        finally:
            tokens.put(_DONE)

    worker = threading.Thread(target=work, name="kogpt-generate", daemon=True)
    decoder = IncrementalDecoder(tokenizer)
    stops = StopMatcher(settings.stop)
    count, first, last_id = 0, None, None
    worker.start()
    try:
        while True:
            item = _get(tokens)
            if item is _DONE:
                break
            if isinstance(item, (MemoryError, torch.OutOfMemoryError)):
                raise _out_of_memory(item, len(input_ids) + budget) from item
            if isinstance(item, KoGPTError):
                raise item
            if isinstance(item, Exception):
                log.debug("the generation worker failed", exc_info=item)
                raise KoGPTError(f"generation failed: {type(item).__name__}: {first_line(item)}") from item
            if isinstance(item, BaseException):
                raise item
            count += 1
            last_id = item
            if first is None:
                first = time.perf_counter() - started
            text = stops.feed(decoder.push(item))
            if stops.stopped:
                stop_event.set()
            if text:
                yield Chunk(text, count, time.perf_counter() - started, seed, first)
        tail = stops.feed(decoder.flush()) + stops.flush()
        if stops.stopped:
            reason = "stop"
        elif last_id == tokenizer.eos_token_id:
            reason = "eos"
        else:
            reason = "length"
        elapsed = time.perf_counter() - started
        log.debug("%d tokens in %.2f s, finished by %s", count, elapsed, reason)
        yield Chunk(tail, count, elapsed, seed, first, reason)
    finally:
        stop_event.set()
        _join(worker)


def _join(worker: threading.Thread) -> None:
    """Wait for the worker to finish its current step; a second Ctrl-C does not abandon it running."""
    while worker.is_alive():
        try:
            worker.join(timeout=0.1)
        except KeyboardInterrupt:
            log.info("stopping the generation ...")


def _get(q: queue.Queue):
    """`q.get()` that still lets Ctrl-C (KeyboardInterrupt) reach the main thread promptly."""
    while True:
        try:
            return q.get(timeout=0.1)
        except queue.Empty:
            continue


def _out_of_memory(exc: BaseException, tokens: int) -> KoGPTError:
    """Free what the failed generation held and say what to try."""
    import gc

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return KoGPTError(
        f"out of memory generating up to {tokens} tokens; try a smaller max_length or "
        "max_new_tokens, fewer num_return_sequences, or --quantize int8"
    )
