"""The forward passes of the decode loop over transformers' GPT-J, with a cache object.

`prefill` feeds prompt tokens in chunks (memory stays bounded; a cancel is seen between chunks);
`Stepper` feeds one token per row. The KV cache is transformers' `DynamicCache` (grows; the CPU
path), its layers appending into spare room (`GrowingLayer`), or `StaticCache` (preallocated to a
size bucket; the CUDA path, whose one-token step `Stepper` compiles with CUDA graphs).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch
from transformers import DynamicCache, StaticCache
from transformers.cache_utils import DynamicLayer

from kogpt.loading.phases import PREFILL_ROWS

log = logging.getLogger(__name__)

MIN_STATIC_CACHE = 256
# Prompt tokens per forward: bounds the activations (and is the grain of CUDA's prefix reuse: whole
# chunks are kept). On a CPU 128 rows already make the matrix products compute-bound; a GPU
# wants more rows per weight read.
PREFILL_CHUNK = {"cpu": PREFILL_ROWS, "cuda": 256}  # the CPU kernels are chosen for chunks of PREFILL_ROWS


class GrowingLayer(DynamicLayer):
    """A `DynamicLayer` that appends into spare room (`ROOM` positions at a time) instead of
    concatenating. transformers' layer copies its whole keys and values at every step: at 1,500
    positions of 8 rows of a 1B-shaped KoGPT that is 13 ms per layer's keys, more than the step's
    matrix products. The keys and values handed out are views of the filled part; a tensor set from
    outside (a crop, a new cache's contents) is copied into fresh room at the next update, so no
    view handed out earlier is ever written."""

    ROOM = 128
    _view: torch.Tensor | None = None  # the keys last handed out, while they are ours to extend

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        length, new = (self.keys.shape[-2] if self.keys.dim() == 4 else 0), key_states.shape[-2]
        room = self._keys_room.shape[-2] if self._view is not None and self.keys is self._view else 0
        if length + new > room:  # not ours, or full: fresh room, the filled part copied once
            shape = (*key_states.shape[:-2], length + new + self.ROOM, key_states.shape[-1])
            self._keys_room = key_states.new_empty(shape)
            self._values_room = value_states.new_empty(shape[:-1] + value_states.shape[-1:])
            if length:
                self._keys_room[..., :length, :].copy_(self.keys)
                self._values_room[..., :length, :].copy_(self.values)
        self._keys_room[..., length : length + new, :].copy_(key_states)
        self._values_room[..., length : length + new, :].copy_(value_states)
        self.keys = self._view = self._keys_room[..., : length + new, :]
        self.values = self._values_room[..., : length + new, :]
        return self.keys, self.values


def dynamic_cache(layers: list[tuple[torch.Tensor, torch.Tensor]] | None = None, config=None) -> DynamicCache:
    """transformers' `DynamicCache` (of `layers`' keys and values, copied; or empty for `config`)
    whose layers append into spare room (`GrowingLayer`)."""
    cache = DynamicCache(layers) if layers is not None else DynamicCache(config=config)
    for layer in cache.layers:
        if type(layer) is DynamicLayer:
            layer.__class__ = GrowingLayer
    return cache


def static_cache_length(needed: int, context: int) -> int:
    """Positions to allocate for a static KV cache: a power of two from 256, at most `context`.

    Few distinct sizes mean few compilations of the step across prompts of varying length.
    """
    length = MIN_STATIC_CACHE
    while length < needed:
        length *= 2
    return max(needed, min(length, context))


def new_cache(model, static_length: int | None = None, rows: int = 1, device: torch.device | None = None):
    """An empty cache: dynamic, or static with room for `static_length` positions of `rows` rows.

    A static cache is allocated now (not at its first update), so that its tensors keep one
    address for the compiled step.
    """
    if static_length is None:
        return dynamic_cache(config=model.config)
    config = model.config
    cache = StaticCache(config=config, max_cache_len=static_length)
    dtype = model.get_input_embeddings().weight.dtype
    cache.early_initialization(rows, config.n_head, config.n_embd // config.n_head, dtype, device)
    return cache


def cache_length(cache) -> int:
    return int(cache.get_seq_length())


def static_capacity(cache) -> int | None:
    """Positions a static cache holds; None for a dynamic one."""
    return cache.get_max_length() if isinstance(cache, StaticCache) else None


def crop(cache, length: int) -> None:
    """Keep the first `length` positions of `cache` (a static cache only moves its write position).

    A static cache may also be moved forward, over positions just copied into it (`copy_rows`);
    transformers has no public call for that, so its layers' position counter is set.
    """
    current = cache_length(cache)
    if length <= current:
        cache.crop(length - current)
        return
    for layer in cache.layers:
        layer.cumulative_length.fill_(length)


def copy_rows(source, target, length: int, rows: int) -> None:
    """Fill the first `length` positions of every row of the static `target` from row 0 of `source`."""
    for src, dst in zip(source.layers, target.layers):
        dst.keys[:, :, :length].copy_(src.keys[:1, :, :length].expand(rows, -1, -1, -1))
        dst.values[:, :, :length].copy_(src.values[:1, :, :length].expand(rows, -1, -1, -1))
    crop(target, length)


def repeat_rows(cache, rows: int):
    """A new dynamic cache of `rows` copies of row 0 of `cache` (batched samples of one prompt)."""
    return dynamic_cache([(layer.keys[:1].expand(rows, -1, -1, -1), layer.values[:1].expand(rows, -1, -1, -1))
                          for layer in cache.layers])


def forward_logits(model, ids: torch.Tensor, cache) -> torch.Tensor:
    """float32 logits (rows, vocab) after the last position of `ids` (rows, tokens), filling `cache`."""
    out = model(input_ids=ids, cache=cache, use_cache=True, logits_to_keep=1)
    return out.logits[:, -1].to(dtype=torch.float32, copy=True)


def forward_step(model, ids: torch.Tensor, cache, mask: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """float32 logits (rows, vocab) after one token per row of a left-padded batch: `mask` (rows,
    cached + 1) hides the padding, `positions` (rows, 1) are the rows' own positions."""
    out = model(input_ids=ids, cache=cache, use_cache=True, attention_mask=mask, position_ids=positions)
    return out.logits[:, -1].float()


def prefill(
    model,
    cache,
    ids: list[int],
    device: torch.device,
    chunk: int = 128,
    cancelled: Callable[[], bool] = lambda: False,
    done: Callable[[list[int], torch.Tensor], None] = lambda part, logits: None,
) -> torch.Tensor | None:
    """Feed `ids` to `cache` `chunk` tokens at a time; the float32 logits (1, vocab) after the last.

    `done(part, logits)` is told of each chunk once the cache holds it; None when `cancelled()`
    became true between chunks.
    """
    logits = None
    for start in range(0, len(ids), chunk):
        if cancelled():
            return None
        part = ids[start : start + chunk]
        logits = forward_logits(model, torch.tensor([part], device=device), cache)
        done(part, logits)
    return logits


class Stepper:
    """The one-token step; compiled (`reduce-overhead`: CUDA graphs) when `compile` is set.

    Create and call it in the thread that runs the decode loop: torch keeps CUDA-graph state per
    thread. Each static cache it sees (one per size bucket and batch size) is warmed up once by
    `warm`; turns of other lengths in the same bucket replay the same graph.
    """

    def __init__(self, model, compile: bool = False, backend: str = "inductor") -> None:
        self.model = model
        self.compiled = None
        self.warmed: set[int] = set()
        if compile:
            mode = "reduce-overhead" if backend == "inductor" else None
            self.compiled = torch.compile(self._step, mode=mode, backend=backend, fullgraph=True, dynamic=False)

    def _step(self, ids: torch.Tensor, cache) -> torch.Tensor:
        return self.model(input_ids=ids, cache=cache, use_cache=True).logits[:, -1].float()

    def __call__(self, ids: torch.Tensor, cache) -> torch.Tensor:
        """float32 logits (rows, vocab) after `ids` (rows, 1)."""
        if self.compiled is None or static_capacity(cache) is None:
            return self._step(ids, cache)
        if hasattr(torch.compiler, "cudagraph_mark_step_begin"):
            torch.compiler.cudagraph_mark_step_begin()  # the last step's outputs are no longer read
        return self.compiled(ids, cache).clone()  # graph outputs are overwritten by the next replay

    def warm(self, cache, rows: int, device: torch.device) -> None:
        """Compile and record the step for the empty static `cache` (three calls), then empty it."""
        if self.compiled is None or id(cache) in self.warmed:
            return
        ids = torch.zeros((rows, 1), dtype=torch.long, device=device)
        for _ in range(3):
            self(ids, cache)
            crop(cache, 0)
        self.warmed.add(id(cache))
        log.debug("compiled the step for a static cache of %d positions x %d rows", static_capacity(cache), rows)


def compilations() -> int:
    """Graphs torch.compile has made in this process (to check that turns recompile nothing)."""
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])
