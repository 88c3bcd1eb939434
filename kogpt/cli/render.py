"""Everything the program prints, on one rich Console for model text and one for messages.

Model text is data, never markup: it is always printed as `rich.text.Text`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich import box
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text
from rich.theme import Theme

THEME = Theme(
    {
        "prompt.echo": "bold cyan",
        "completion": "default",
        "stats": "dim",
        "error": "bold red",
        "warning": "yellow",
        "notice": "dim italic",
    }
)


# C0 controls but tab and newline, DEL, and C1 controls: shown as visible symbols on a terminal, so
# model text can never move the cursor, clear the screen or retitle the window.
_CONTROL = {c: chr(0x2400 + c) for c in range(0x20) if chr(c) not in "\t\n"}
_CONTROL.update({0x7F: "\u2421", **{c: "\ufffd" for c in range(0x80, 0xA0)}})


def printable(text: str) -> str:
    """`text` with terminal control characters replaced by visible symbols (U+2400 block)."""
    return text.translate(_CONTROL)


class Renderer:
    """Output of the REPL. `out` carries model text; `err` carries status, stats and errors."""

    def __init__(self, out: Console | None = None, err: Console | None = None) -> None:
        self.out = out or Console(theme=THEME, highlight=False)
        self.err = err or Console(theme=THEME, highlight=False, stderr=True)

    def prompt_echo(self, text: str) -> None:
        self.out.print(Text(printable(text), style="prompt.echo"), end="", soft_wrap=True)

    def completion(self, text: str) -> None:
        self.out.print(Text(printable(text), style="completion"), end="", soft_wrap=True)

    def end_completion(self, tokens: int, seconds: float, reason: str | None) -> None:
        """Close the streamed text and show one dim line of figures."""
        self.out.print()
        self.stats(tokens, seconds, reason)
        self.out.print()

    def stats(self, tokens: int, seconds: float, reason: str | None) -> None:
        """One dim line on stderr: new tokens, seconds, tokens/s, and why it ended if not by length."""
        rate = f"{tokens / seconds:.2f} tokens/s" if seconds > 0 else "- tokens/s"
        ended = {"eos": ", ended by the model", "stop": ", stop sequence"}.get(reason or "", "")
        self.err.print(Text(f"[{tokens} tokens, {seconds:.2f} s, {rate}{ended}]", style="stats"))

    def sequence_header(self, index: int, total: int) -> None:
        self.err.print(Text(f"[{index + 1}/{total}]", style="stats"))

    @contextmanager
    def samples(self, total: int, prompt: str | None = None) -> Iterator[Callable[[int, str], None]]:
        """Show `total` completions growing together (a terminal: rich `Live`); yields `update(i, text)`.

        When they end, or are interrupted, each is printed whole, in order, as the one-by-one path does.
        """
        texts = [""] * total

        def view() -> Group:
            parts = []
            for index, text in enumerate(texts):
                body = Text()
                if prompt:
                    body.append(printable(prompt), style="prompt.echo")
                body.append(printable(text), style="completion")
                parts += [Text(f"[{index + 1}/{total}]", style="stats"), body]
            return Group(*parts)

        live = Live(view(), console=self.out, transient=True, refresh_per_second=10)

        def update(index: int, text: str) -> None:
            texts[index] += text
            live.update(view())

        finished = False
        try:
            with live:
                yield update
            finished = True
        finally:
            for index, text in enumerate(texts if finished or any(texts) else []):
                if index:
                    self.out.print()
                self.sequence_header(index, total)
                if prompt:
                    self.prompt_echo(prompt)
                self.completion(text)

    def settings_table(self, rows: list[tuple[str, str, str, str]]) -> None:
        table = Table("setting", "value", "default", "meaning", box=box.SIMPLE_HEAD)
        for name, value, default, meaning in rows:
            table.add_row(name, Text(value, style="bold" if value != default else ""), default, meaning)
        self.out.print(table)

    def help_table(self, rows: list[tuple[str, str]]) -> None:
        table = Table("command", "what it does", box=box.SIMPLE_HEAD)
        for command, meaning in rows:
            table.add_row(command, meaning)
        self.out.print(table)

    def interrupted(self) -> None:
        self.out.print()
        self.err.print(Text("[interrupted]", style="notice"))
        self.out.print()

    def error(self, message: str) -> None:
        # Control characters (a file name's escape codes) are shown, never sent to the terminal.
        self.err.print(Text(printable(message), style="error"), soft_wrap=True)  # one line, even when piped

    def warning(self, message: str) -> None:
        self.err.print(Text(printable(message), style="warning"), soft_wrap=True)  # one line, as errors are

    def notice(self, message: str) -> None:
        self.out.print(Text(message, style="notice"))

    @contextmanager
    def loading(self, what: str):
        """A spinner on stderr while `what` loads (a no-op when stderr is not a terminal)."""
        if not self.err.is_terminal:
            yield
            return
        with self.err.status(Text(f"Loading {what} ..."), spinner="dots"):
            yield

