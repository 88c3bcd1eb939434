"""What the engine hands back: `Chunk`s of one stream, `Piece`s of one row of a request."""

from __future__ import annotations

import math
from dataclasses import dataclass, field


@dataclass
class TokenLogprob:
    """One token and its log-probability under the model (the raw log-softmax of its logits, before
    temperature, penalties or top-k/top-p: vLLM's default), with the `top` most likely (id, logprob)."""

    token: int
    logprob: float | None  # None: the prompt's first token, which nothing predicts
    top: list[tuple[int, float]] = field(default_factory=list)


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
    logprobs: list[TokenLogprob] | None = None  # the tokens this chunk adds, when the request asked

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds if self.seconds > 0 else math.nan


@dataclass
class Piece:
    """New text of row `row` of a request, made by the worker; times are `time.perf_counter()` values."""

    row: int
    text: str
    tokens: int
    at: float
    first_at: float | None
    finish_reason: str | None = None
    logprobs: list[TokenLogprob] | None = None  # the tokens sampled since the row's last piece, if asked


class Failure:
    """An exception of the worker, handed to the request's caller, who raises it."""

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


END = object()  # the last item of a request's events
