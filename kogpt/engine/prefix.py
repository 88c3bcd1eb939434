"""The prefix (KV) cache: the keys and values of the last prompt, with the logits after it.

A request whose tokens share a prefix with it feeds only the rest (`/retry`, `/continue`, a new
question after the same few-shot preamble); an identical prompt needs no forward pass at all.

Reuse never changes a result, only the speed, bit for bit: a prompt is always fed in chunks that
start at multiples of the chunk size, and only whole chunks of the last prompt are kept (the
positions the decode loop added one at a time, and the last partial chunk, are fed again). So the
cache holds exactly the numbers a cold start would compute; the sampling settings and seeds play
no part in it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch

from kogpt.engine import decode

log = logging.getLogger(__name__)


def common_prefix(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


class PrefixCache:
    """`cache` (one row) holds the keys and values of `tokens` as a cold prefill computes them (and
    perhaps decoded positions after them); `logits` (1, vocab) follow `tokens`, None if unknown.

    With `static`, caches are preallocated in size buckets (`decode.static_cache_length`), one per
    bucket and batch size, kept for the life of the engine so the compiled step never sees a new one.
    """

    def __init__(self, model, device: torch.device, context: int, static: bool, stepper: decode.Stepper) -> None:
        self.model = model
        self.device = device
        self.context = context
        self.static = static
        self.stepper = stepper
        self.tokens: list[int] = []
        self.cache = None
        self.logits: torch.Tensor | None = None
        self._static_caches: dict[tuple[int, int], object] = {}
        self.chunk = 0  # the chunk size `tokens` were fed with
        self.reused = 0  # tokens the last request did not feed again (for logs and benchmarks)

    def forget(self) -> None:
        """Drop what is cached (a cold start; also after a failed forward, whose cache is half-written)."""
        self.tokens, self.logits = [], None
        if self.static and self.cache is not None:
            decode.crop(self.cache, 0)
        else:
            self.cache = None

    def feed(
        self,
        ids: list[int],
        needed: int,
        chunk: int,
        cancelled: Callable[[], bool],
    ) -> torch.Tensor | None:
        """Make the cache hold `ids` (room for `needed` positions); the logits (1, vocab) after them.

        Feeds only what the cached whole chunks do not cover; None when cancelled (the cache then
        keeps the chunks fed so far).
        """
        switched = self._switch_bucket(needed)
        if switched or chunk != self.chunk:
            self.forget()
            self.chunk = chunk
        shared = common_prefix(self.tokens, ids)
        if shared == len(ids) == len(self.tokens) and self.logits is not None:
            decode.crop(self.cache, shared)  # drop what the decode loop added
            self.reused = shared
            return self.logits
        keep = min(shared, len(ids) - 1) // chunk * chunk  # whole chunks; at least one token is fed
        if self.cache is None:
            self.cache = decode.new_cache(self.model)
        decode.crop(self.cache, keep)
        self.tokens, self.logits, self.reused = ids[:keep], None, keep
        log.debug("prefix cache: %d of %d prompt tokens already cached", keep, len(ids))

        def done(part: list[int], logits: torch.Tensor) -> None:
            self.tokens, self.logits = self.tokens + part, logits

        return decode.prefill(self.model, self.cache, ids[keep:], self.device, chunk, cancelled, done)

    def _switch_bucket(self, needed: int) -> bool:
        """With static caches: use the bucket for `needed` positions; True when that is another cache.

        A cache of another size is started cold: attention over another length may round differently.
        """
        if not self.static:
            return False
        target = self.static_cache(1, decode.static_cache_length(needed, self.context))
        if target is self.cache:
            return False
        self.cache = target
        return True

    def static_cache(self, rows: int, length: int):
        """The static cache of `rows` x `length` positions, made and warmed up on first use."""
        key = (rows, length)
        if key not in self._static_caches:
            for other in [k for k in self._static_caches if k[0] not in (1, rows)]:
                del self._static_caches[other]  # keep the batch-1 caches and this batch size only
            cache = decode.new_cache(self.model, length, rows, self.device)
            self.stepper.warm(cache, rows, self.device)
            self._static_caches[key] = cache
        return self._static_caches[key]

    def rows(self, rows: int, length: int, needed: int):
        """A cache of `rows` copies of the first `length` positions (batched samples); this one is kept."""
        if not self.static:
            return decode.repeat_rows(self.cache, rows)
        target = self.static_cache(rows, decode.static_cache_length(needed, self.context))
        decode.copy_rows(self.cache, target, length, rows)
        return target
