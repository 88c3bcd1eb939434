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
import unicodedata
from dataclasses import asdict, dataclass
from pathlib import Path

from kogpt.errors import KoGPTError
from kogpt.evaluate.data import YNAT_LABELS, Example, check_text, decode, read_bounded

MAX_TEMPLATE_BYTES = 2**20


@dataclass(frozen=True)
class Template:
    """How an item becomes text: `prompt` (text with `{field}` placeholders), label continuations, separator."""

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
    text = decode(path, read_bounded(path, MAX_TEMPLATE_BYTES, "template file"))
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise KoGPTError(f"{path}, line {exc.lineno}: not a JSON template ({exc.msg})") from exc
    except (RecursionError, ValueError) as exc:
        raise KoGPTError(f"{path}: not a JSON template (nested too deeply, or a number too long)") from exc
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
    """Raise `KoGPTError` unless `template` fits `task`'s fields and labels.

    The prompt may hold only plain `{field}` placeholders: a format spec or conversion
    (`{document:>100000000}`, `{document!r}`) could pad to gigabytes or fail on the data.
    """
    if not isinstance(template.prompt, str) or not isinstance(template.separator, str):
        raise KoGPTError(f"{where}: 'prompt' and 'separator' must be strings")
    check_text(where, template.prompt, "prompt")
    check_text(where, template.separator, "separator")
    fields = ", ".join("{" + f + "}" for f in task.fields)
    try:
        parts = list(string.Formatter().parse(template.prompt))
    except ValueError as exc:
        raise KoGPTError(f"{where}: bad 'prompt' format string ({exc}); write literal braces as {{{{ }}}}") from exc
    for _, name, spec, conversion in parts:
        if name is not None and (spec or conversion):
            shown = "{" + name + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "") + "}"
            raise KoGPTError(f"{where}: the prompt may use only plain placeholders like {fields}, not {shown}")
    names = {name for _, name, _, _ in parts if name is not None}
    unknown = names - set(task.fields)
    if unknown or not names:
        raise KoGPTError(f"{where}: the {task.name} prompt may use only {fields}, and at least one of them")
    choices = template.choices
    if not isinstance(choices, dict) or set(choices) != set(task.labels):
        raise KoGPTError(f"{where}: 'choices' must map exactly the labels {', '.join(task.labels)} to text")
    if not all(isinstance(text, str) and text for text in choices.values()):
        raise KoGPTError(f"{where}: every choice must be a non-empty string")
    seen: dict[str, str] = {}
    for label, text in choices.items():
        check_text(where, text, f"choices.{label}")
        same = seen.setdefault(unicodedata.normalize("NFC", text), label)
        if same != label:
            raise KoGPTError(
                f"{where}: the choices of {same} and {label} are the same text ({text!r}); each needs its own"
            )
