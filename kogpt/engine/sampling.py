"""Choosing the next token: transformers' public logits processors and warpers, one generator per row.

The processors and their order are those `generate` builds for the same settings (penalties, then
temperature, top-k, top-p), and a row samples with `torch.multinomial` on its own
`torch.Generator`, so a batch-1 request gives the tokens `torch.manual_seed(seed)` + `generate`
gives, without touching torch's global generator.
"""

from __future__ import annotations

import torch
from transformers import (
    LogitsProcessorList,
    NoRepeatNGramLogitsProcessor,
    RepetitionPenaltyLogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from kogpt.settings import SamplingSettings


def processors(settings: SamplingSettings) -> LogitsProcessorList:
    """The processors `generate` would apply for `settings`; temperature 0 keeps only the penalties."""
    chain = LogitsProcessorList()
    if settings.repetition_penalty != 1.0:
        chain.append(RepetitionPenaltyLogitsProcessor(penalty=settings.repetition_penalty))
    if settings.no_repeat_ngram_size:
        chain.append(NoRepeatNGramLogitsProcessor(settings.no_repeat_ngram_size))
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

    def __init__(self, settings: SamplingSettings, seeds: list[int]) -> None:
        self.greedy = settings.temperature == 0
        self.chain = processors(settings)
        self.needs_history = bool(settings.repetition_penalty != 1.0 or settings.no_repeat_ngram_size)
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
