"""What `kogpt eval` prints: a progress bar on stderr, the results (table or JSON) on stdout.

Data and model text are printed as `rich.text.Text`, never as markup.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table
from rich.text import Text

from kogpt.cli.render import printable
from kogpt.evaluate.fewshot import Prompt
from kogpt.evaluate.templates import Task, Template

METRIC_NAMES = {"accuracy": "accuracy", "f1": "F1", "macro_f1": "macro-F1"}


class RateColumn(ProgressColumn):
    """Items per second, averaged since the start."""

    def render(self, task) -> Text:
        rate = task.completed / task.elapsed if task.elapsed else 0.0
        return Text(f"{rate:.2f} items/s", style="progress.data.speed")


@contextmanager
def progress(console: Console, total: int, description: str) -> Iterator[Callable[[int], None]]:
    """A progress bar with items/s on `console`; yields `advance(n)`."""
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), RateColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console) as bar:
        task_id = bar.add_task(description, total=total)
        yield lambda n: bar.advance(task_id, n)


def show_prompt(console: Console, task: Task, template: Template, prompt: Prompt) -> None:
    """The template, then the first item's full prompt and the continuations that are scored.

    Control characters from the data or the template are shown as visible symbols, never sent to
    the terminal (an escape sequence in a review must not retitle the window or move the cursor).
    """
    console.print(Text(f"{task.name} template (headline metric: {METRIC_NAMES[task.metric]})", style="bold"))
    console.print(Text(printable(json.dumps(template.as_dict(), ensure_ascii=False, indent=2))), soft_wrap=True)
    console.print(Text(f"\nfirst item (line {prompt.example.line}), {len(prompt.demos)} demonstrations:", style="bold"))
    console.print(Text(printable(prompt.text)), soft_wrap=True)
    console.print(Text("\ncandidates:", style="bold"))
    for label in task.labels:
        console.print(Text(printable(f"  {label}: {template.choices[label]!r}")))


def print_json(console: Console, report: dict[str, Any]) -> None:
    """The report as one line of JSON."""
    console.out(json.dumps(report, ensure_ascii=False), highlight=False)


def print_table(console: Console, report: dict[str, Any]) -> None:
    """The headline metrics and settings, then the per-label counts."""
    summary = Table(title=Text(f"kogpt eval {report['task']}"), show_header=False)
    summary.add_column("what", style="bold")
    summary.add_column("value")
    for name, value in report["metrics"].items():
        summary.add_row(Text(METRIC_NAMES[name]), Text(f"{100 * value:.2f}"))
    counts = report["counts"]
    rows = {
        "items": f"{counts['items']} ({counts['correct']} correct, {report['data']['skipped']} skipped)"
        + (" — interrupted: only the items scored" if report.get("interrupted") else ""),
        "model": f"{report['model']} ({report['dtype']} on {report['device']})",
        "shots / seed": f"{report['shots']} / {report['seed']}",
        "data": f"{report['data']['path']} (sha256 {report['data']['sha256'][:12]})",
        "speed": f"{report['items_per_second']:.2f} items/s",
    }
    for name, value in rows.items():
        summary.add_row(Text(name), Text(printable(value)))
    console.print(summary)
    labels = Table(show_header=True)
    for column in ("label", "continuation", "gold", "predicted", "F1"):
        labels.add_column(column, justify="left" if column in ("label", "continuation") else "right")
    for label, row in report["labels"].items():
        labels.add_row(
            Text(label),
            Text(repr(row["continuation"])),
            str(row["gold"]),
            str(row["predicted"]),
            f"{100 * row['f1']:.2f}",
        )
    console.print(labels)
