"""The REPL's slash commands. Each handler takes the `Session` and the text after the command name.

A handler returns a `Turn` to generate (for /continue, /retry, /edit) or None; it reports bad
arguments by raising InputError, which the REPL shows as one line.
"""

from __future__ import annotations

import contextlib
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

from kogpt import text as text_lib
from kogpt.cli.session import Session
from kogpt.context import check_context
from kogpt.settings import (
    HELP,
    PARSERS,
    InputError,
    SamplingSettings,
    format_value,
    parse_bool,
    parse_setting,
)
from kogpt.transcript import write_jsonl

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
    if name not in SETTING_NAMES:
        raise InputError(f"no setting {name!r}; settings: {', '.join(SETTING_NAMES)}")
    if name == "quick":
        repl.quick = parse_bool(value, "quick")
    else:
        settings = dataclasses.replace(repl.settings, **{name: parse_setting(name, value)})
        if repl.context_length is not None:
            check_context(settings, repl.context_length)
        repl.settings = settings
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
    # Said, not silent: a seed given with --seed or /set is not reused, and a /set made since is not applied.
    seed = f" (the last turn used seed {last.seed})" if last.seed is not None else ""
    repl.renderer.notice(f"retrying with the last turn's settings and a new random seed{seed}")
    return Turn(last.prompt, settings)


FORCE = ("--force", "-f")


def cmd_save(repl: Session, args: str) -> None:
    """`/save FILE [--force]`: FILE is one shell word (quote a name with spaces); an existing file
    is replaced only after a yes to the question, or with --force; a non-regular file never."""
    try:
        words = shlex.split(args)
    except ValueError as exc:
        raise InputError(f"/save: {exc} (quote a name with spaces: /save \"my file.jsonl\")") from None
    force = any(word in FORCE for word in words)
    names = [word for word in words if word not in FORCE]
    if len(names) != 1:
        raise InputError("usage: /save FILE [--force] (quote a name with spaces)")
    path = Path(names[0]).expanduser()
    if path.is_file() and not path.is_symlink() and not force:
        if not repl.confirm(f"{path} exists: replace it? [y/N] "):
            repl.renderer.notice("not saved (/save FILE --force replaces without asking)")
            return
    try:
        write_jsonl(path, repl.records)
    except OSError as exc:
        raise InputError(f"cannot save to {path}: {exc.strerror or exc}; nothing was changed") from None
    count = len(repl.records)
    repl.renderer.notice(f"saved {count} completion{'' if count == 1 else 's'} to {path}")


def cmd_edit(repl: Session, args: str) -> Turn | None:
    text = edit_text(repl.last.prompt if repl.last else "")
    if not text.strip():
        repl.renderer.notice("empty prompt: nothing to do")
        return None
    return Turn(text, repl.settings, ask=not repl.quick)


def editor_command() -> list[str]:
    """$VISUAL or $EDITOR split like a shell's words (never run by a shell), or nano, or vi."""
    for variable in ("VISUAL", "EDITOR"):
        value = os.environ.get(variable)
        if value is None or not value.strip():
            continue
        try:
            return shlex.split(value)
        except ValueError as exc:
            raise InputError(f"${variable} ({value!r}) cannot be read as a command: {exc}") from None
    fallback = shutil.which("nano") or shutil.which("vi")
    if not fallback:
        raise InputError("no editor: set $EDITOR")
    return [fallback]


def edit_text(initial: str) -> str:
    """Open the editor on `initial` and return what was saved; every failure is an InputError."""
    command = editor_command()
    shown = shlex.join(command)
    try:
        fd, name = tempfile.mkstemp(prefix="kogpt-", suffix=".txt")
    except OSError as exc:
        raise InputError(f"cannot make a file to edit: {exc.strerror or exc}") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(initial)
        try:
            code = subprocess.call([*command, name])
        except OSError as exc:
            raise InputError(f"cannot run the editor {shown!r}: {exc.strerror or exc}") from None
        if code != 0:
            how = f"was stopped by signal {-code}" if code < 0 else f"exited with status {code}"
            raise InputError(f"the editor {shown!r} {how}; prompt discarded")
        with open(name, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise InputError(f"cannot read back the edited prompt: {exc.strerror or exc}") from None
    finally:
        with contextlib.suppress(OSError):
            os.unlink(name)
    return text_lib.decode(data, "the edited prompt").rstrip("\n")


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
    "retry": (cmd_retry, "", "the last prompt again with its own settings and a new random seed (a later /set is not applied)"),
    "edit": (cmd_edit, "", "write the prompt in $EDITOR (for long few-shot prompts)"),
    "save": (cmd_save, "FILE [--force]", "save this session's completions as JSON Lines (asks before replacing FILE)"),
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
