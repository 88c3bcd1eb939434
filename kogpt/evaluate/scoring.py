"""Log-likelihood of candidate continuations given a prompt, batched over items and candidates.

Each `Request` is one item: a context (the prompt's token ids) and the token ids of every candidate
label. The score of a candidate is the sum of the model's log-probabilities of its tokens after the
context. Two ways to compute it, equal up to rounding:

- `prefix` (the default): the contexts of a batch of items, left-padded, go through the model once;
  the cache is then repeated for each item's candidates, and only the candidate tokens go through
  again. The context, usually most of the tokens, is computed once per item instead of once per label.
- `full`: every context + candidate is one right-padded sequence; simpler, and the reference.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch

METHODS = ("prefix", "full")


@dataclass(frozen=True)
class Request:
    """One item to score: prompt token ids and the token ids of each candidate continuation."""

    context: list[int]
    continuations: list[list[int]]


def score(
    model: torch.nn.Module,
    requests: Sequence[Request],
    batch_size: int = 8,
    method: str = "prefix",
    pad_id: int = 0,
) -> Iterator[list[float]]:
    """Yield, for each request in order, the log-likelihood of each of its continuations.

    `batch_size` items go through the model together (with all of their candidates).
    """
    if method not in METHODS:
        raise ValueError(f"unknown scoring method {method!r}; choose one of {METHODS}")
    for request in requests:
        if not request.context or not request.continuations or not all(request.continuations):
            raise ValueError("a request needs a non-empty context and non-empty continuations")
    step = _score_prefix if method == "prefix" else _score_full
    for start in range(0, len(requests), max(1, batch_size)):
        batch = requests[start : start + max(1, batch_size)]
        with torch.inference_mode():
            yield from step(model, batch, pad_id)


def _device(model: torch.nn.Module) -> torch.device:
    return model.get_input_embeddings().weight.device


def _log_probs(model: torch.nn.Module, hidden: torch.Tensor) -> torch.Tensor:
    """Log-softmax over the vocabulary, in float32 whatever the model's dtype."""
    return torch.log_softmax(model.lm_head(hidden).float(), dim=-1)


def _cache_kwarg(model: torch.nn.Module) -> str:
    # transformers 5.24 renamed `past_key_values` to `cache`; older 5.x only know the old name.
    params = inspect.signature(model.transformer.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def _score_full(model: torch.nn.Module, batch: Sequence[Request], pad_id: int) -> list[list[float]]:
    seqs = [(r.context, c) for r in batch for c in r.continuations]
    width = max(len(ctx) + len(cont) for ctx, cont in seqs) - 1  # the last token is never an input
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    for row, (ctx, cont) in enumerate(seqs):
        tokens = (ctx + cont)[:-1]
        ids[row, : len(tokens)] = torch.tensor(tokens)
    # Right padding needs no mask: causal attention keeps real tokens from seeing the pads after them.
    hidden = model.transformer(input_ids=ids.to(_device(model)), use_cache=False).last_hidden_state
    scores: list[float] = []
    for row, (ctx, cont) in enumerate(seqs):
        positions = torch.arange(len(ctx) - 1, len(ctx) + len(cont) - 1)
        logp = _log_probs(model, hidden[row, positions])  # (len(cont), V)
        scores.append(logp.gather(1, torch.tensor(cont, device=logp.device)[:, None]).sum().item())
    return _regroup(batch, scores)


def _score_prefix(model: torch.nn.Module, batch: Sequence[Request], pad_id: int) -> list[list[float]]:
    from transformers import DynamicCache

    device = _device(model)
    length = max(len(r.context) for r in batch)
    ids = torch.full((len(batch), length), pad_id, dtype=torch.long)
    mask = torch.zeros((len(batch), length), dtype=torch.long)
    for row, r in enumerate(batch):
        ids[row, length - len(r.context) :] = torch.tensor(r.context)
        mask[row, length - len(r.context) :] = 1
    positions = (mask.cumsum(-1) - 1).clamp(min=0)  # left padding: each context starts at position 0
    cache = DynamicCache()
    kw = _cache_kwarg(model)
    out = model.transformer(
        input_ids=ids.to(device),
        attention_mask=mask.to(device),
        position_ids=positions.to(device),
        use_cache=True,
        **{kw: cache},
    )
    first = _log_probs(model, out.last_hidden_state[:, -1])  # (B, V): the first candidate token
    owner = [row for row, r in enumerate(batch) for _ in r.continuations]
    conts = [c for r in batch for c in r.continuations]
    scores = [first[row, c[0]].item() for row, c in zip(owner, conts, strict=True)]
    width = max(len(c) for c in conts) - 1
    if width == 0:
        return _regroup(batch, scores)  # single-token labels: the context pass is all we need
    index = torch.tensor(owner)
    cache.batch_select_indices(index.to(device))  # (N, heads, length, head_dim), one row per candidate
    cont_ids = torch.full((len(conts), width), pad_id, dtype=torch.long)
    for row, c in enumerate(conts):
        cont_ids[row, : len(c) - 1] = torch.tensor(c[:-1])
    cont_mask = torch.cat([mask[index], torch.ones((len(conts), width), dtype=torch.long)], dim=1)
    cont_pos = mask[index].sum(-1, keepdim=True) + torch.arange(width)
    out = model.transformer(
        input_ids=cont_ids.to(device),
        attention_mask=cont_mask.to(device),
        position_ids=cont_pos.to(device),
        use_cache=True,
        **{kw: cache},
    )
    rest = _log_probs(model, out.last_hidden_state)  # (N, width, V)
    for row, c in enumerate(conts):
        target = torch.tensor(c[1:], device=rest.device)
        scores[row] += rest[row, : len(c) - 1].gather(1, target[:, None]).sum().item()
    return _regroup(batch, scores)


def _regroup(batch: Sequence[Request], flat: list[float]) -> list[list[float]]:
    grouped, at = [], 0
    for r in batch:
        grouped.append(flat[at : at + len(r.continuations)])
        at += len(r.continuations)
    return grouped
