"""The running batch: rows of different requests, each at its own length, decoding in one step.

Rows sit in one transformers `DynamicCache`, left-padded to the longest: row b's real positions are
the last `lengths[b]` of the cache's `width`. A step feeds one token per row with an attention mask
that hides each row's padding and the row's own position ids (GPT-J's rotary positions), so a row
decodes as it would alone. A row joins with the keys and values of its prompt and leaves at any step;
padding that no row needs any more is cut.

When no row is padded (one request, or rows of equal length) the step passes neither mask nor
positions: exactly the forward a request alone gets.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers import DynamicCache

from kogpt.engine import decode


def _layers(cache) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(layer.keys, layer.values) for layer in cache.layers]


def _left_pad(tensor: torch.Tensor, columns: int) -> torch.Tensor:
    """(rows, heads, length, dim) with `columns` zero positions in front."""
    return F.pad(tensor, (0, 0, columns, 0)) if columns else tensor


class Batch:
    """Rows decoding together; `owners[b]` is whatever the caller keeps for row b."""

    def __init__(self) -> None:
        self.cache: DynamicCache | None = None
        self.width = 0
        self.lengths: list[int] = []
        self.owners: list[object] = []

    def __len__(self) -> int:
        return len(self.owners)

    def join(self, prompt_cache, length: int, owners: list[object]) -> None:
        """Add one row per owner, each holding the first `length` positions of the one-row
        `prompt_cache` (left unchanged: the prefix cache may keep it)."""
        rows = len(owners)
        new = [(k[:1, :, :length].expand(rows, -1, -1, -1), v[:1, :, :length].expand(rows, -1, -1, -1))
               for k, v in _layers(prompt_cache)]
        width = max(self.width, length)
        if self.cache is None:
            layers = [(_left_pad(k, width - length).contiguous(), _left_pad(v, width - length).contiguous())
                      for k, v in new]
        else:
            grow = width - self.width
            layers = [
                (torch.cat([_left_pad(k, grow), _left_pad(nk, width - length)]),
                 torch.cat([_left_pad(v, grow), _left_pad(nv, width - length)]))
                for (k, v), (nk, nv) in zip(_layers(self.cache), new)
            ]
        self.cache = decode.dynamic_cache(layers)
        self.width = width
        self.lengths += [length] * rows
        self.owners += owners

    def leave(self, keep: list[int]) -> None:
        """Keep only the rows at indices `keep` (in order), then cut padding no row needs."""
        if len(keep) == len(self.owners):
            return
        if not keep:
            self.cache, self.width, self.lengths, self.owners = None, 0, [], []
            return
        index = torch.tensor(keep, device=self.cache.layers[0].keys.device)
        cut = self.width - max(self.lengths[i] for i in keep)
        layers = [(k.index_select(0, index)[:, :, cut:], v.index_select(0, index)[:, :, cut:])
                  for k, v in _layers(self.cache)]
        self.cache = decode.dynamic_cache(layers)
        self.width -= cut
        self.lengths = [self.lengths[i] for i in keep]
        self.owners = [self.owners[i] for i in keep]

    def step(self, stepper, tokens: torch.Tensor) -> torch.Tensor:
        """float32 logits (rows, vocab) after feeding `tokens` (rows,), one per row."""
        device = self.cache.layers[0].keys.device
        ids = tokens.view(-1, 1).to(device)
        if all(length == self.width for length in self.lengths):
            logits = stepper(ids, self.cache)
        else:
            lengths = torch.tensor(self.lengths, device=device)
            columns = torch.arange(self.width + 1, device=device)
            mask = (columns >= (self.width - lengths).unsqueeze(1)).long()  # (rows, width + 1)
            logits = decode.forward_step(stepper.model, ids, self.cache, mask, lengths.unsqueeze(1))
        self.width += 1
        self.lengths = [length + 1 for length in self.lengths]
        return logits

