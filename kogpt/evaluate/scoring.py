"""Log-likelihood of candidate continuations given a prompt, batched over items and candidates.

Each `Request` is one item: a context (the prompt's token ids) and the token ids of every candidate
label. The score of a candidate is the sum of the model's log-probabilities of its tokens after the
context. Two ways to compute it, equal up to rounding:

- `prefix` (the default): one row per item holds its context once and then all of its candidates,
  and an attention mask keeps the candidates from seeing each other. The context, usually most of
  the tokens, is computed once per item instead of once per label, in one forward pass per batch,
  with no cache to copy for each label.
- `full`: every context + candidate is one right-padded sequence; simpler, and the reference.
"""

from __future__ import annotations

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
    # One row per item: the context, then every candidate but its last token, side by side. A 4D mask
    # lets each candidate see the context and its own earlier tokens only, and its positions restart
    # where the context ends, so each candidate reads exactly `context + candidate`.
    device, dtype = _device(model), model.get_input_embeddings().weight.dtype
    rows = [r.context + [t for c in r.continuations for t in c[:-1]] for r in batch]
    width = max(map(len, rows))
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    positions = torch.zeros((len(batch), width), dtype=torch.long)
    allowed = torch.eye(width, dtype=torch.bool).repeat(len(batch), 1, 1)  # (B, T, T); pads see themselves
    starts: list[list[int]] = []  # where each candidate's tokens begin in its row
    for row, (r, tokens) in enumerate(zip(batch, rows, strict=True)):
        n = len(r.context)
        ids[row, : len(tokens)] = torch.tensor(tokens)
        positions[row, :n] = torch.arange(n)
        allowed[row, :n, :n] = torch.ones(n, n, dtype=torch.bool).tril()
        at, starts_row = n, []
        for c in r.continuations:
            k = len(c) - 1
            positions[row, at : at + k] = torch.arange(n, n + k)
            allowed[row, at : at + k, :n] = True
            allowed[row, at : at + k, at : at + k] = torch.ones(k, k, dtype=torch.bool).tril()
            starts_row.append(at)
            at += k
        starts.append(starts_row)
    # An additive float mask works with both the eager and the SDPA attention of GPT-J.
    mask = torch.zeros(allowed.shape, dtype=dtype).masked_fill(~allowed, torch.finfo(dtype).min)
    hidden = model.transformer(
        input_ids=ids.to(device),
        attention_mask=mask[:, None].to(device),  # (B, 1, T, T)
        position_ids=positions.to(device),
        use_cache=False,
    ).last_hidden_state
    scores: list[float] = []
    for row, r in enumerate(batch):
        n = len(r.context)
        for c, at in zip(r.continuations, starts[row], strict=True):
            # c[0] follows the context's last token; c[t] follows c[t-1], stored at at + t - 1.
            index = torch.tensor([n - 1] + list(range(at, at + len(c) - 1)))
            logp = _log_probs(model, hidden[row, index.to(hidden.device)])  # (len(c), V)
            scores.append(logp.gather(1, torch.tensor(c, device=logp.device)[:, None]).sum().item())
    return _regroup(batch, scores)


def _regroup(batch: Sequence[Request], flat: list[float]) -> list[list[float]]:
    grouped, at = [], 0
    for r in batch:
        grouped.append(flat[at : at + len(r.continuations)])
        at += len(r.continuations)
    return grouped
