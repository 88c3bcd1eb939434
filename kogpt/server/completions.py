"""`POST /v1/completions`: run a checked request's choices and shape OpenAI's replies.

Choice `i` of prompt `p` has index `p * n + i` and seed `seed + i` (a random base seed when none is
given), as `kogpt -p` numbers its sequences, so any choice can be reproduced alone.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import random
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import aclosing
from dataclasses import dataclass

from kogpt.errors import KoGPTError
from kogpt.server.errors import APIError
from kogpt.server.request import CompletionRequest
from kogpt.server.runner import Runner
from kogpt.settings import SamplingSettings
from kogpt.transcript import Record, Transcript

log = logging.getLogger(__name__)

FINISH = {"eos": "stop", "stop": "stop", "length": "length"}


@dataclass
class Job:
    """One choice to generate."""

    index: int
    prompt: str
    prompt_tokens: int
    settings: SamplingSettings


@dataclass
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0

    def as_dict(self) -> dict:
        total = self.prompt_tokens + self.completion_tokens
        return {"prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens, "total_tokens": total}


def plan(request: CompletionRequest, runner: Runner) -> list[Job]:
    """The request's choices, in index order; a prompt that does not fit the context is refused here,
    before anything is generated or streamed."""
    base = request.settings.seed if request.settings.seed is not None else random.randrange(2**31)
    jobs = []
    for p, prompt in enumerate(request.prompts):
        try:
            tokens = runner.prompt_tokens(prompt, request.settings)
        except KoGPTError:
            raise _too_long(prompt, request.settings, runner) from None
        for i in range(request.n):
            settings = dataclasses.replace(request.settings, seed=base + i, num_return_sequences=1)
            jobs.append(Job(p * request.n + i, prompt, tokens, settings))
    return jobs


def _too_long(prompt: str, settings: SamplingSettings, runner: Runner) -> APIError:
    n, context = runner.count_tokens(prompt), runner.context_length
    if settings.max_new_tokens is not None and n < context:
        why = f"with max_tokens {settings.max_new_tokens} that is more than the model's context of {context}"
        fix = "shorten the prompt or lower max_tokens"
    else:
        why, fix = f"the model's context is {context}", "shorten it"
    return APIError(400, f"the prompt is {n} tokens and {why}: {fix}", param="prompt", code="context_length_exceeded")


class Completion:
    """The replies to one request, plain or streamed; `transcript` records each finished choice."""

    def __init__(
        self, request: CompletionRequest, jobs: list[Job], runner: Runner, model: str, transcript: Transcript | None
    ):
        self.request, self.jobs, self.runner, self.model = request, jobs, runner, model
        self.transcript = transcript
        self.id = f"cmpl-{uuid.uuid4().hex}"
        self.created = int(time.time())
        self.usage = Usage(prompt_tokens=sum(job.prompt_tokens for job in jobs if job.index % request.n == 0))

    async def run(self) -> dict:
        """Every choice, generated in order, as one `text_completion` object."""
        choices = []
        for job in self.jobs:
            text, reason = "", None
            async for piece, reason in self._pieces(job):
                text += piece
            choices.append({"index": job.index, "text": text, "logprobs": None, "finish_reason": reason})
        return self._object(choices, usage=self.usage.as_dict())

    async def events(self) -> AsyncIterator[dict]:
        """Server-sent events: `data: {chunk}` per piece of text, then the usage if asked, then `[DONE]`."""
        usage = {"usage": None} if self.request.include_usage else {}
        try:
            for job in self.jobs:
                async for piece, reason in self._pieces(job):
                    choice = {"index": job.index, "text": piece, "logprobs": None, "finish_reason": reason}
                    yield self._event(self._object([choice], **usage))
        except APIError as exc:
            yield self._event(exc.body())
        else:
            if self.request.include_usage:
                yield self._event(self._object([], usage=self.usage.as_dict()))
        yield {"data": "[DONE]"}

    async def _pieces(self, job: Job) -> AsyncIterator[tuple[str, str | None]]:
        """(text, finish_reason) of one choice; the reason is set on the last piece only."""
        record = Record(
            job.prompt,
            settings=job.settings.as_dict(),
            seed=job.settings.seed,
            index=job.index,
            prompt_tokens=job.prompt_tokens,
        )
        if self.request.echo:
            yield job.prompt, None
        try:
            async with aclosing(self.runner.stream(job.prompt, job.settings)) as chunks:
                async for chunk in chunks:
                    record.completion += chunk.text
                    record.completion_tokens, record.seconds = chunk.tokens, chunk.seconds
                    record.first_token_seconds = chunk.first_token_seconds
                    reason = FINISH.get(chunk.finish_reason) if chunk.finish_reason else None
                    if chunk.text or reason:
                        yield chunk.text, reason
                    if chunk.finish_reason:
                        record.finish_reason = chunk.finish_reason
        except KoGPTError as exc:
            raise APIError(500, str(exc), code="generation_failed") from exc
        self.usage.completion_tokens += record.completion_tokens
        if self.transcript is not None:
            self.transcript.add([record])

    def _object(self, choices: list[dict], **extra) -> dict:
        return {
            "id": self.id,
            "object": "text_completion",
            "created": self.created,
            "model": self.model,
            "choices": choices,
            **extra,
        }

    @staticmethod
    def _event(data: dict) -> dict:
        return {"data": json.dumps(data, ensure_ascii=False)}
