"""The prefix (KV) cache: the cache of the last sequence, with the logits after its last token.

A request whose tokens share a prefix with it feeds only the rest (`/retry`, `/continue`, a new
question after the same few-shot preamble); an identical prompt needs no forward pass at all.
The cache only ever holds the keys and values of `tokens`, which depend on nothing but the tokens
and the model, so reuse changes the speed and never the result (sampling settings and seeds play
no part in it).
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
    """Holds `cache` (one row) with the keys and values of `tokens`, and `logits` (1, vocab) after them.

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
        self.reused = 0  # tokens the last request did not feed again (for logs and benchmarks)

    def forget(self) -> None:
        """Drop what is cached (after a failed forward, whose cache is half-written)."""
        self.tokens, self.logits = [], None
        if self.static and self.cache is not None:
            decode.crop(self.cache, 0)
        else:
            self.cache = None

    def record(self, tokens: list[int], logits: torch.Tensor | None) -> None:
        """The cache now holds `tokens`, and `logits` (1, vocab) follow the last of them (None: unknown)."""
        self.tokens, self.logits = tokens, logits

    def feed(
        self,
        ids: list[int],
        needed: int,
        chunk: int,
        cancelled: Callable[[], bool],
    ) -> torch.Tensor | None:
        """Make the cache hold `ids` (room for `needed` positions); the logits (1, vocab) after them.

        Feeds only what the cached tokens do not already cover; None when cancelled (the cache
        then holds the chunks fed so far).
        """
        shared = common_prefix(self.tokens, ids)
        if shared == len(ids) == len(self.tokens) and self.logits is not None:
            self.reused = shared
            return self.logits
        keep = min(shared, len(ids) - 1)  # at least one token is fed, to get its logits
        self._make_room(needed, keep)
        if keep == 0 or self.cache is None:
            keep = 0
            if self.cache is None:
                self.cache = decode.new_cache(self.model)
            else:
                decode.crop(self.cache, 0)
        else:
            decode.crop(self.cache, keep)
        self.record(ids[:keep], None)
        self.reused = keep
        log.debug("prefix cache: %d of %d prompt tokens already cached", keep, len(ids))

        def done(part: list[int], logits: torch.Tensor) -> None:
            self.record(self.tokens + part, logits)

        return decode.prefill(self.model, self.cache, ids[keep:], self.device, chunk, cancelled, done)

    def _make_room(self, needed: int, keep: int) -> None:
        """With static caches: switch to the bucket for `needed` positions, carrying `keep` positions."""
        if not self.static:
            return
        target = self.static_cache(1, decode.static_cache_length(needed, self.context))
        if target is self.cache:
            return
        if self.cache is not None and keep > 0:
            decode.copy_rows(self.cache, target, keep, 1)
        else:
            decode.crop(target, 0)
        self.cache = target

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
