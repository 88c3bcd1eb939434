"""Prompts' keys and values kept for reuse: a request whose tokens share a beginning with an earlier
prompt feeds only the rest (`/retry`, `/continue`, a new question after the same few-shot
preamble); an identical prompt needs no forward pass at all.

`PrefixStore` (the CPU's continuous batching) keeps many prompts, least recently used first out,
and reuses them to the token. `PrefixCache` (CUDA's static caches, one request at a time) keeps the
last prompt and reuses it in whole chunks only, so that reuse never changes a result bit for bit:
a prompt is always fed in chunks that start at multiples of the chunk size (the positions the decode
loop added one at a time, and the last partial chunk, are fed again), and the cache holds exactly
the numbers a cold start would compute.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable

import psutil
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


PREFIX_SHARE = 0.1  # of the memory available when the engine starts
PREFIX_MAX = 8 << 30


def default_prefix_budget() -> int:
    """The prefix cache's default size: a tenth of the available memory, at most 8 GiB."""
    return min(PREFIX_MAX, int(psutil.virtual_memory().available * PREFIX_SHARE))


class PrefixStore:
    """Many prompts' keys and values (dynamic caches), least recently used first out, within `budget`
    bytes: clients that share a few-shot preamble pay its prefill once.

    An entry is a whole prompt (`tokens`, its one-row cache and the logits after it). A prompt equal
    to an entry needs no forward pass; one that shares a beginning with entries starts from the longest
    such beginning, to the token (at least its last token is fed, for the logits after it). Entries are
    never changed: a prompt's cache is a view of an entry's first positions.

    Unlike `PrefixCache`'s whole chunks, a beginning reused to the token is not always the cold start's
    numbers bit for bit: the prompt's next positions are computed in a shorter chunk, which some
    kernels round otherwise in the low bits, as a batched step may (docs/serve.md, "Determinism").
    """

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self.entries: OrderedDict[tuple[int, ...], tuple[object, torch.Tensor, int]] = OrderedDict()
        self.bytes = 0

    def __len__(self) -> int:
        return len(self.entries)

    def forget(self) -> None:
        self.entries.clear()
        self.bytes = 0

    def lookup(self, ids: list[int]) -> tuple[object | None, int, torch.Tensor | None]:
        """(a one-row cache holding the first `kept` positions of `ids`, `kept`, the logits after
        `ids` when an entry is `ids` itself); (None, 0, None) on a miss."""
        key = tuple(ids)
        entry = self.entries.get(key)
        if entry is not None:
            self.entries.move_to_end(key)
            return entry[0], len(ids), entry[1]
        best, best_key = 0, None
        for tokens in self.entries:
            shared = min(common_prefix(list(tokens), ids), len(ids) - 1)
            if shared > best:
                best, best_key = shared, tokens
        if best_key is None:
            return None, 0, None
        self.entries.move_to_end(best_key)
        return truncated(self.entries[best_key][0], best), best, None

    def add(self, ids: list[int], cache, logits: torch.Tensor) -> None:
        """Keep `ids`' cache, evicting the least recently used entries. A cache with spare room
        (`decode.GrowingLayer`) is kept as a copy without it: the budget counts what is held."""
        if any(layer.keys.untyped_storage().nbytes() > layer.keys.nbytes for layer in cache.layers):
            cache = truncated(cache, decode.cache_length(cache))
        size = sum(layer.keys.nbytes + layer.values.nbytes for layer in cache.layers)
        if size > self.budget:
            return
        key = tuple(ids)
        if key in self.entries:
            self.bytes -= self.entries.pop(key)[2]
        while self.entries and self.bytes + size > self.budget:
            self.bytes -= self.entries.popitem(last=False)[1][2]
        self.entries[key] = (cache, logits, size)
        self.bytes += size


def truncated(cache, length: int):
    """A new one-row dynamic cache of the first `length` positions of `cache` (views, not copies)."""
    return decode.dynamic_cache([(layer.keys[:, :, :length], layer.values[:, :, :length]) for layer in cache.layers])
