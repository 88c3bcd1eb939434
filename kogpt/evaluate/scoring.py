"""Log-likelihood of candidate continuations given a prompt, batched over items and candidates.

Each `Request` is one item: a context (the prompt's token ids) and the token ids of every candidate
label. The score of a candidate is the sum of the model's log-probabilities of its tokens after the
context. Two ways to compute it, equal up to rounding:

- `prefix` (the default): one row per item holds its context once and then all of its candidates,
  and an attention mask keeps the candidates from seeing each other. The context, usually most of
  the tokens, is computed once per item instead of once per label, in one forward pass per batch,
  with no cache to copy for each label.
- `full`: every context + candidate is one right-padded sequence; simpler, and the reference.

A forward pass takes at most `batch_size` items and at most `MAX_TOKENS_PER_PASS` tokens (rows x
padded width), so memory, the (B, T, T) attention mask included, stays bounded however large
`batch_size` is.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch

from kogpt.placement.options import input_device

METHODS = ("prefix", "full")
# Tokens in one forward pass (rows x padded width). At 2,048 tokens a row that is 4 rows, a 64 MiB
# float32 mask; prompts of ~150 tokens still go 50 at a time, enough to keep a GPU busy.
MAX_TOKENS_PER_PASS = 8192


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
    for batch in batches(requests, batch_size, method):
        with torch.inference_mode():
            yield from step(model, batch, pad_id)


def shape(request: Request, method: str) -> tuple[int, int]:
    """(rows, width) of `request` in a forward pass of `method`."""
    if method == "prefix":
        return 1, len(request.context) + sum(len(c) - 1 for c in request.continuations)
    return len(request.continuations), len(request.context) + max(map(len, request.continuations)) - 1


def batches(
    requests: Sequence[Request], batch_size: int, method: str, max_tokens: int | None = None
) -> Iterator[Sequence[Request]]:
    """Consecutive runs of at most `batch_size` requests and `max_tokens` padded tokens (one request at least).

    `max_tokens` defaults to `MAX_TOKENS_PER_PASS`.
    """
    max_tokens = max_tokens or MAX_TOKENS_PER_PASS
    start, rows, width = 0, 0, 0
    for end, request in enumerate(requests):
        r, w = shape(request, method)
        if end > start and (end - start >= batch_size or (rows + r) * max(width, w) > max_tokens):
            yield requests[start:end]
            start, rows, width = end, 0, 0
        rows, width = rows + r, max(width, w)
    if start < len(requests):
        yield requests[start:]


def token_logprobs(model: torch.nn.Module, ids: Sequence[int], top: int = 0) -> list[tuple[float, list[tuple[int, float]]]]:
    """The log-probability of each token of `ids` after the ones before it (from the second token on),
    with the `top` most likely (token, log-probability) there: what `score` sums for a candidate,
    computed the same way (the `full` method's forward pass, float32 log-softmax)."""
    if len(ids) < 2:
        return []
    with torch.inference_mode():
        tokens = torch.tensor([list(ids)[:-1]], device=input_device(model))
        hidden = model.transformer(input_ids=tokens, use_cache=False).last_hidden_state
        picks = [(0, i, token, 0) for i, token in enumerate(list(ids)[1:])]
        logp, picked = _log_probs(model, hidden, picks)
        if not top:
            return [(p, []) for p in picked.tolist()]
        values, best = torch.topk(logp, min(top, logp.shape[-1]), dim=-1)
        return [(p, list(zip(i, v))) for p, i, v in zip(picked.tolist(), best.tolist(), values.tolist())]


def _log_probs(model: torch.nn.Module, hidden: torch.Tensor, picks: list[tuple[int, int, int, int]]):
    """The float32 log-softmax (P, V) at each pick, from one lm_head call, and each pick's token's (P,).

    `picks` holds (row, position, token, candidate): the token is scored from `hidden[row, position]`.
    """
    rows, positions, tokens = (torch.tensor(column, device=hidden.device) for column in list(zip(*picks))[:3])
    logp = torch.log_softmax(model.lm_head(hidden[rows, positions]).float(), dim=-1)  # (P, V)
    return logp, logp[torch.arange(len(picks), device=logp.device), tokens]


def _sum_log_probs(model: torch.nn.Module, hidden: torch.Tensor, picks: list[tuple[int, int, int, int]], n: int):
    """Sum, per candidate, the log-probabilities of its tokens (`_log_probs`)."""
    _, picked = _log_probs(model, hidden, picks)
    owners = torch.tensor([pick[3] for pick in picks], device=picked.device)
    return torch.zeros(n, device=picked.device).index_add_(0, owners, picked).tolist()


def _score_full(model: torch.nn.Module, batch: Sequence[Request], pad_id: int) -> list[list[float]]:
    seqs = [(r.context, c) for r in batch for c in r.continuations]
    width = max(len(ctx) + len(cont) for ctx, cont in seqs) - 1  # the last token is never an input
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    picks = []
    for row, (ctx, cont) in enumerate(seqs):
        tokens = (ctx + cont)[:-1]
        ids[row, : len(tokens)] = torch.tensor(tokens)
        picks += [(row, len(ctx) - 1 + i, token, row) for i, token in enumerate(cont)]
    # Right padding needs no mask: causal attention keeps real tokens from seeing the pads after them.
    hidden = model.transformer(input_ids=ids.to(input_device(model)), use_cache=False).last_hidden_state
    return _regroup(batch, _sum_log_probs(model, hidden, picks, len(seqs)))


def _score_prefix(model: torch.nn.Module, batch: Sequence[Request], pad_id: int) -> list[list[float]]:
    # One row per item: the context, then every candidate but its last token, side by side. A 4D mask
    # lets each candidate see the context and its own earlier tokens only, and its positions restart
    # where the context ends, so each candidate reads exactly `context + candidate`.
    # Not the embedding's device: that is `meta` when its weights are offloaded to the CPU or disk.
    device, dtype = input_device(model), model.get_input_embeddings().weight.dtype
    rows = [r.context + [t for c in r.continuations for t in c[:-1]] for r in batch]
    width = max(map(len, rows))
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    segment = torch.full((len(batch), width), -1, dtype=torch.long)  # 0 context, j + 1 candidate j, -1 pad
    positions = torch.zeros((len(batch), width), dtype=torch.long)
    picks, owner = [], 0
    for row, (r, tokens) in enumerate(zip(batch, rows, strict=True)):
        n = len(r.context)
        ids[row, : len(tokens)] = torch.tensor(tokens)
        segment[row, :n] = 0
        positions[row, :n] = torch.arange(n)
        at = n
        for j, c in enumerate(r.continuations):
            k = len(c) - 1
            segment[row, at : at + k] = j + 1
            positions[row, at : at + k] = torch.arange(n, n + k)
            # c[0] follows the context's last token; c[t] follows c[t - 1], which sits at at + t - 1.
            picks += [(row, n - 1 if t == 0 else at + t - 1, token, owner) for t, token in enumerate(c)]
            at, owner = at + k, owner + 1
    q, k = segment[:, :, None], segment[:, None, :]  # (B, T, 1), (B, 1, T)
    causal = torch.ones(width, width, dtype=torch.bool).tril()
    allowed = causal & ((k == 0) | (k == q)) & (k >= 0) & (q >= 0)
    allowed |= torch.eye(width, dtype=torch.bool)  # a pad sees itself: no row is fully masked
    # An additive float mask works with both the eager and the SDPA attention of GPT-J.
    mask = torch.zeros(allowed.shape, dtype=dtype).masked_fill(~allowed, torch.finfo(dtype).min)
    hidden = model.transformer(
        input_ids=ids.to(device),
        attention_mask=mask[:, None].to(device),  # (B, 1, T, T)
        position_ids=positions.to(device),
        use_cache=False,
    ).last_hidden_state
    return _regroup(batch, _sum_log_probs(model, hidden, picks, owner))


def _regroup(batch: Sequence[Request], flat: list[float]) -> list[list[float]]:
    grouped, at = [], 0
    for r in batch:
        grouped.append(flat[at : at + len(r.continuations)])
        at += len(r.continuations)
    return grouped
