"""Everything the program prints, on one rich Console for model text and one for messages.

Model text is data, never markup: it is always printed as `rich.text.Text`.
"""

from __future__ import annotations

from contextlib import contextmanager

from rich.console import Console
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


class Renderer:
    """Output of the REPL. `out` carries model text; `err` carries status, stats and errors."""

    def __init__(self, out: Console | None = None, err: Console | None = None) -> None:
        self.out = out or Console(theme=THEME, highlight=False)
        self.err = err or Console(theme=THEME, highlight=False, stderr=True)

    def prompt_echo(self, text: str) -> None:
        self.out.print(Text(text, style="prompt.echo"), end="", soft_wrap=True)

    def completion(self, text: str) -> None:
        self.out.print(Text(text, style="completion"), end="", soft_wrap=True)

    def end_completion(self, tokens: int, seconds: float, reason: str | None) -> None:
        """Close the streamed text and show one dim line of figures."""
        self.out.print()
        rate = f"{tokens / seconds:.2f} tokens/s" if seconds > 0 else "- tokens/s"
        ended = {"eos": ", ended by the model", "stop": ", stop sequence"}.get(reason or "", "")
        self.err.print(Text(f"[{tokens} tokens, {seconds:.2f} s, {rate}{ended}]", style="stats"))
        self.out.print()

    def interrupted(self) -> None:
        self.out.print()
        self.err.print(Text("[interrupted]", style="notice"))
        self.out.print()

    def error(self, message: str) -> None:
        self.err.print(Text(message, style="error"), soft_wrap=True)  # one line, even when piped

    def warning(self, message: str) -> None:
        self.err.print(Text(message, style="warning"))

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

