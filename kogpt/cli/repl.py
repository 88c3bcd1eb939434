"""The interactive loop: the seed's three questions per turn, slash commands, streamed completions.

Enter submits; Meta+Enter (Esc, Enter) inserts a newline; a bracketed paste arrives whole.
Ctrl-C stops a generation or abandons a turn; Ctrl-D (or /quit) leaves.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO, TypeVar

from prompt_toolkit import PromptSession
from prompt_toolkit.application import get_app, run_in_terminal
from prompt_toolkit.document import Document
from prompt_toolkit.key_binding import KeyBindings

from kogpt import text as text_lib
from kogpt.api import KoGPT
from kogpt.cli.commands import CommandCompleter, Quit, Turn, edit_text, run_command
from kogpt.cli.history import open_history
from kogpt.cli.render import Renderer
from kogpt.cli.session import Session
from kogpt.errors import Interrupted, KoGPTError, Terminated
from kogpt.settings import (
    InputError,
    SamplingSettings,
    format_value,
    parse_max_length_answer,
    parse_setting,
)
from kogpt.transcript import Record, Transcript

log = logging.getLogger(__name__)
T = TypeVar("T")

TOOLBAR_COUNT_LIMIT = 20_000
GOODBYE = "terminate KakaoBrain Korean(hangul) Generative Pre-Training Model"


def key_bindings(on_error: Callable[[str], None]) -> KeyBindings:
    bindings = KeyBindings()

    @bindings.add("escape", "enter")
    def _newline(event) -> None:
        event.current_buffer.insert_text("\n")

    @bindings.add("c-x", "c-e")
    def _edit(event) -> None:
        """Edit the line in $VISUAL/$EDITOR, as /edit does: every failure is one line."""
        buffer = event.current_buffer

        async def edit() -> None:
            try:
                text = await run_in_terminal(lambda: edit_text(buffer.text), in_executor=True)
            except InputError as exc:
                message = str(exc)
                await run_in_terminal(lambda: on_error(message))
                return
            buffer.document = Document(text, len(text))

        event.app.create_background_task(edit())

    return bindings


class PlainInput:
    """Questions answered line by line from a pipe (stdin is not a terminal): no editing, no echo.

    Lines are read as bytes and decoded here, so a byte that is not UTF-8 is one line naming its
    offset in the stream, and the session goes on with the next line.
    """

    def __init__(self, stream: TextIO, out: TextIO) -> None:
        self._in = getattr(stream, "buffer", stream)
        self._out = out
        self._offset = 0

    def prompt(self, message: str, **_: Any) -> str:
        self._out.write(message)
        self._out.flush()
        line = self._in.readline()
        if not line:
            self._out.write("\n")
            raise EOFError
        start, self._offset = self._offset, self._offset + len(line)
        if isinstance(line, bytes):
            line = text_lib.decode(line, "standard input", start)
        return text_lib.check(line, "standard input").rstrip("\r\n")


class Repl(Session):
    """Ask `prompt>`, `temperature(0.8)>`, `max_length(128)>`; stream the completion; repeat.

    `settings` are the session's starting settings (what /reset returns to); `quick` skips the
    temperature and max_length questions. With `plain`, questions are read from a pipe.
    """

    def __init__(
        self,
        gpt: KoGPT,
        renderer: Renderer,
        settings: SamplingSettings | None = None,
        *,
        quick: bool = False,
        history_path: Path | None = None,
        transcript: Transcript | None = None,
        plain: PlainInput | None = None,
    ) -> None:
        super().__init__(renderer, settings, quick)
        self.gpt = gpt
        self.transcript = transcript or Transcript(None, renderer.warning)
        if plain is not None:
            self.prompts = self.answers = plain
        else:
            self.prompts = PromptSession(
                history=open_history(history_path, renderer.warning),
                completer=CommandCompleter(),
                key_bindings=key_bindings(renderer.error),
                bottom_toolbar=self.toolbar,
            )
            self.answers = PromptSession()  # the number questions keep out of the prompt history

    @property
    def context_length(self) -> int:
        return self.gpt.context_length

    def confirm(self, question: str) -> bool:
        return self.answers.prompt(question).strip().lower() in {"y", "yes"}

    def run(self) -> int:
        """Loop until Ctrl-D or /quit. Returns the exit code."""
        while True:
            try:
                turn = self.next_turn()
                if turn is not None:
                    self.complete(turn)
            except KeyboardInterrupt:  # Ctrl-C at a question abandons the turn
                continue
            except InputError as exc:  # a line that is not text: one line, and the next turn
                self.renderer.error(str(exc))
            except (EOFError, Quit):
                self.renderer.notice(GOODBYE)
                return 0

    def next_turn(self) -> Turn | None:
        line = text_lib.check(self.prompts.prompt("prompt> "), "the typed line")
        if line.startswith("/") and not line.startswith("//"):
            try:
                turn = run_command(self, line.strip())
            except InputError as exc:
                self.renderer.error(str(exc))
                return None
        elif not line.strip():
            return None
        else:
            turn = Turn(line[1:] if line.startswith("//") else line, self.settings, ask=not self.quick)
        if turn is not None and turn.ask:
            return self.ask_settings(turn)
        return turn

    def ask_settings(self, turn: Turn) -> Turn | None:
        """The seed's temperature and max_length questions, defaults from the current settings."""
        asked = turn.settings
        if asked.max_new_tokens is None:  # max_length is the question's answer, not yet a limit
            asked = dataclasses.replace(asked, max_length=self.gpt.context_length)
        try:
            prompt_tokens = len(self.gpt.fit_context(self.gpt.encode(turn.prompt), asked, announce=False))
        except KoGPTError as exc:
            self.renderer.error(str(exc))
            return None
        settings = turn.settings
        temperature = self.ask(f"temperature({format_value(settings.temperature)})> ", str(settings.temperature),
                               lambda text: parse_setting("temperature", text))
        settings = dataclasses.replace(settings, temperature=temperature)
        if settings.max_new_tokens is None:  # when set, max_new_tokens wins: no question
            context = self.gpt.context_length
            max_length = self.ask(f"max_length({settings.max_length})> ", str(settings.max_length),
                                  lambda text: parse_max_length_answer(text, prompt_tokens, context))
            settings = dataclasses.replace(settings, max_length=max_length)
        return dataclasses.replace(turn, settings=settings)

    def ask(self, question: str, default: str, parse: Callable[[str], T]) -> T:
        """Ask until the answer parses; an empty answer takes `default`."""
        while True:
            try:
                return parse(self.answers.prompt(question).strip() or default)
            except InputError as exc:
                self.renderer.error(str(exc))

    def complete(self, turn: Turn) -> None:
        """Stream every completion of the turn; Ctrl-C stops the generation, not the REPL."""
        shown = [-1]

        total = turn.settings.num_return_sequences

        def on_text(index: int, text: str) -> None:
            while shown[0] < index:  # every sequence in order, one that produced no text included
                shown[0] += 1
                if shown[0] > 0:
                    self.renderer.out.print()
                if total > 1:
                    self.renderer.sequence_header(shown[0], total)
                if turn.echo:
                    self.renderer.prompt_echo(turn.prompt)
            self.renderer.completion(text)

        count = turn.settings.num_return_sequences
        try:
            if count > 1 and self.renderer.out.is_terminal:  # watch them grow together
                shown[0] = count - 1  # `samples` prints every sequence at the end, empty ones too
                with self.renderer.samples(count, turn.prompt if turn.echo else None) as update:
                    records = self.gpt.complete(turn.prompt, turn.settings, update, interleaved=True)
            else:
                records = self.gpt.complete(turn.prompt, turn.settings, on_text)
        except Interrupted as stop:
            self.finish(stop.records)
            self.renderer.interrupted()
            return
        except Terminated as stop:  # SIGTERM/SIGHUP: keep the partial record, then leave
            self.finish(stop.records)
            raise
        except Exception as exc:  # one line and the session goes on, whatever failed
            if shown[0] >= 0:
                self.renderer.out.print()
            if not isinstance(exc, KoGPTError):
                log.debug("generation failed", exc_info=exc)
            self.renderer.error(str(exc) if isinstance(exc, KoGPTError) else f"error: {type(exc).__name__}: {exc}")
            return
        if shown[0] < len(records) - 1:  # the last sequences produced no text: show them all the same
            on_text(len(records) - 1, "")
        self.finish(records)
        last = records[-1]
        # The sequences are decoded together: the time is the longest one's.
        self.renderer.end_completion(sum(r.completion_tokens for r in records),
                                     max(r.seconds for r in records), last.finish_reason)

    def finish(self, records: list[Record]) -> None:
        self.records.extend(records)
        self.transcript.add(records)
        if records:
            self.last = records[-1]

    def toolbar(self) -> list[tuple[str, str]]:
        """Bottom toolbar: the live token count first (a narrow terminal cuts the end), then model,
        device, dtype, and the settings that differ from the defaults. It never raises."""
        try:
            parts = [self._token_count(get_app().current_buffer.text), *self._toolbar_parts()]
        except Exception as exc:  # a toolbar that raises locks up the session on every redraw
            log.debug("toolbar failed", exc_info=exc)
            parts = ["kogpt"]
        return [("class:bottom-toolbar", " " + " · ".join(parts) + " ")]

    def _token_count(self, text: str) -> str:
        context = self.gpt.context_length
        if len(text) > TOOLBAR_COUNT_LIMIT:  # a huge paste: do not tokenise it on every key press
            return f"{len(text)} characters, over {context} tokens"
        if not text or text.startswith("/"):
            return f"0/{context} tokens"
        try:
            return f"{len(self.gpt.encode(text))}/{context} tokens"
        except InputError:
            return "not valid text"

    def _toolbar_parts(self) -> list[str]:
        loaded = self.gpt.loaded
        s = self.settings
        length = f"max_new_tokens={s.max_new_tokens}" if s.max_new_tokens is not None else f"max_length={s.max_length}"
        changed = [f"{k}={format_value(v)}" for k, v in s.as_dict().items()
                   if k not in {"temperature", "max_length", "max_new_tokens"} and v != getattr(self.defaults, k)]
        dtype = str(loaded.dtype).removeprefix("torch.")
        if loaded.quantize != "none":
            dtype = f"{loaded.quantize} ({dtype})"
        parts = [Path(loaded.source).name, f"{loaded.device.type} {dtype}",
                 f"temperature={format_value(s.temperature)} {length}", *changed]
        if self.quick:
            parts.append("quick")
        return parts
