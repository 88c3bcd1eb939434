"""A request's choices, planned before anything runs: each prompt tokenized once and fitted to the
context (or refused in the API's terms), one `Job` per choice, `best_of` of them per prompt when
asked, with seeds `seed + i`."""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass

from kogpt.engine import Extras
from kogpt.errors import KoGPTError
from kogpt.server.errors import APIError
from kogpt.server.request import CompletionRequest
from kogpt.server.runner import Runner
from kogpt.server.tokens import detokenize
from kogpt.settings import SamplingSettings, sequence_seed


@dataclass
class Job:
    """One choice to generate."""

    index: int
    prompt: str  # as sent, or the text of the token ids sent (for echo and the transcript)
    ids: list[int]  # the prompt's tokens as they run (after truncation, if on)
    settings: SamplingSettings
    extras: Extras = dataclasses.field(default_factory=Extras)


async def plan(request: CompletionRequest, runner: Runner) -> list[Job]:
    """The request's choices, in index order: `n` per prompt, or `best_of` (`Completion` keeps the
    `n` most likely, ranked by their tokens' log-probabilities, which it asks for). Each prompt is
    tokenized once, off the event loop (token ids run as sent, their text decoded for echo); one
    that does not fit the context is refused here, before anything is generated or streamed."""
    count = request.count
    extras = request.extras
    if request.best_of is not None and extras.logprobs is None:
        extras = dataclasses.replace(extras, logprobs=0)
    base = request.settings.seed if request.settings.seed is not None else random.randrange(2**31)
    jobs = []
    for p, sent in enumerate(request.prompts):
        if isinstance(sent, str):
            prompt, ids = sent, await runner.tokenize(sent)
        else:
            prompt, ids = await detokenize(sent, runner), sent
        try:
            if request.score_only and not 0 < len(ids) <= runner.context_length:  # nothing to generate: no room needed
                raise KoGPTError("too long")
            ids = ids if request.score_only else runner.gpt.fit_context(ids, request.settings)
        except KoGPTError:
            raise too_long(len(ids), request.settings, runner.context_length) from None
        for i in range(count):
            settings = dataclasses.replace(request.settings, seed=sequence_seed(base, i), num_return_sequences=1)
            jobs.append(Job(p * count + i, prompt, ids, settings, extras))
    return jobs


def too_long(n: int, settings: SamplingSettings, context: int) -> APIError:
    """Why a prompt of `n` tokens does not fit, in the API's terms (`max_tokens`; the server's
    `--max-length` when the request gives no max_tokens)."""
    room = settings.max_new_tokens
    if n == 0:
        return APIError(400, "the prompt has no tokens", param="prompt")
    if room is not None and room >= context:
        why = f"max_tokens is {room}: the model's context of {context} tokens holds the prompt too, so at most "
        why += str(context - 1)
        return APIError(400, why, param="max_tokens", code="context_length_exceeded")
    if n >= context:
        why = f"the prompt is {_tokens(n)}, more than the model's context of {context}: shorten it"
    elif room is not None:
        why = (
            f"the prompt is {_tokens(n)} and max_tokens asks for {room} more, beyond the model's context of "
            f"{context}: shorten the prompt or lower max_tokens"
        )
    else:
        why = (
            f"the prompt is {_tokens(n)} and the server's --max-length of {settings.max_length} counts them, "
            "leaving nothing to generate: send max_tokens, or shorten the prompt"
        )
    return APIError(400, why, param="prompt", code="context_length_exceeded")


def _tokens(n: int) -> str:
    return "1 token" if n == 1 else f"{n} tokens"
