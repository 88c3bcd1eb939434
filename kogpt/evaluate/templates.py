"""The tasks and their prompt formats, as data, in one place.

A prompt is the demonstrations and then the item, joined by `separator`. Each demonstration is
`prompt` filled with its fields followed by the continuation of its label; the item is `prompt`
alone, and the model's log-likelihood of each label's continuation after it decides the answer.
The built-in formats are the public ones of EleutherAI's lm-evaluation-harness (Korean branch).

A template file (`--template FILE`) is a JSON object with any of the keys `prompt`, `choices` and
`separator`; missing keys keep the built-in values, and `choices` must name every label of the task:

    {"prompt": "리뷰: {document}\\n감정:", "choices": {"1": " 긍정", "0": " 부정"}}
"""

from __future__ import annotations

import json
import string
from dataclasses import asdict, dataclass
from pathlib import Path

from kogpt.errors import KoGPTError
from kogpt.evaluate.data import YNAT_LABELS, Example


@dataclass(frozen=True)
class Template:
    """How an item becomes text: `prompt` (a `str.format` string), label continuations, separator."""

    prompt: str
    choices: dict[str, str]
    separator: str = "\n\n"

    def context(self, example: Example) -> str:
        """The item's prompt, without an answer."""
        return self.prompt.format(**example.fields)

    def demonstration(self, example: Example) -> str:
        """The item's prompt followed by its gold answer."""
        return self.context(example) + self.choices[example.label]

    def as_dict(self) -> dict[str, object]:
        """The template as JSON-ready data."""
        return asdict(self)


@dataclass(frozen=True)
class Task:
    """A task: the fields of its items, its labels, its headline metric and its built-in template."""

    name: str
    fields: tuple[str, ...]
    labels: tuple[str, ...]
    metric: str  # "accuracy", "f1" (of `positive`) or "macro_f1"
    template: Template
    positive: str | None = None


YNAT_CHOICES = (" (과학)", " (경제)", " (사회)", " (생활)", " (세계)", " (스포츠)", " (정치)")
STS_PROMPT = "질문: 문장 1과 문장 2는 서로 유사한 의미를 가지나요?\n문장 1:{sentence1}\n문장 2:{sentence2}\n정답:"

TASKS: dict[str, Task] = {
    "nsmc": Task(
        "nsmc",
        ("document",),
        ("0", "1"),
        "accuracy",
        Template("{document}", {"1": " (긍정)", "0": " (부정)"}),
    ),
    "ynat": Task(
        "ynat",
        ("title",),
        YNAT_LABELS,
        "macro_f1",
        Template(
            "{title}",
            dict(zip(YNAT_LABELS, YNAT_CHOICES, strict=True)),
        ),
    ),
    "klue-sts": Task(
        "klue-sts",
        ("sentence1", "sentence2"),
        ("0", "1"),
        "f1",
        Template(
            STS_PROMPT,
            {"1": " 예", "0": " 아니"},
        ),
        positive="1",
    ),
}


def load_template(task: Task, path: str | Path | None) -> Template:
    """The task's built-in template, or the one in the JSON file at `path`, checked against the task."""
    if path is None:
        return task.template
    path = Path(path)
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8-sig"))
    except OSError as exc:
        raise KoGPTError(f"cannot read the template file {path}: {exc.strerror or exc}") from exc
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        where = f", line {exc.lineno}" if isinstance(exc, json.JSONDecodeError) else ""
        raise KoGPTError(f"{path}{where}: not a JSON template ({exc})") from exc
    if not isinstance(data, dict) or set(data) - {"prompt", "choices", "separator"}:
        raise KoGPTError(f"{path}: a template is a JSON object with the keys prompt, choices, separator")
    template = Template(
        data.get("prompt", task.template.prompt),
        data.get("choices", task.template.choices),
        data.get("separator", task.template.separator),
    )
    check(task, template, str(path))
    return template


def check(task: Task, template: Template, where: str) -> None:
    """Raise `KoGPTError` unless `template` fits `task`'s fields and labels."""
    if not isinstance(template.prompt, str) or not isinstance(template.separator, str):
        raise KoGPTError(f"{where}: 'prompt' and 'separator' must be strings")
    try:
        names = {name for _, name, _, _ in string.Formatter().parse(template.prompt) if name is not None}
    except ValueError as exc:
        raise KoGPTError(f"{where}: bad 'prompt' format string ({exc}); write literal braces as {{{{ }}}}") from exc
    unknown = names - set(task.fields)
    if unknown or not names:
        fields = ", ".join("{" + f + "}" for f in task.fields)
        raise KoGPTError(f"{where}: the {task.name} prompt may use only {fields}, and at least one of them")
    choices = template.choices
    if not isinstance(choices, dict) or set(choices) != set(task.labels):
        raise KoGPTError(f"{where}: 'choices' must map exactly the labels {', '.join(task.labels)} to text")
    if not all(isinstance(text, str) and text for text in choices.values()):
        raise KoGPTError(f"{where}: every choice must be a non-empty string")
