"""One request, start to end, in the worker thread: prefix cache, prefill, then one token per step.

Text is made here too (incremental decoding, stop sequences), so a row stops exactly where its
stop sequence appears, whatever the caller does meanwhile.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from kogpt.engine.chunk import Piece, TokenLogprob
from kogpt.engine.prefix import PrefixCache
from kogpt.engine.sampling import Extras, Sampler, logprobs_of
from kogpt.engine.textstream import IncrementalDecoder, StopMatcher
from kogpt.settings import SamplingSettings


@dataclass
class Stats:
    """Where the time of one request went (for benchmarks: loop overhead = total - forward)."""

    prefill_tokens: int = 0
    reused_tokens: int = 0
    steps: int = 0
    tokens: int = 0  # sampled, all rows together
    prefill_seconds: float = 0.0
    step_seconds: list[float] = field(default_factory=list)  # each one-token forward
    decode_seconds: float = 0.0  # first sampled token to the end
    peak_batch: int = 0  # the most rows (of all requests) in one of its decode steps


class Row:
    """Text, stop matching and the finish of one sequence of a request."""

    def __init__(self, index: int, tokenizer, stops: list[str]) -> None:
        self.index = index
        self.decoder = IncrementalDecoder(tokenizer)
        self.stops = StopMatcher(stops)
        self.tokens: list[int] = []
        self.finish: str | None = None
        self.logprobs: list[TokenLogprob] = []  # of the tokens not handed out yet (when asked)

    def push(self, token: int, eos: int, budget: int, logprob: TokenLogprob | None = None) -> str:
        """Add a sampled token; the text it completes (all the rest when the row is finished)."""
        self.tokens.append(token)
        if logprob is not None:
            self.logprobs.append(logprob)
        text = self.stops.feed(self.decoder.push(token))
        if self.stops.stopped:
            self.finish = "stop"
        elif token == eos:
            self.finish = "eos"
        elif len(self.tokens) >= budget:
            self.finish = "length"
        if self.finish and self.finish != "stop":
            text += self.stops.feed(self.decoder.flush()) + self.stops.flush()
            if self.stops.stopped:  # the stop sequence was completed by the held-back bytes
                self.finish = "stop"
        return text

    def piece(self, text: str, at: float, first_at: float | None, asked: bool) -> Piece:
        """A `Piece` of `text`, with the log-probabilities of the tokens pushed since the last one if `asked`."""
        logprobs, self.logprobs = (self.logprobs, []) if asked else (None, self.logprobs)
        return Piece(self.index, text, len(self.tokens), at, first_at, self.finish, logprobs)


def run(
    prefix: PrefixCache,
    stepper,
    tokenizer,
    ids: list[int],
    settings: SamplingSettings,
    seeds: list[int],
    budget: int,
    chunk: int,
    cancelled: Callable[[], bool],
    emit: Callable[[Piece], None],
    stats: Stats,
    extras: Extras | None = None,
) -> None:
    """Generate up to `budget` tokens after `ids` for each seed (one row per seed), calling `emit`
    with each row's new text and its finish. Returns early, silently, once `cancelled()`."""
    rows = len(seeds)
    extras = extras or Extras()
    asked = extras.logprobs is not None
    sampler = Sampler(settings, seeds, extras, len(ids))
    eos = tokenizer.eos_token_id
    needed = len(ids) + budget
    started = time.perf_counter()
    logits = prefix.feed(ids, needed, chunk, cancelled)
    stats.prefill_seconds = time.perf_counter() - started
    stats.reused_tokens = prefix.reused
    stats.prefill_tokens = len(ids) - prefix.reused
    if logits is None:
        return
    cache = prefix.cache
    if rows > 1:
        cache = prefix.rows(rows, len(ids), needed)
        logits = logits.expand(rows, -1)
    history = None
    if sampler.needs_history:  # (rows, prompt + budget) token ids, for the penalties
        history = torch.tensor([ids], device=logits.device).repeat(rows, 1)
        history = torch.cat([history, history.new_zeros(rows, budget)], dim=1)
    state = [Row(i, tokenizer, settings.stop) for i in range(rows)]
    first_at = None
    decode_start = time.perf_counter()
    for step in range(budget):
        tokens = sampler(logits, None if history is None else history[:, : len(ids) + step])  # (rows,)
        now = time.perf_counter()
        first_at = first_at or now
        drawn = tokens.tolist()
        logprobs = logprobs_of(logits, drawn, extras.logprobs) if asked else [None] * rows
        for row, token, logprob in zip(state, drawn, logprobs):
            if row.finish:
                continue
            text = row.push(token, eos, budget, logprob)
            if text or row.finish:
                emit(row.piece(text, now, first_at, asked))
        if all(row.finish for row in state) or cancelled():
            break
        if history is not None:
            history[:, len(ids) + step] = tokens
        begun = time.perf_counter()
        logits = stepper(tokens.view(rows, 1).to(prefix.device), cache)
        stats.step_seconds.append(time.perf_counter() - begun)
        stats.steps += 1
    stats.decode_seconds = time.perf_counter() - decode_start
    stats.tokens = sum(len(row.tokens) for row in state)
