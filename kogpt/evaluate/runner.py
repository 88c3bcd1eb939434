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

    Whitespace that ends a prompt is scored as the start of every answer, as lm-evaluation-harness
    does: `"...감정: "` + `"긍정"` is scored as `"...감정:"` + `" 긍정"`, the tokenization the
    demonstrations show (a space alone is a token the model rarely sees before a word).
    `source` (the data file) starts the error messages, which name the item's line.
    """
    encoded: dict[str, list[list[int]]] = {}

    def continuations(space: str) -> list[list[int]]:
        if space not in encoded:
            encoded[space] = check_choices(gpt, task, template, space)
        return encoded[space]

    out, moved = [], 0
    for prompt in prompts:
        text = prompt.text.rstrip()
        space = prompt.text[len(text) :]
        moved += bool(space)
        choices = continuations(space)
        context = gpt.encode(text)
        if not context:
            raise KoGPTError(f"{source}, line {prompt.example.line}: the prompt encodes to no tokens")
        if len(context) + max(map(len, choices)) > gpt.context_length:
            raise KoGPTError(
                f"{source}, line {prompt.example.line}: the prompt is {len(context)} tokens, too long for the model's "
                f"{gpt.context_length}-token context; use fewer --shots"
            )
        out.append(Request(context, choices))
    if moved:
        log.info("%d prompts end in whitespace: it is scored as the start of each answer, as lm-eval does", moved)
    return out


def check_choices(gpt: KoGPT, task: Task, template: Template, space: str = "") -> list[list[int]]:
    """The token ids of each label's continuation after `space`; refused when two are the same,
    and a warning when one is a token prefix of another (it can hardly lose to it without
    `--normalize`: every token more lowers a log-likelihood)."""
    choices = [gpt.encode(space + template.choices[label]) for label in task.labels]
    if not all(choices):
        raise KoGPTError("a label's continuation encodes to no tokens; check the template's choices")
    for i, j in itertools.permutations(range(len(choices)), 2):
        a, b = task.labels[i], task.labels[j]
        if choices[i] == choices[j]:
            raise KoGPTError(f"the choices of {a} and {b} encode to the same tokens; each label needs its own text")
        if choices[j][: len(choices[i])] == choices[i]:
            log.warning(
                "the choice of %s (%r) is a token prefix of %s's (%r): %s can hardly ever win unless scores are "
                "length-normalised (--normalize token, char or byte)", a, template.choices[a], b, template.choices[b], b
            )
    return choices


def evaluate(
    gpt: KoGPT,
    task: Task,
    prompts: Sequence[Prompt],
    batch: Sequence[Request],
    batch_size: int = 8,
    method: str = "prefix",
    advance: Callable[[int], None] | None = None,
    scorer: Callable[[Sequence[Request], int], Iterable[list[float]]] | None = None,
    normalize: str = "none",
    texts: Sequence[str] = (),
) -> Outcome:
    """Score each prompt's labels with `gpt` and predict the most likely one (ties: the first label).

    `batch` holds the prompts' `requests()`; `advance(n)` is called as items finish, for a progress bar.
    `scorer(requests, batch_size)` replaces the built-in scorer (`kogpt.evaluate.vllm.VLLMScorer`).
    `normalize` divides each log-likelihood by its continuation's length before the choice (`NORMALIZE`;
    `texts`: each label's continuation, for char and byte). A Ctrl-C raises `Stopped` with the
    outcome of the items scored so far.
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
    done: list[int] = []
    try:
        for i, item_scores in zip(order, scored, strict=True):
            scores[i] = item_scores
            done.append(i)
            if advance is not None:
                advance(1)
    except KeyboardInterrupt:
        kept = sorted(done)
        outcome = outcome_of(task, [prompts[i] for i in kept], [batch[i] for i in kept], [scores[i] for i in kept],
                             time.perf_counter() - started, normalize, texts)
        raise Stopped(outcome) from None
    except (MemoryError, RuntimeError) as exc:  # torch.OutOfMemoryError is a RuntimeError
        if not out_of_memory(exc):
            raise
        largest = max((len(b) for b in batches(ordered, batch_size, method)), default=1)
        device = getattr(gpt.loaded.device, "type", str(gpt.loaded.device))  # a string for vLLM
        raise KoGPTError(out_of_memory_advice(largest, device)) from exc
    return outcome_of(task, prompts, batch, scores, time.perf_counter() - started, normalize, texts)


class Stopped(KeyboardInterrupt):
    """Ctrl-C during scoring, carrying the `Outcome` of the items scored before it."""

    def __init__(self, outcome: Outcome) -> None:
        super().__init__()
        self.outcome = outcome


NORMALIZE = ("none", "token", "char", "byte")


def normalized(scores: list[float], request: Request, normalize: str, texts: Sequence[str]) -> list[float]:
    """Log-likelihoods divided by their continuation's length in tokens, characters (lm-eval's
    `acc_norm`) or UTF-8 bytes (`acc_bytes`); as they are for `none`."""
    if normalize == "none":
        return scores
    if normalize == "token":
        lengths = [len(c) for c in request.continuations]
    else:
        lengths = [len(t) if normalize == "char" else len(t.encode("utf-8")) for t in texts]
    return [s / max(n, 1) for s, n in zip(scores, lengths, strict=True)]


def outcome_of(
    task: Task, prompts: Sequence[Prompt], batch: Sequence[Request], scores: list[list[float]], seconds: float,
    normalize: str = "none", texts: Sequence[str] = (),
) -> Outcome:
    """Predictions (the most likely label, ties: the first), confusion matrix and metrics of scored items."""
    gold = [p.example.label for p in prompts]
    predicted = []
    for s, request in zip(scores, batch, strict=True):
        ranked = normalized(s, request, normalize, texts)
        predicted.append(task.labels[max(range(len(ranked)), key=ranked.__getitem__)])
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
