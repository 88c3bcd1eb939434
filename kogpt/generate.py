"""Sampling settings and the streaming generation loop.

`stream()` runs `model.generate` in a private worker thread and yields `Chunk`s of completed text.
The thread never escapes this module: its exception is re-raised in the caller, and when the
caller stops iterating (Ctrl-C, `break`, an error) the worker is told to stop and is joined.
"""

from __future__ import annotations

import logging
import math
import queue
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field

import torch
from transformers import StoppingCriteria, StoppingCriteriaList
from transformers.generation.streamers import BaseStreamer

from kogpt.defaults import DEFAULT_MAX_LENGTH, DEFAULT_TEMPERATURE
from kogpt.textstream import IncrementalDecoder, StopMatcher

log = logging.getLogger(__name__)


@dataclass
class SamplingSettings:
    """How to sample one completion. `temperature == 0` means greedy decoding.

    `max_length` counts the prompt's tokens, as in the original KoGPT CLI; `max_new_tokens`, when
    set, counts the completion alone and wins over `max_length`.
    """

    temperature: float = DEFAULT_TEMPERATURE
    max_length: int = DEFAULT_MAX_LENGTH
    max_new_tokens: int | None = None
    top_p: float = 1.0
    top_k: int = 0
    repetition_penalty: float = 1.0
    no_repeat_ngram_size: int = 0
    seed: int | None = None
    stop: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return asdict(self)

    def new_tokens(self, prompt_tokens: int, context: int) -> int:
        """How many tokens to generate for a prompt of `prompt_tokens` within `context` positions."""
        if self.max_new_tokens is not None:
            wanted = self.max_new_tokens
        else:
            wanted = self.max_length - prompt_tokens
        return max(0, min(wanted, context - prompt_tokens))

    def generate_kwargs(self) -> dict:
        greedy = self.temperature == 0
        kwargs: dict = {"do_sample": not greedy}
        if not greedy:
            kwargs.update(temperature=self.temperature, top_p=self.top_p, top_k=self.top_k)
        if self.repetition_penalty != 1.0:
            kwargs["repetition_penalty"] = self.repetition_penalty
        if self.no_repeat_ngram_size:
            kwargs["no_repeat_ngram_size"] = self.no_repeat_ngram_size
        return kwargs


@dataclass
class Chunk:
    """A piece of streamed completion text, with the running totals.

    The last chunk of a stream has `finish_reason` set: 'eos' (the model ended the text), 'length'
    (max_length or max_new_tokens reached), or 'stop' (a stop sequence appeared; not included).
    """

    text: str
    tokens: int
    seconds: float
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
    started = time.perf_counter()
    if budget == 0:
        yield Chunk("", 0, 0.0, finish_reason="length")
        return
    tokens: queue.Queue = queue.Queue()
    stop_event = threading.Event()
    device = model.device
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
    log.debug("generating up to %d tokens after %d prompt tokens", budget, len(input_ids))

    def work() -> None:
        try:
            if settings.seed is not None:
                torch.manual_seed(settings.seed)
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
                yield Chunk(text, count, time.perf_counter() - started, first)
        tail = stops.feed(decoder.flush()) + stops.flush()
        if stops.stopped:
            reason = "stop"
        elif last_id == tokenizer.eos_token_id:
            reason = "eos"
        else:
            reason = "length"
        elapsed = time.perf_counter() - started
        log.debug("%d tokens in %.2f s, finished by %s", count, elapsed, reason)
        yield Chunk(tail, count, elapsed, first, reason)
    finally:
        stop_event.set()
        worker.join()


def _get(q: queue.Queue):
    """`q.get()` that still lets Ctrl-C (KeyboardInterrupt) reach the main thread promptly."""
    while True:
        try:
            return q.get(timeout=0.1)
        except queue.Empty:
            continue
