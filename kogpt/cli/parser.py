"""argparse with its errors in one line: the bad flag named, exit code 2, never the usage block.

Every kogpt command (`kogpt`, `kogpt eval`, `kogpt serve`, `kogpt cache`) builds its parser from
`Parser`. A subcommand comes first (`kogpt eval nsmc --model X`); a subcommand written after a flag
gets a line that shows the order the parser wants.
"""

from __future__ import annotations

import argparse
import re
import shlex
import sys
from pathlib import Path

SUBCOMMANDS = ("eval", "serve", "cache")

# argparse reads "-1" and "-.5" as values, not flags (no kogpt flag looks like a number).
_NUMBER = re.compile(r"-\d+(\.\d*)?|-\.\d+")


def command_name() -> str:
    """What the user typed to start kogpt: `python -m kogpt` or the `kogpt` script."""
    started = Path(sys.argv[0]) if sys.argv and sys.argv[0] else Path()
    return "python -m kogpt" if started.parts[-2:] == ("kogpt", "__main__.py") else "kogpt"


class Parser(argparse.ArgumentParser):
    """argparse, with every error in one line that names the bad flag (exit code 2).

    `top_level` marks the parser of plain `kogpt`: there a subcommand found after other words gets
    a hint with the order that works (`kogpt eval nsmc --model X`).
    """

    def __init__(self, *args, top_level: bool = False, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.top_level = top_level
        self._argv: list[str] = []

    def parse_args(self, args=None, namespace=None):  # type: ignore[override]
        self._argv = list(sys.argv[1:] if args is None else args)
        unknown = self.unknown_flag(self._argv)
        if unknown is not None:  # before argparse's "required" errors, which would hide it
            self.error(f"unrecognized argument {unknown}")
        return super().parse_args(self._argv, namespace)

    def unknown_flag(self, argv: list[str]) -> str | None:
        """The first word of `argv` that looks like a flag this parser does not have."""
        known = [option for action in self._actions for option in action.option_strings]
        for word in argv:
            if word == "--":
                return None
            if not word.startswith("-") or word == "-" or _NUMBER.fullmatch(word):
                continue
            name = word.split("=", 1)[0] if word.startswith("--") else word[:2]
            if name in known:
                continue
            if name.startswith("--") and self.allow_abbrev and any(k.startswith(name) for k in known):
                continue  # an abbreviation: argparse resolves it (or says it is ambiguous)
            return name
        return None

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"error: {message}{self.hint()}\n")

    def hint(self) -> str:
        argv = self._argv
        if self.top_level:
            at = next((i for i, word in enumerate(argv) if word in SUBCOMMANDS), None)
            if at is not None and at > 0:
                order = shlex.join([argv[at], *argv[at + 1 :], *argv[:at]])
                return f" (the subcommand comes first: {command_name()} {order})"
        return f" ({self.prog} --help lists the flags)"
