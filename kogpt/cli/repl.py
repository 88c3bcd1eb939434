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
from prompt_toolkit.application import get_app
from prompt_toolkit.key_binding import KeyBindings

from kogpt.api import KoGPT
from kogpt.cli.commands import CommandCompleter, Quit, Turn, run_command
from kogpt.cli.history import open_history
from kogpt.cli.render import Renderer
from kogpt.cli.session import Session
from kogpt.errors import Interrupted, KoGPTError
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


def key_bindings() -> KeyBindings:
    bindings = KeyBindings()

    @bindings.add("escape", "enter")
    def _newline(event) -> None:
        event.current_buffer.insert_text("\n")

    return bindings


class PlainInput:
    """Questions answered line by line from a pipe (stdin is not a terminal): no editing, no echo."""

    def __init__(self, stream: TextIO, out: TextIO) -> None:
        self._in = stream
        self._out = out

    def prompt(self, message: str, **_: Any) -> str:
        self._out.write(message)
        self._out.flush()
        line = self._in.readline()
        if not line:
            self._out.write("\n")
            raise EOFError
        return line.rstrip("\n")


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
                key_bindings=key_bindings(),
                bottom_toolbar=self.toolbar,
                enable_open_in_editor=True,
            )
            self.answers = PromptSession()  # the number questions keep out of the prompt history

    def run(self) -> int:
        """Loop until Ctrl-D or /quit. Returns the exit code."""
        while True:
            try:
                turn = self.next_turn()
                if turn is not None:
                    self.complete(turn)
            except KeyboardInterrupt:  # Ctrl-C at a question abandons the turn
                continue
            except (EOFError, Quit):
                self.renderer.notice(GOODBYE)
                return 0

    def next_turn(self) -> Turn | None:
        line = self.prompts.prompt("prompt> ")
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
        try:
            prompt_tokens = len(self.gpt.fit_context(self.gpt.encode(turn.prompt), turn.settings))
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
            answer = self.answers.prompt(question).strip() or default
            try:
                return parse(answer)
            except InputError as exc:
                self.renderer.error(str(exc))

    def complete(self, turn: Turn) -> None:
        """Stream every completion of the turn; Ctrl-C stops the generation, not the REPL."""
        shown = [-1]

        def on_text(index: int, text: str) -> None:
            if index != shown[0]:
                if index > 0:
                    self.renderer.out.print()
                    self.renderer.sequence_header(index, turn.settings.num_return_sequences)
                if turn.echo:
                    self.renderer.prompt_echo(turn.prompt)
                shown[0] = index
            self.renderer.completion(text)

        try:
            records = self.gpt.complete(turn.prompt, turn.settings, on_text)
        except Interrupted as stop:
            self.finish(stop.records)
            self.renderer.interrupted()
            return
        except Exception as exc:  # one line and the session goes on, whatever failed
            if shown[0] >= 0:
                self.renderer.out.print()
            if not isinstance(exc, KoGPTError):
                log.debug("generation failed", exc_info=exc)
            self.renderer.error(str(exc) if isinstance(exc, KoGPTError) else f"error: {type(exc).__name__}: {exc}")
            return
        if shown[0] < 0 and turn.echo:  # nothing was generated at all
            self.renderer.prompt_echo(turn.prompt)
        self.finish(records)
        last = records[-1]
        self.renderer.end_completion(sum(r.completion_tokens for r in records),
                                     sum(r.seconds for r in records), last.finish_reason)

    def finish(self, records: list[Record]) -> None:
        self.records.extend(records)
        self.transcript.add(records)
        if records:
            self.last = records[-1]

    def toolbar(self) -> list[tuple[str, str]]:
        """Bottom toolbar: model, device, dtype, the settings that differ from the defaults, live tokens."""
        loaded = self.gpt.loaded
        text = get_app().current_buffer.text
        if len(text) > TOOLBAR_COUNT_LIMIT:  # a huge paste: do not tokenise it on every key press
            count = f"{len(text)} characters, over {self.gpt.context_length} tokens"
        else:
            tokens = len(self.gpt.encode(text)) if text and not text.startswith("/") else 0
            count = f"{tokens}/{self.gpt.context_length} tokens"
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
        parts.append(count)
        return [("class:bottom-toolbar", " " + " · ".join(parts) + " ")]
