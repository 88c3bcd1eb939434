"""Score every prompt's candidate labels and turn the choices into metrics."""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from kogpt.errors import KoGPTError
from kogpt.evaluate import metrics
from kogpt.evaluate.fewshot import Prompt
from kogpt.evaluate.scoring import Request, batches, score
from kogpt.evaluate.templates import Task, Template

if TYPE_CHECKING:
    from kogpt.api import KoGPT

log = logging.getLogger(__name__)


@dataclass
class Outcome:
    """Predictions, per-label log-likelihoods, the confusion matrix and the metrics of one run."""

    labels: tuple[str, ...]
    gold: list[str]
    predicted: list[str]
    scores: list[list[float]]
    matrix: metrics.Matrix
    metrics: dict[str, float]
    seconds: float

    @property
    def items_per_second(self) -> float:
        return len(self.gold) / self.seconds if self.seconds > 0 else 0.0


def requests(
    gpt: KoGPT, task: Task, template: Template, prompts: Sequence[Prompt], source: str = "data"
) -> list[Request]:
    """Tokenize each prompt and the labels' continuations; refuse prompts longer than the model's context.

    `source` (the data file) starts the error messages, which name the item's line.
    """
    choices = [gpt.encode(template.choices[label]) for label in task.labels]
    if not all(choices):
        raise KoGPTError("a label's continuation encodes to no tokens; check the template's choices")
    for i, j in itertools.combinations(range(len(choices)), 2):
        if choices[i] == choices[j]:
            a, b = task.labels[i], task.labels[j]
            raise KoGPTError(f"the choices of {a} and {b} encode to the same tokens; each label needs its own text")
    longest = max(map(len, choices))
    out = []
    for prompt in prompts:
        context = gpt.encode(prompt.text)
        if not context:
            raise KoGPTError(f"{source}, line {prompt.example.line}: the prompt encodes to no tokens")
        if len(context) + longest > gpt.context_length:
            raise KoGPTError(
                f"{source}, line {prompt.example.line}: the prompt is {len(context)} tokens, too long for the model's "
                f"{gpt.context_length}-token context; use fewer --shots"
            )
        out.append(Request(context, choices))
    return out


def evaluate(
    gpt: KoGPT,
    task: Task,
    prompts: Sequence[Prompt],
    batch: Sequence[Request],
    batch_size: int = 8,
    method: str = "prefix",
    advance: Callable[[int], None] | None = None,
    scorer: Callable[[Sequence[Request], int], Iterable[list[float]]] | None = None,
) -> Outcome:
    """Score each prompt's labels with `gpt` and predict the most likely one (ties: the first label).

    `batch` holds the prompts' `requests()`; `advance(n)` is called as items finish, for a progress bar.
    `scorer(requests, batch_size)` replaces the built-in scorer (`kogpt.evaluate.vllm.VLLMScorer`).
    """
    if prompts:
        log.debug("full prompt of the first item (line %d):\n%s", prompts[0].example.line, prompts[0].text)
    pad = gpt.tokenizer.pad_token_id if gpt.tokenizer.pad_token_id is not None else 0
    if scorer is None:
        def scorer(items, size):
            return score(gpt.model, items, size, method, pad)
    # Longest prompts first: batches of similar length pad less, and memory runs out at once if it must.
    order = sorted(range(len(batch)), key=lambda i: -len(batch[i].context))
    started = time.perf_counter()
    scores: list[list[float]] = [[] for _ in batch]
    ordered = [batch[i] for i in order]
    scored = scorer(ordered, batch_size)
    try:
        for i, item_scores in zip(order, scored, strict=True):
            scores[i] = item_scores
            if advance is not None:
                advance(1)
    except (MemoryError, RuntimeError) as exc:  # torch.OutOfMemoryError is a RuntimeError
        if not out_of_memory(exc):
            raise
        largest = max((len(b) for b in batches(ordered, batch_size, method)), default=1)
        device = getattr(gpt.loaded.device, "type", str(gpt.loaded.device))  # a string for vLLM
        raise KoGPTError(out_of_memory_advice(largest, device)) from exc
    seconds = time.perf_counter() - started
    gold = [p.example.label for p in prompts]
    predicted = [task.labels[max(range(len(s)), key=s.__getitem__)] for s in scores]
    matrix = metrics.confusion_matrix(gold, predicted, task.labels)
    values = {"accuracy": metrics.accuracy(matrix)}
    if task.metric == "f1":
        values["f1"] = metrics.f1(matrix, task.labels.index(task.positive))
    elif task.metric == "macro_f1":
        values["macro_f1"] = metrics.macro_f1(matrix)
    return Outcome(task.labels, gold, predicted, scores, matrix, values, seconds)


def out_of_memory(exc: BaseException) -> bool:
    """Whether `exc` is torch or Python running out of memory (a failed CPU allocation is a RuntimeError)."""
    import torch

    text = str(exc)
    return (
        isinstance(exc, (MemoryError, torch.OutOfMemoryError))
        or "can't allocate memory" in text
        or "out of memory" in text.lower()
    )


def out_of_memory_advice(at_once: int, device: str) -> str:
    """One line: what ran out (`at_once`: the most items in one forward pass), and what to try."""
    if at_once > 1:
        advice = f"try --batch-size {max(1, at_once // 4)}"
    else:
        advice = "use fewer --shots, or --quantize int8" + ("" if device == "cpu" else " or --device-map auto")
    return f"ran out of memory scoring up to {at_once} items at once on the {device}; {advice}"
