"""Per-item results of a run, one JSON object a line (`kogpt eval --items FILE`)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import IO

from kogpt.evaluate.fewshot import Prompt
from kogpt.evaluate.runner import Outcome
from kogpt.evaluate.scoring import Request
from kogpt.evaluate.templates import Task


def records(task: Task, prompts: Sequence[Prompt], batch: Sequence[Request], outcome: Outcome,
            texts: Sequence[str]) -> list[dict]:
    """One record per scored item: where it came from, the prompt the model read, each label's
    continuation, its log-likelihood (unnormalised) and token count, the gold and predicted labels."""
    out = []
    for prompt, request, scores, gold, predicted in zip(prompts, batch, outcome.scores, outcome.gold,
                                                        outcome.predicted, strict=True):
        out.append({
            "line": prompt.example.line,
            "prompt": prompt.text,
            "candidates": dict(zip(task.labels, texts, strict=True)),
            "loglikelihoods": dict(zip(task.labels, scores, strict=True)),
            "tokens": dict(zip(task.labels, map(len, request.continuations), strict=True)),
            "prompt_tokens": len(request.context),
            "gold": gold,
            "predicted": predicted,
        })  # fmt: skip
    return out


def write(file: IO[str], rows: Sequence[dict]) -> None:
    for row in rows:
        file.write(json.dumps(row, ensure_ascii=False) + "\n")
