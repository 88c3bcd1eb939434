"""Sampling settings: the dataclass, and the parsing and validation of each setting from text.

The same parsers serve the REPL's questions, `/set NAME VALUE`, the command-line flags and the
per-line settings of a prompts file, so a value is judged the same way wherever it is typed.
"""

from __future__ import annotations

import math
import shlex
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from kogpt.defaults import DEFAULT_MAX_LENGTH, DEFAULT_TEMPERATURE

MAX_TEMPERATURE = 100.0
MAX_SEQUENCES = 16
MAX_SEED = 2**32 - 1


class InputError(ValueError):
    """A value that cannot be used; the message says why, in one line."""


@dataclass
class SamplingSettings:
    """How to sample completions. `temperature == 0` means greedy decoding.

    `max_length` counts the prompt's tokens, as in the original KoGPT CLI; `max_new_tokens`, when
    set, counts the completion alone and wins over `max_length`. With `truncate`, a prompt too long
    for the context keeps its last tokens instead of being refused.
    """

    temperature: float = DEFAULT_TEMPERATURE
    max_length: int = DEFAULT_MAX_LENGTH
    max_new_tokens: int | None = None
    top_p: float = 1.0
    top_k: int = 0
    repetition_penalty: float = 1.0
    no_repeat_ngram_size: int = 0
    seed: int | None = None
    stop: list[str] = field(default_factory=list)
    num_return_sequences: int = 1
    truncate: bool = False

    def as_dict(self) -> dict:
        return asdict(self)

    def new_tokens(self, prompt_tokens: int, context: int) -> int:
        """How many tokens to generate for a prompt of `prompt_tokens` within `context` positions."""
        wanted = self.max_new_tokens if self.max_new_tokens is not None else self.max_length - prompt_tokens
        return max(0, min(wanted, context - prompt_tokens))

    def generate_kwargs(self) -> dict:
        """Keyword arguments for `transformers`' `generate` (sampling and penalties).

        Float settings are passed as floats: transformers refuses `temperature=2`, a valid value.
        """
        greedy = self.temperature == 0
        kwargs: dict = {"do_sample": not greedy}
        if not greedy:
            kwargs.update(temperature=float(self.temperature), top_p=float(self.top_p), top_k=self.top_k)
        if self.repetition_penalty != 1.0:
            kwargs["repetition_penalty"] = float(self.repetition_penalty)
        if self.no_repeat_ngram_size:
            kwargs["no_repeat_ngram_size"] = self.no_repeat_ngram_size
        return kwargs


def _number(name: str, text: str, kind: type) -> Any:
    try:
        value = kind(text)
    except ValueError:
        what = "a whole number" if kind is int else "a number"
        raise InputError(f"{name} must be {what}, not {text!r}") from None
    if kind is float and not math.isfinite(value):
        raise InputError(f"{name} must be a finite number, not {text}")
    return value


def _ranged(name: str, kind: type, low: float, high: float, low_open: bool = False) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        value = _number(name, text, kind)
        if value < low or (low_open and value == low) or value > high:
            lo = f"more than {low:g}" if low_open else f"at least {low:g}"
            raise InputError(f"{name} must be {lo} and at most {high:g}, not {text}")
        return value

    return parse


def _optional(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    def wrapped(text: str) -> Any:
        return None if text.strip().lower() in {"none", "off", ""} else parse(text)

    return wrapped


def parse_bool(text: str) -> bool:
    value = text.strip().lower()
    if value in {"on", "true", "yes", "1"}:
        return True
    if value in {"off", "false", "no", "0"}:
        return False
    raise InputError(f"expected on or off, not {text!r}")


def parse_stops(text: str) -> list[str]:
    """Stop sequences, shell-quoted, with backslash escapes: `"\\n\\n" "###"`; `none` clears them."""
    if text.strip().lower() in {"none", "off", ""}:
        return []
    try:
        words = shlex.split(text)
    except ValueError as exc:
        raise InputError(f"stop: {exc}") from None
    return [decode_escapes(w) for w in words if w]


def decode_escapes(text: str) -> str:
    """Turn backslash escapes (\\n, \\t, \\u00a0) into characters; other text is kept as it is."""
    try:
        # Non-Latin-1 text (Hangul) survives as \\u escapes, so only the user's escapes are decoded.
        return text.encode("latin-1", "backslashreplace").decode("unicode_escape")
    except UnicodeDecodeError as exc:
        raise InputError(f"bad escape in {text!r}: {exc.reason}") from None


PARSERS: dict[str, Callable[[str], Any]] = {
    "temperature": _ranged("temperature", float, 0.0, MAX_TEMPERATURE),
    "max_length": _ranged("max_length", int, 1, 1_000_000),
    "max_new_tokens": _optional(_ranged("max_new_tokens", int, 1, 1_000_000)),
    "top_p": _ranged("top_p", float, 0.0, 1.0, low_open=True),
    "top_k": _ranged("top_k", int, 0, 1_000_000),
    "repetition_penalty": _ranged("repetition_penalty", float, 0.0, 100.0, low_open=True),
    "no_repeat_ngram_size": _ranged("no_repeat_ngram_size", int, 0, 1000),
    "seed": _optional(_ranged("seed", int, 0, MAX_SEED)),
    "stop": parse_stops,
    "num_return_sequences": _ranged("num_return_sequences", int, 1, MAX_SEQUENCES),
    "truncate": parse_bool,
}

HELP: dict[str, str] = {
    "temperature": "sampling temperature; 0 = greedy decoding",
    "max_length": "total tokens, prompt included (the original's meaning)",
    "max_new_tokens": "tokens of completion; wins over max_length when set (none = unset)",
    "top_p": "nucleus sampling: keep the smallest set of tokens with this much probability (1 = off)",
    "top_k": "sample from the k most likely tokens (0 = off)",
    "repetition_penalty": "penalise tokens already present (1 = off, 1.1-1.3 typical)",
    "no_repeat_ngram_size": "never repeat an n-gram of this size (0 = off)",
    "seed": "random seed for reproducible samples (none = a new one each time)",
    "stop": 'stop sequences, quoted, escapes allowed: "\\n\\n" "###" (none = off)',
    "num_return_sequences": "completions per prompt",
    "truncate": "on: keep the end of a prompt too long for the context instead of refusing it",
}

def parse_setting(name: str, text: str) -> Any:
    """The value of setting `name` typed as `text`; raises InputError with the reason."""
    if name not in PARSERS:
        raise InputError(f"no setting {name!r}; settings: {', '.join(PARSERS)}")
    return PARSERS[name](text)


def parse_max_length_answer(text: str, prompt_tokens: int, context: int) -> int:
    """The `max_length` question: more than the prompt's tokens, at most the context."""
    value = _number("max_length", text, int)
    if value <= prompt_tokens:
        raise InputError(f"max_length counts the prompt's {prompt_tokens} tokens: give more than {prompt_tokens}")
    if value > context:
        raise InputError(f"max_length can be at most the model's context of {context} tokens")
    return value


def format_value(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, list):
        return " ".join(repr(v) for v in value) or "none"
    return str(value)
