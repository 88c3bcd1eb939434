"""The interactive loop: the seed's three questions per turn, streamed completions, Ctrl-C/Ctrl-D policy."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TextIO, TypeVar

from prompt_toolkit import PromptSession
from prompt_toolkit.history import FileHistory, History, InMemoryHistory

from kogpt.api import KoGPT
from kogpt.errors import KoGPTError
from kogpt.defaults import DEFAULT_MAX_LENGTH, DEFAULT_TEMPERATURE
from kogpt.generate import SamplingSettings
from kogpt.render import Renderer

log = logging.getLogger(__name__)
T = TypeVar("T")

GOODBYE = "terminate KakaoBrain Korean(hangul) Generative Pre-Training Model"


class InputError(ValueError):
    """An answer that cannot be used; its message is shown and the question is asked again."""


def parse_temperature(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise InputError(f"temperature must be a number, not {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise InputError(f"temperature must be a positive finite number, not {text}")
    return value


def parse_max_length(text: str, prompt_tokens: int, context: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise InputError(f"max_length must be a whole number, not {text!r}") from None
    if value <= prompt_tokens:
        raise InputError(
            f"max_length counts the prompt's {prompt_tokens} tokens: give more than {prompt_tokens}"
        )
    if value > context:
        raise InputError(f"max_length can be at most the model's context of {context} tokens")
    return value


class SafeFileHistory(FileHistory):
    """A FileHistory that warns once, through `on_error`, when it cannot read or write, and goes on."""

    def __init__(self, filename: str, on_error: Callable[[str], None]) -> None:
        super().__init__(filename)
        self._on_error = on_error
        self._warned = False

    def _warn(self, exc: OSError) -> None:
        if not self._warned:
            self._warned = True
            self._on_error(f"cannot save the prompt history to {self.filename}: {exc.strerror or exc}")

    def load_history_strings(self) -> Iterable[str]:
        try:
            return list(super().load_history_strings())
        except OSError as exc:
            self._warn(exc)
            return []

    def store_string(self, string: str) -> None:
        try:
            super().store_string(string)
        except OSError as exc:
            self._warn(exc)


def open_history(path: Path | None, on_error: Callable[[str], None]) -> History:
    if path is None:
        return InMemoryHistory()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        on_error(f"cannot save the prompt history in {path.parent}: {exc.strerror or exc}")
        return InMemoryHistory()
    return SafeFileHistory(str(path), on_error)


class PlainInput:
    """Questions answered line by line from a pipe (stdin is not a terminal): no editing, no echo."""

    def __init__(self, stream: TextIO, out: TextIO) -> None:
        self._in = stream
        self._out = out

    def prompt(self, message: str) -> str:
        self._out.write(message)
        self._out.flush()
        line = self._in.readline()
        if not line:
            self._out.write("\n")
            raise EOFError
        return line.rstrip("\n")


class Repl:
    """Ask `prompt>`, `temperature(0.8)>`, `max_length(128)>`; stream the completion; repeat.

    With `plain` (a PlainInput), questions are read from a pipe instead of a prompt_toolkit session.
    """

    def __init__(
        self,
        gpt: KoGPT,
        renderer: Renderer,
        history_path: Path | None = None,
        plain: PlainInput | None = None,
    ) -> None:
        self.gpt = gpt
        self.renderer = renderer
        if plain is not None:
            self.prompts = self.answers = plain
        else:
            self.prompts = PromptSession(history=open_history(history_path, renderer.warning))
            self.answers = PromptSession()  # the number questions keep out of the prompt history

    def run(self) -> int:
        """Loop until Ctrl-D. Returns the exit code."""
        while True:
            try:
                turn = self.ask_turn()
            except KeyboardInterrupt:  # Ctrl-C at a question abandons the turn
                continue
            except EOFError:
                self.renderer.notice(GOODBYE)
                return 0
            if turn is not None:
                self.complete(*turn)

    def ask_turn(self) -> tuple[str, SamplingSettings] | None:
        prompt = self.prompts.prompt("prompt> ")
        if not prompt.strip():
            return None
        prompt_tokens = len(self.gpt.encode(prompt))
        context = self.gpt.context_length
        if prompt_tokens >= context:
            self.renderer.error(f"the prompt is {prompt_tokens} tokens; the model's context is {context}")
            return None
        temperature = self.ask(f"temperature({DEFAULT_TEMPERATURE})> ", str(DEFAULT_TEMPERATURE), parse_temperature)
        max_length = self.ask(
            f"max_length({DEFAULT_MAX_LENGTH})> ",
            str(DEFAULT_MAX_LENGTH),
            lambda text: parse_max_length(text, prompt_tokens, context),
        )
        return prompt, SamplingSettings(temperature=temperature, max_length=max_length)

    def ask(self, question: str, default: str, parse: Callable[[str], T]) -> T:
        """Ask until the answer parses; an empty answer takes `default`."""
        while True:
            answer = self.answers.prompt(question).strip() or default
            try:
                return parse(answer)
            except InputError as exc:
                self.renderer.error(str(exc))

    def complete(self, prompt: str, settings: SamplingSettings) -> None:
        """Echo the prompt and stream its completion; Ctrl-C stops the generation, not the REPL."""
        self.renderer.prompt_echo(prompt)
        last = None
        try:
            for chunk in self.gpt.stream(prompt, settings):
                self.renderer.completion(chunk.text)
                last = chunk
        except KeyboardInterrupt:
            self.renderer.interrupted()
            return
        except KoGPTError as exc:
            self.renderer.out.print()
            self.renderer.error(str(exc))
            return
        if last is not None:
            self.renderer.end_completion(last.tokens, last.seconds, last.finish_reason)
