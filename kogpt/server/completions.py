"""`POST /v1/completions`: run a checked request's choices and shape OpenAI's replies.

Choice `i` of prompt `p` has index `p * n + i` and seed `seed + i` modulo 2**32 (a random base seed
when none is given), as `kogpt -p` numbers its sequences, so any choice can be reproduced alone.
With `best_of`, the prompt's `best_of` choices are ranked by the sum of their tokens'
log-probabilities, and the `n` first get the indices `p * n` to `p * n + n - 1`, best first.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
import weakref
from collections.abc import AsyncIterator
from contextlib import aclosing
from dataclasses import dataclass

from kogpt.engine import Extras, TokenLogprob
from kogpt.errors import KoGPTError
from kogpt.server import metrics
from kogpt.server.errors import APIError
from kogpt.server.logprobs import Shaper, joined, token_bytes
from kogpt.server.plan import Job
from kogpt.server.request import CompletionRequest
from kogpt.server.runner import Runner, Ticket
from kogpt.transcript import Record, Transcript

log = logging.getLogger(__name__)

FINISH = {"eos": "stop", "stop": "stop", "length": "length"}


@dataclass
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0

    def as_dict(self) -> dict:
        total = self.prompt_tokens + self.completion_tokens
        return {"prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens, "total_tokens": total}


class Completion:
    """The replies to one request, plain or streamed; `transcript` records each finished choice.

    It holds the request's place in the queue (`ticket`) until its reply ends, and waits for its
    turn before its first choice."""

    def __init__(
        self,
        request: CompletionRequest,
        jobs: list[Job],
        runner: Runner,
        model: str,
        transcript: Transcript | None,
        ticket: Ticket,
    ):
        self.request, self.jobs, self.runner, self.model = request, jobs, runner, model
        self.transcript = transcript
        self.ticket = ticket
        weakref.finalize(self, ticket.release)  # a stream whose generator never started
        self.id = f"cmpl-{uuid.uuid4().hex}"
        self.created = int(time.time())
        self.usage = Usage(prompt_tokens=sum(len(job.ids) for job in jobs if job.index % request.count == 0))
        self.asked = any(job.extras.logprobs is not None for job in jobs)  # best_of asks for its ranking
        self.shown = request.extras.logprobs is not None
        of = token_bytes(runner.gpt.tokenizer) if self.asked else None
        self.shapers = {job.index: Shaper(runner.gpt.tokenizer, of) for job in jobs} if self.asked else {}
        self.scored: dict[tuple[int, ...], asyncio.Future] = {}  # each prompt's logprobs, scored once

    async def run(self) -> dict:
        """Every choice, generated together (they decode in one batch), as one `text_completion` object."""
        try:
            turn = await self.runner.turn()
            try:
                texts: dict[int, str] = {job.index: "" for job in self.jobs}
                reasons: dict[int, str | None] = {}
                parts: dict[int, list[dict]] = {job.index: [] for job in self.jobs}
                async for job, piece, reason, logprobs in self._together(graceful=True):
                    texts[job.index] += piece
                    reasons[job.index] = reason
                    parts[job.index] += [logprobs] if logprobs is not None else []
                choices = [{"index": i, "text": texts[i], "logprobs": joined(parts[i]) if self.asked else None,
                            "finish_reason": reasons.get(i)} for i in sorted(texts)]
                choices = self._best(choices) if self.request.best_of is not None else choices
            finally:
                turn.done()
        finally:
            self.ticket.release()
        return self._object(choices, usage=self.usage.as_dict())

    async def events(self) -> AsyncIterator[dict]:
        """Server-sent events: `data: {chunk}` per piece of text of any choice, as they come, then the
        usage if asked, then `[DONE]`; a failure or a shutdown ends the stream with an error event,
        then `[DONE]`."""
        usage = {"usage": None} if self.request.include_usage else {}
        try:
            try:
                turn = await self.runner.turn()
                try:
                    async for job, piece, reason, logprobs in self._together(graceful=False):
                        choice = {"index": job.index, "text": piece, "logprobs": logprobs, "finish_reason": reason}
                        yield self._event(self._object([choice], **usage))
                finally:
                    turn.done()
            except APIError as exc:
                yield self._event(exc.body())
            else:
                if self.request.include_usage:
                    yield self._event(self._object([], usage=self.usage.as_dict()))
            yield {"data": "[DONE]"}
        finally:
            self.ticket.release()

    async def _together(self, graceful: bool) -> AsyncIterator[tuple[Job, str, str | None, dict | None]]:
        """(job, text, finish_reason, logprobs) of every choice, all running at once, in the order
        they come (logprobs: OpenAI's object for the tokens of that text, when asked); the first
        failure is raised here and the other choices are cancelled."""
        queue: asyncio.Queue = asyncio.Queue()

        async def pump(group: list[Job]) -> None:
            try:
                async for job, piece, reason, entries in self._pieces(group, graceful):
                    logprobs = self.shapers[job.index].shape(entries) if self.asked else None
                    queue.put_nowait((job, piece, reason, logprobs))
                queue.put_nowait(None)
            except Exception as exc:
                queue.put_nowait(exc)

        count = self.request.count  # a prompt's choices: one engine request, its prompt fed once
        tasks = [asyncio.create_task(pump(self.jobs[i : i + count])) for i in range(0, len(self.jobs), count)]
        try:
            remaining = len(tasks)
            while remaining:
                item = await queue.get()
                if item is None:
                    remaining -= 1
                elif isinstance(item, Exception):
                    raise item
                else:
                    yield item
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _pieces(
        self, group: list[Job], graceful: bool
    ) -> AsyncIterator[tuple[Job, str, str | None, list[TokenLogprob]]]:
        """(job, text, finish_reason, token logprobs) of the choices of one prompt, which differ in
        their seeds alone: one engine request, a row per choice. A choice's reason is set on its
        last piece only."""
        records = [Record(job.prompt, settings=job.settings.as_dict(), seed=job.settings.seed, index=job.index,
                          prompt_tokens=len(job.ids)) for job in group]  # fmt: skip
        if self.request.echo:
            for job in group:
                yield job, job.prompt, None, await self._prompt_logprobs(job) if self.shown else []
        if self.request.score_only:
            for job in group:
                yield job, "", "length", []
            if self.transcript is not None:
                self.transcript.add(records)
            return
        first = group[0]
        try:
            extras = first.extras if first.extras != Extras() else None
            seeds = [job.settings.seed for job in group]
            chunks = self.runner.stream(first.ids, first.settings, seeds, graceful, extras)
            async with aclosing(chunks):
                async for row, chunk in chunks:
                    record = records[row]
                    record.completion += chunk.text
                    record.completion_tokens, record.seconds = chunk.tokens, chunk.seconds
                    record.first_token_seconds = chunk.first_token_seconds
                    reason = FINISH.get(chunk.finish_reason) if chunk.finish_reason else None
                    if chunk.text or reason or chunk.logprobs:
                        yield group[row], chunk.text, reason, chunk.logprobs or []
                    if chunk.finish_reason:
                        record.finish_reason = chunk.finish_reason
        except KoGPTError as exc:
            raise APIError(500, str(exc), code="generation_failed") from exc
        for record in records:
            self.usage.completion_tokens += record.completion_tokens
            metrics.observe(self.runner, record)
        if self.transcript is not None:
            self.transcript.add(records)

    def _best(self, choices: list[dict]) -> list[dict]:
        """Of each prompt's `best_of` choices, the `n` with the highest cumulative log-probability,
        best first, numbered as `n` choices are; their logprobs only if the request asked."""
        count, n, kept = self.request.count, self.request.n, []
        for p in range(0, len(choices), count):
            ranked = sorted(choices[p : p + count], key=lambda c: -sum(filter(None, c["logprobs"]["token_logprobs"])))
            for rank, choice in enumerate(ranked[:n]):
                kept.append({**choice, "index": p // count * n + rank, "logprobs": choice["logprobs"] if self.shown else None})
        return kept

    async def _prompt_logprobs(self, job: Job) -> list[TokenLogprob]:
        """The prompt's tokens with their log-probabilities (the first has none, as OpenAI's), from
        `kogpt eval`'s scoring, run in a thread between the engine's forward passes."""
        key = tuple(job.ids)
        if key not in self.scored:
            top = job.extras.logprobs
            self.scored[key] = asyncio.ensure_future(asyncio.to_thread(self.runner.gpt.score, job.ids, top))
        scored = await asyncio.shield(self.scored[key])
        return [TokenLogprob(job.ids[0], None, []), *(TokenLogprob(t, p, top) for t, (p, top) in zip(job.ids[1:], scored))]

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
