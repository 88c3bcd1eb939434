"""The REPL's slash commands. Each handler takes the `Session` and the text after the command name.

A handler returns a `Turn` to generate (for /continue, /retry, /edit) or None; it reports bad
arguments by raising InputError, which the REPL shows as one line.
"""

from __future__ import annotations

import dataclasses
import os
import shlex
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from prompt_toolkit.completion import CompleteEvent, Completer, Completion
from prompt_toolkit.document import Document

from kogpt.cli.session import Session
from kogpt.settings import (
    HELP,
    PARSERS,
    InputError,
    SamplingSettings,
    format_value,
    parse_bool,
    parse_setting,
)
from kogpt.transcript import append_jsonl

QUICK_HELP = "on: skip the temperature and max_length questions and use the settings"
SETTING_NAMES = [*PARSERS, "quick"]


@dataclass
class Turn:
    """A prompt to complete with these settings. `echo` shows the prompt before the completion."""

    prompt: str
    settings: SamplingSettings
    echo: bool = True
    ask: bool = False  # ask the temperature and max_length questions first


class Quit(Exception):
    """/quit: leave the REPL."""


def cmd_set(repl: Session, args: str) -> None:
    name, _, value = args.strip().partition(" ")
    if not name or not value.strip():
        raise InputError("usage: /set NAME VALUE (see /show for the names)")
    if name == "quick":
        repl.quick = parse_bool(value)
    else:
        repl.settings = dataclasses.replace(repl.settings, **{name: parse_setting(name, value)})
    repl.renderer.notice(f"{name} = {format_value(repl.setting(name))}")
    if name in {"max_length", "max_new_tokens"} and repl.settings.max_new_tokens is not None:
        repl.renderer.notice("max_new_tokens is set, so it wins over max_length")


def cmd_show(repl: Session, args: str) -> None:
    rows = [(name, format_value(repl.setting(name)), format_value(repl.default(name)), HELP.get(name, QUICK_HELP))
            for name in SETTING_NAMES]
    repl.renderer.settings_table(rows)


def cmd_reset(repl: Session, args: str) -> None:
    repl.settings = dataclasses.replace(repl.defaults)
    repl.quick = repl.default_quick
    repl.renderer.notice("settings reset to their defaults")


def cmd_continue(repl: Session, args: str) -> Turn:
    last = repl.require_last()
    settings = repl.settings
    if settings.max_new_tokens is None:  # as many new tokens as the last turn could have
        budget = max(1, last.settings.get("max_length", settings.max_length) - last.prompt_tokens)
        settings = dataclasses.replace(settings, max_new_tokens=budget)
    return Turn(last.prompt + last.completion, settings, echo=False)


def cmd_retry(repl: Session, args: str) -> Turn:
    last = repl.require_last()
    settings = SamplingSettings(**{**last.settings, "seed": None})
    return Turn(last.prompt, settings)


def cmd_save(repl: Session, args: str) -> None:
    name = args.strip()
    if not name:
        raise InputError("usage: /save FILE")
    path = Path(name).expanduser()
    try:
        if path.exists():
            path.unlink()
        append_jsonl(path, repl.records)
    except OSError as exc:
        raise InputError(f"cannot save to {path}: {exc.strerror or exc}") from None
    repl.renderer.notice(f"saved {len(repl.records)} completions to {path}")


def cmd_edit(repl: Session, args: str) -> Turn | None:
    text = edit_text(repl.last.prompt if repl.last else "")
    if not text.strip():
        repl.renderer.notice("empty prompt: nothing to do")
        return None
    return Turn(text, repl.settings, ask=not repl.quick)


def edit_text(initial: str) -> str:
    """Open $VISUAL or $EDITOR on `initial` and return what was saved (never through a shell)."""
    editor = os.environ.get("VISUAL") or os.environ.get("EDITOR") or shutil.which("nano") or shutil.which("vi")
    if not editor:
        raise InputError("no editor: set $EDITOR")
    fd, name = tempfile.mkstemp(prefix="kogpt-", suffix=".txt")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(initial)
        try:
            code = subprocess.call([*shlex.split(editor), name])
        except OSError as exc:
            raise InputError(f"cannot run the editor {editor!r}: {exc.strerror or exc}") from None
        if code != 0:
            raise InputError(f"the editor {editor!r} exited with status {code}; prompt discarded")
        with open(name, encoding="utf-8", errors="replace") as f:
            return f.read().rstrip("\n")
    finally:
        os.unlink(name)


def cmd_help(repl: Session, args: str) -> None:
    repl.renderer.help_table([(f"/{name} {usage}".rstrip(), text) for name, (_, usage, text) in COMMANDS.items()])


def cmd_quit(repl: Session, args: str) -> None:
    raise Quit


Handler = Callable[[Session, str], "Turn | None"]
COMMANDS: dict[str, tuple[Handler, str, str]] = {
    "set": (cmd_set, "NAME VALUE", "change a setting (validated); /show lists them"),
    "show": (cmd_show, "", "every setting, its value and its default"),
    "reset": (cmd_reset, "", "settings back to their defaults"),
    "continue": (cmd_continue, "", "generate more from the end of the last completion"),
    "retry": (cmd_retry, "", "the last prompt again, with a new sample"),
    "edit": (cmd_edit, "", "write the prompt in $EDITOR (for long few-shot prompts)"),
    "save": (cmd_save, "FILE", "save this session's prompts, settings and completions as JSON Lines"),
    "help": (cmd_help, "", "this list; Meta+Enter (Esc, Enter) inserts a newline, //text sends /text"),
    "quit": (cmd_quit, "", "leave (Ctrl-D also does)"),
}


def run_command(repl: Session, line: str) -> Turn | None:
    """Run `/name args`; raise InputError for an unknown command or bad arguments."""
    name, _, args = line[1:].partition(" ")
    if name not in COMMANDS:
        raise InputError(f"unknown command /{name}; /help lists the commands")
    return COMMANDS[name][0](repl, args)


class CommandCompleter(Completer):
    """Tab completion of command names, and of setting names after `/set`.

    prompt_toolkit's NestedCompleter treats `/` as a word break, so `/s` would not complete.
    """

    def get_completions(self, document: Document, complete_event: CompleteEvent) -> Iterator[Completion]:
        text = document.text_before_cursor
        if not text.startswith("/") or "\n" in text:
            return
        words = text.split(" ")
        if len(words) == 1:
            candidates, word = [f"/{name}" for name in COMMANDS], words[0]
        elif len(words) == 2 and words[0] == "/set":
            candidates, word = SETTING_NAMES, words[1]
        else:
            return
        for candidate in candidates:
            if candidate.startswith(word):
                yield Completion(candidate, start_position=-len(word))
