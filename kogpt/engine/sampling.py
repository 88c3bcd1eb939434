"""Choosing the next token: transformers' public logits processors and warpers, one generator per row.

The processors and their order are those `generate` builds for the same settings (penalties, then
temperature, top-k, top-p), OpenAI's presence and frequency penalties and logit bias (`Extras`)
coming after kogpt's own penalties and before the temperature, as in vLLM; a row samples with `torch.multinomial` on its own
`torch.Generator`, so a batch-1 request gives the tokens `torch.manual_seed(seed)` + `generate`
gives, without touching torch's global generator.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from transformers import (
    LogitsProcessorList,
    NoRepeatNGramLogitsProcessor,
    RepetitionPenaltyLogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from kogpt.engine.chunk import TokenLogprob
from kogpt.settings import SamplingSettings

MAX_LOGPROBS = 20  # the most alternatives a token's log-probabilities list (OpenAI's and vLLM's limit)


@dataclass(frozen=True)
class Extras:
    """OpenAI's per-request options that are not kogpt settings: `logprobs` (report each sampled
    token's log-probability and the `logprobs` most likely; None: nothing, and nothing computed),
    `presence_penalty` and `frequency_penalty` (over the completion's tokens so far), `logit_bias`
    (token id -> added to its logit)."""

    logprobs: int | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logit_bias: dict[int, float] = field(default_factory=dict)

    @property
    def penalties(self) -> bool:
        return bool(self.presence_penalty or self.frequency_penalty)


class CountPenalty:
    """OpenAI's penalties: each logit minus `presence * (count > 0) + frequency * count`, counts of
    the completion's tokens so far (those after the first `prompt` columns of the history)."""

    def __init__(self, presence: float, frequency: float, prompt: int) -> None:
        self.presence, self.frequency, self.prompt = presence, frequency, prompt

    def __call__(self, history: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        done = history[:, self.prompt :].to(scores.device)  # (rows, sampled)
        counts = torch.zeros_like(scores).scatter_add_(1, done, torch.ones_like(done, dtype=scores.dtype))
        return scores - self.frequency * counts - self.presence * (counts > 0).to(scores.dtype)


class LogitBias:
    """Adds a fixed bias to the logits of some token ids."""

    def __init__(self, bias: dict[int, float]) -> None:
        self.ids = torch.tensor(list(bias), dtype=torch.long)
        self.values = torch.tensor(list(bias.values()), dtype=torch.float32)

    def __call__(self, history: torch.Tensor | None, scores: torch.Tensor) -> torch.Tensor:
        ids, values = self.ids.to(scores.device), self.values.to(scores.device, scores.dtype)
        return scores.index_add_(1, ids, values.expand(scores.shape[0], -1))


def processors(settings: SamplingSettings, extras: Extras | None = None, prompt: int = 0) -> LogitsProcessorList:
    """The processors `generate` would apply for `settings`, with `extras`' penalties and bias (the
    prompt is the first `prompt` tokens of the history); temperature 0 keeps only those."""
    chain = LogitsProcessorList()
    extras = extras or Extras()
    if settings.repetition_penalty != 1.0:
        chain.append(RepetitionPenaltyLogitsProcessor(penalty=settings.repetition_penalty))
    if settings.no_repeat_ngram_size:
        chain.append(NoRepeatNGramLogitsProcessor(settings.no_repeat_ngram_size))
    if extras.penalties:
        chain.append(CountPenalty(extras.presence_penalty, extras.frequency_penalty, prompt))
    if extras.logit_bias:
        chain.append(LogitBias(extras.logit_bias))
    if settings.temperature == 0:
        return chain
    if settings.temperature != 1.0:
        chain.append(TemperatureLogitsWarper(settings.temperature))
    if settings.top_k:
        chain.append(TopKLogitsWarper(top_k=settings.top_k))
    if settings.top_p < 1.0:
        chain.append(TopPLogitsWarper(top_p=settings.top_p))
    return chain


class Sampler:
    """Picks one token per row from float32 logits (rows, vocab).

    `needs_history` says whether the processors read the tokens so far (the penalties do), so the
    loop keeps a (rows, length) tensor of them only when it matters.
    """

    def __init__(self, settings: SamplingSettings, seeds: list[int], extras: Extras | None = None,
                 prompt: int = 0) -> None:
        self.greedy = settings.temperature == 0
        self.chain = processors(settings, extras, prompt)
        self.needs_history = bool(settings.repetition_penalty != 1.0 or settings.no_repeat_ngram_size
                                  or (extras is not None and extras.penalties))
        self.seeds = seeds
        self.generators: list[torch.Generator] = []

    def __call__(self, logits: torch.Tensor, history: torch.Tensor | None, rows: list[int] | None = None) -> torch.Tensor:
        """Token ids for `logits` (one line per row), `history` (the same rows' tokens so far) when
        `needs_history`; `rows` are the request's row numbers of those lines (all rows by default),
        so each keeps its own generator however many rows have finished."""
        scores = logits
        for processor in self.chain:  # not `self.chain(...)`: it inspects every signature on every call
            scores = processor(history, scores if scores is not logits else logits.clone())  # never alter the caller's
        if self.greedy:
            return scores.argmax(dim=-1)
        probs = torch.softmax(scores, dim=-1)
        if not self.generators:  # on the device of the logits: where the last block runs
            self.generators = [torch.Generator(device=probs.device).manual_seed(s) for s in self.seeds]
        rows = range(len(self.generators)) if rows is None else rows
        if len(rows) == 1:  # as `generate` draws: (1, vocab) -> (1,)
            return torch.multinomial(probs, 1, generator=self.generators[rows[0]]).view(1)
        drawn = [torch.multinomial(probs[i : i + 1], 1, generator=self.generators[r]) for i, r in enumerate(rows)]
        return torch.cat(drawn).view(-1)


def logprobs_of(logits: torch.Tensor, tokens: list[int], top: int) -> list[TokenLogprob]:
    """Each row's sampled token with its log-probability under `logits` (rows, vocab), the raw
    model's (before any processor), and the `top` most likely tokens of the row."""
    logp = torch.log_softmax(logits.float(), dim=-1)  # (rows, vocab)
    picked = logp.gather(1, torch.tensor(tokens, device=logp.device).view(-1, 1)).view(-1).tolist()
    if not top:
        return [TokenLogprob(t, p) for t, p in zip(tokens, picked)]
    values, ids = torch.topk(logp, min(top, logp.shape[-1]), dim=-1)
    return [TokenLogprob(t, p, list(zip(i, v))) for t, p, i, v in zip(tokens, picked, ids.tolist(), values.tolist())]
