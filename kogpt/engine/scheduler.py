"""Continuous batching in the worker thread: requests join the running batch and leave it at any step.

Each `tick` of the worker: requests whose caller left are dropped (queued or running); waiting
requests are admitted first come, first served while their rows fit in `max_batch`; up to one
chunk's worth of prompt tokens is fed (a part of each prompt in turn, round robin over those still
feeding); then the running batch takes one decode step. So a long prompt arriving never freezes the running streams
for more than one chunk, and a short request behind it gets its first token within a couple of
chunks (the Sarathi / vLLM chunked-prefill scheme).

A prompt is fed alone, from the longest beginning the `PrefixStore` holds (to the token), in chunks
that end at multiples of the chunk size; a request whose prompt shares `WORTH_WAITING` tokens or
more with one being fed right now, and half or more of what that one has left to feed, waits for
it, so clients that arrive together with one few-shot preamble feed it once. Its rows then join
the `Batch`, and each row samples with its own generator (`Sampler`): a seeded request gives the
same text alone, in any batch and after any reuse, but for the low bits that a batched forward or a
shorter chunk may round otherwise.
"""

from __future__ import annotations

import logging
import time
from collections import deque

import torch

from kogpt.engine import decode
from kogpt.engine.batch import Batch
from kogpt.engine.chunk import END, Failure
from kogpt.engine.loop import Row
from kogpt.engine.prefix import PrefixStore, common_prefix
from kogpt.engine.sampling import Sampler, logprobs_of

log = logging.getLogger(__name__)

WORTH_WAITING = 32  # shared prompt tokens for which a request waits until another's prompt is fed

MAX_BATCH = 8  # rows decoding together by default (all requests' samples)


class Job:
    """One request in the scheduler: its prompt as fed so far, its rows' text, its sampler."""

    def __init__(self, request, tokenizer, chunk: int) -> None:
        self.request = request
        self.ids: list[int] = request.ids
        self.chunk = chunk
        self.sampler = Sampler(request.settings, request.seeds, request.extras, len(request.ids))
        self.rows = [Row(i, tokenizer, request.settings.stop) for i in range(len(request.seeds))]
        self.cache = None
        self.logits: torch.Tensor | None = None  # after the last prompt token fed
        self.fed = 0  # prompt tokens in `cache`
        self.kept = 0  # of them, taken from the prefix store
        self.history: torch.Tensor | None = None  # (rows, prompt + budget) token ids, for the penalties
        self.sampled = 0  # tokens sampled per row so far
        self.first_at: float | None = None
        self.begun = time.perf_counter()
        self.decode_start = 0.0

    @property
    def width(self) -> int:
        return len(self.rows)

    def cancelled(self) -> bool:
        return self.request.cancel.is_set()


class Scheduler:
    """The waiting requests, those feeding their prompt, and the running `Batch` of one model."""

    def __init__(self, model, tokenizer, device: torch.device, stepper, store: PrefixStore, max_batch: int,
                 chunk: int) -> None:
        self.model, self.tokenizer, self.device, self.stepper = model, tokenizer, device, stepper
        self.store, self.max_batch, self.chunk = store, max_batch, chunk
        self.eos = tokenizer.eos_token_id
        self.waiting: deque[Job] = deque()
        self.feeding: list[Job] = []
        self.batch = Batch()
        self.next_tokens: list[int] = []  # the token each batch row feeds at the next step
        self.peak_rows = 0  # the most rows one step has decoded
        self.on_finish = lambda job: None

    @property
    def idle(self) -> bool:
        return not (self.waiting or self.feeding or len(self.batch))

    def add(self, request) -> None:
        self.waiting.append(Job(request, self.tokenizer, self.chunk))

    def tick(self) -> None:
        """Drop what was cancelled, admit what fits, feed one prompt chunk, take one decode step."""
        self._drop_cancelled()
        self._admit()
        if self.feeding:
            self._feed()
        if len(self.batch):
            self._step()

    def fail_running(self, exc: BaseException) -> None:
        """Hand `exc` to every request that feeds its prompt or decodes; those waiting stay."""
        jobs = [*self.feeding, *self._running()]
        self.feeding.clear()
        self._keep_rows(lambda job, row: False)
        self._fail(jobs, exc)

    def end_all(self) -> None:
        """End every request now (the engine stops)."""
        for job in [*self.waiting, *self.feeding, *self._running()]:
            self._finish(job)
        self.waiting.clear()
        self.feeding.clear()
        self._keep_rows(lambda job, row: False)

    # --- admission and prompts

    def _rows_in_use(self) -> int:
        return len(self.batch) + sum(job.width for job in self.feeding)

    def _admit(self) -> None:
        for job in list(self.waiting):
            used = self._rows_in_use()
            if used and used + job.width > self.max_batch:
                return  # first come, first served: later requests wait behind this one
            if self.store.budget and any(self._gains_from(job, other) for other in self.feeding):
                continue  # its shared beginning is being fed right now: take it from the store after
            self.waiting.remove(job)
            self._start(job)

    def _gains_from(self, job: Job, other: Job) -> bool:
        """Whether `job` should wait for `other`'s prompt to be in the store: `other` is feeding at
        least `WORTH_WAITING` tokens of `job`'s beginning, and at least half as many as it has left
        to feed (two prompts that merely start alike, or a short request behind a long prompt with a
        common instruction, do not wait for all of it)."""
        gain = min(common_prefix(job.ids, other.ids), len(job.ids) - 1) - other.kept
        return gain >= WORTH_WAITING and 2 * gain >= len(other.ids) - other.fed

    def _start(self, job: Job) -> None:
        job.request.started.set()
        cache, job.kept, logits = self.store.lookup(job.ids)
        job.fed = job.kept
        job.request.stats.reused_tokens = job.kept
        job.request.stats.prefill_tokens = len(job.ids) - job.kept
        log.debug("generating up to %d tokens after %d prompt tokens (%d from the prefix cache), seeds %s",
                  job.request.budget, len(job.ids), job.kept, job.request.seeds)
        if logits is not None:
            job.cache = cache
            self._ready(job, logits)
            return
        job.cache = cache if cache is not None else decode.new_cache(self.model)
        self.feeding.append(job)

    def _feed(self) -> None:
        """Feed the next part of each prompt being fed, in turn, until one chunk's worth of tokens
        has gone in this tick (at least one part): several short prompts that arrive together
        start decoding at the same step, and the running streams never wait for more than one
        chunk's tokens between two steps. Those left over go first at the next tick."""
        budget, fed = self.chunk, []
        for job in list(self.feeding):
            part = job.ids[job.fed : (job.fed // job.chunk + 1) * job.chunk]  # on its chunk grid from the start
            if fed and len(part) > budget:
                break
            budget -= len(part)
            fed.append(job)
            self._feed_part(job, part)
        self.feeding = [job for job in self.feeding if job not in fed] + [job for job in self.feeding if job in fed]

    def _feed_part(self, job: Job, part: list[int]) -> None:
        try:
            logits = decode.forward_logits(self.model, torch.tensor([part], device=self.device), job.cache)
        except BaseException as exc:
            self.feeding.remove(job)
            self._fail([job], exc)
            return
        job.fed, job.logits = job.fed + len(part), logits
        if job.fed == len(job.ids):
            self.feeding.remove(job)
            self.store.add(job.ids, job.cache, logits)
            self._ready(job, logits)

    def _ready(self, job: Job, logits: torch.Tensor) -> None:
        """The prompt is in `job.cache`: sample each row's first token, then its rows join the batch."""
        stats = job.request.stats
        stats.prefill_seconds = time.perf_counter() - job.begun
        job.decode_start = time.perf_counter()
        if job.sampler.needs_history:
            budget = job.request.budget
            history = torch.tensor([job.ids], device=logits.device).repeat(job.width, 1)
            job.history = torch.cat([history, history.new_zeros(job.width, budget)], dim=1)
        rows = list(range(job.width))
        tokens = self._sample(job, logits.expand(job.width, -1), rows)
        live = [r for r in rows if not job.rows[r].finish]
        if not live:
            self._finish(job)
            return
        self.batch.join(job.cache, len(job.ids), [(job, r) for r in live])
        self.next_tokens += [tokens[r] for r in live]
        job.cache = None

    # --- decode steps

    def _step(self) -> None:
        begun = time.perf_counter()
        try:
            logits = self.batch.step(self.stepper, torch.tensor(self.next_tokens))
        except BaseException as exc:
            jobs = self._running()
            self._keep_rows(lambda job, row: False)
            self._fail(jobs, exc)
            return
        seconds = time.perf_counter() - begun
        self.peak_rows = max(self.peak_rows, len(self.batch))
        groups: dict[int, tuple[Job, list[int], list[int]]] = {}
        for index, (job, row) in enumerate(self.batch.owners):
            groups.setdefault(id(job), (job, [], []))
            groups[id(job)][1].append(index)
            groups[id(job)][2].append(row)
        for job, indices, rows in groups.values():
            job.request.stats.step_seconds.append(seconds)
            job.request.stats.steps += 1
            job.request.stats.peak_batch = max(job.request.stats.peak_batch, len(self.batch))
            tokens = self._sample(job, logits[indices], rows)
            for index, row in zip(indices, rows):
                self.next_tokens[index] = tokens[row]
        self._keep_rows(lambda job, row: not job.rows[row].finish)
        for job, _, _ in groups.values():
            if all(state.finish for state in job.rows):
                self._finish(job)

    def _sample(self, job: Job, logits: torch.Tensor, rows: list[int]) -> dict[int, int]:
        """Each row's next token, its text handed to the caller; {row: token}."""
        history = None if job.history is None else job.history[rows, : len(job.ids) + job.sampled]
        drawn = job.sampler(logits, history, rows).tolist()
        top = job.request.extras.logprobs  # None: nobody asked, nothing computed
        logprobs = logprobs_of(logits, drawn, top) if top is not None else [None] * len(rows)
        if job.history is not None:
            job.history[rows, len(job.ids) + job.sampled] = torch.tensor(drawn, device=job.history.device)
        job.sampled += 1
        now = time.perf_counter()
        job.first_at = job.first_at or now
        for row, token, logprob in zip(rows, drawn, logprobs):
            state = job.rows[row]
            text = state.push(token, self.eos, job.request.budget, logprob)
            if text or state.finish:
                job.request.events.put(state.piece(text, now, job.first_at, top is not None))
        return dict(zip(rows, drawn))

    # --- leaving

    def _drop_cancelled(self) -> None:
        for job in [job for job in self.waiting if job.cancelled()]:
            self.waiting.remove(job)
            self._finish(job)
        for job in [job for job in self.feeding if job.cancelled()]:
            self.feeding.remove(job)
            if job.fed > job.kept:  # keep the chunks fed so far for whoever sends this prompt again
                self.store.add(job.ids[: job.fed], job.cache, job.logits)
            self._finish(job)
        gone = [job for job in self._running() if job.cancelled()]
        if gone:
            self._keep_rows(lambda job, row: not job.cancelled())
        for job in gone:
            self._finish(job)

    def _running(self) -> list[Job]:
        """The jobs with rows in the batch, in batch order, once each."""
        return list({id(job): job for job, _ in self.batch.owners}.values())

    def _keep_rows(self, keep_row) -> None:
        keep = [i for i, (job, row) in enumerate(self.batch.owners) if keep_row(job, row)]
        self.batch.leave(keep)
        self.next_tokens = [self.next_tokens[i] for i in keep]

    def _fail(self, jobs: list[Job], exc: BaseException) -> None:
        for job in jobs:
            job.request.events.put(Failure(exc))
            self._finish(job)

    def _finish(self, job: Job) -> None:
        stats = job.request.stats
        stats.tokens = sum(len(row.tokens) for row in job.rows)
        if job.decode_start:
            stats.decode_seconds = time.perf_counter() - job.decode_start
        self.on_finish(job.request)
        job.request.finished.set()
        job.request.events.put(END)
