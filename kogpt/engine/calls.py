"""The caller's side of a request: waiting for the worker without losing Ctrl-C, its pieces as
`Chunk`s, and the one-line error a worker's exception becomes."""

from __future__ import annotations

import gc
import logging
import queue
import threading
from contextlib import closing

import torch

from kogpt.engine.chunk import Chunk
from kogpt.errors import KoGPTError, first_line

log = logging.getLogger("kogpt.engine.worker")


def get(events: queue.SimpleQueue, core):
    """`events.get()` that still lets Ctrl-C (KeyboardInterrupt) reach the main thread promptly."""
    while True:
        try:
            return events.get(timeout=0.1)
        except queue.Empty:
            if not core.serving and events.empty():
                raise KoGPTError("the generation worker has stopped (is the interpreter exiting?)") from None


def wait(event: threading.Event, core) -> None:
    """Wait for the worker to finish its current token; a second Ctrl-C does not abandon it running."""
    while not event.is_set() and core.serving:
        try:
            event.wait(timeout=0.1)
        except KeyboardInterrupt:
            log.info("stopping the generation ...")


def caller_error(exc: BaseException, tokens: int) -> BaseException:
    if isinstance(exc, (MemoryError, torch.OutOfMemoryError)):
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        return KoGPTError(
            f"out of memory generating up to {tokens} tokens; try a smaller max_length or "
            "max_new_tokens, fewer num_return_sequences, or --quantize int8"
        )
    if isinstance(exc, KoGPTError):
        return exc
    if isinstance(exc, Exception):
        log.debug("the generation worker failed", exc_info=exc)
        return KoGPTError(f"generation failed: {type(exc).__name__}: {first_line(exc)}")
    return exc


def chunks(pieces, request):
    """(row, `Chunk`) of `request`'s `pieces`, times counted from its submission; leaving early
    closes `pieces`, which cancels the request."""
    with closing(pieces):
        for piece in pieces:
            first = piece.first_at - request.submitted if piece.first_at is not None else None
            yield piece.row, Chunk(piece.text, piece.tokens, piece.at - request.submitted, request.seeds[piece.row], first,
                                   piece.finish_reason, piece.logprobs)
