"""Sampling settings: the dataclass, and the parsing and validation of each setting from text.

The same parsers serve the REPL's questions, `/set NAME VALUE`, the command-line flags and the
per-line settings of a prompts file, so a value is judged the same way wherever it is typed.
"""

from __future__ import annotations

import math
import shlex
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from kogpt import text as text_lib
from kogpt.defaults import DEFAULT_MAX_LENGTH, DEFAULT_TEMPERATURE
from kogpt.errors import InputError
from kogpt.messages import shown

MAX_TEMPERATURE = 100.0
MAX_SEQUENCES = 16
MAX_SEED = 2**32 - 1
MAX_TOKENS = 1_000_000  # the static bound; the model's context is checked by `context.check_context`
# Below this a temperature means greedy decoding, as in vLLM (its _SAMPLING_EPS): logits divided by
# 1e-38 overflow float32 and sampling fails. Below MIN_REPETITION_PENALTY a penalty overflows the same way.
MIN_TEMPERATURE = 1e-5
MIN_REPETITION_PENALTY = 0.01


@dataclass
class SamplingSettings:
    """How to sample completions. `temperature == 0` means greedy decoding.

    `max_length` counts the prompt's tokens, as in the original KoGPT CLI; `max_new_tokens`, when
    set, counts the completion alone and wins over `max_length`. With `truncate`, a prompt too long
    for the context keeps its last tokens, leaving room for `max_new_tokens`, instead of being refused.
    Build checked settings with `check_settings`; `kogpt.context.fit_prompt` checks a prompt against
    the context.
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


@dataclass(frozen=True)
class Spec:
    """What a setting accepts: its Python type, its range, and whether `None` (unset) is allowed."""

    kind: type
    low: float = 0
    high: float = 0
    low_open: bool = False
    optional: bool = False


SPECS: dict[str, Spec] = {
    "temperature": Spec(float, 0, MAX_TEMPERATURE),
    "max_length": Spec(int, 1, MAX_TOKENS),
    "max_new_tokens": Spec(int, 1, MAX_TOKENS, optional=True),
    "top_p": Spec(float, 0, 1, low_open=True),
    "top_k": Spec(int, 0, MAX_TOKENS),
    "repetition_penalty": Spec(float, MIN_REPETITION_PENALTY, 100),
    "no_repeat_ngram_size": Spec(int, 0, 1000),
    "seed": Spec(int, 0, MAX_SEED, optional=True),
    "stop": Spec(list),
    "num_return_sequences": Spec(int, 1, MAX_SEQUENCES),
    "truncate": Spec(bool),
}


def _number_text(x: float) -> str:
    """A limit as people write it: integers in full (4294967295, 1000000), never 4.29497e+09."""
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


def _no_setting(name: str, names=None) -> InputError:
    return InputError(f"no setting {shown(name)}; settings: {', '.join(names or SPECS)}")


def sequence_seed(base: int, index: int) -> int:
    """The seed of sequence `index` of a request seeded `base`: `base + index`, wrapped into the
    seeds one can type (0 .. MAX_SEED), so every sequence can be reproduced alone."""
    return (base + index) % (MAX_SEED + 1)


def check_value(name: str, value: Any) -> Any:
    """The value of setting `name` given as a Python (or JSON) value, checked and normalised.

    Every way in ends here: flags, `/set` and the questions (after `parse_setting` has read the
    text), JSON fields, and the API. A JSON value is taken as the type it is: `"0.5"` is not a
    number, `5.0` is not a whole number, `stop` is a string or a list of strings.
    """
    spec = SPECS.get(name)
    if spec is None:
        raise _no_setting(name)
    if value is None and spec.optional:
        return None
    if spec.kind is bool:
        if not isinstance(value, bool):
            raise InputError(f"{name} must be on or off (true or false), not {shown(value)}")
        return value
    if spec.kind is list:
        return _check_stops(value)
    if isinstance(value, bool) or not isinstance(value, (int, float) if spec.kind is float else int):
        what = "a whole number" if spec.kind is int else "a number"
        unset = " or none" if spec.optional else ""
        raise InputError(f"{name} must be {what}{unset}, not {shown(value)}")
    if spec.kind is float:
        if not math.isfinite(value if isinstance(value, float) else 0):
            raise InputError(f"{name} must be a finite number, not {value}")
        value = float(value) if isinstance(value, float) or abs(value) <= 2**53 else value  # huge ints: refused below
    if value < spec.low or (spec.low_open and value == spec.low) or value > spec.high:
        low = ("more than " if spec.low_open else "at least ") + _number_text(spec.low)
        raise InputError(f"{name} must be {low} and at most {_number_text(spec.high)}, not {shown(value)}")
    if spec.kind is float:
        value = float(value)
    if name == "temperature" and value < MIN_TEMPERATURE:
        return 0.0  # greedy, as vLLM does
    return value


def _check_stops(value: Any) -> list[str]:
    stops = [value] if isinstance(value, str) else value
    if not isinstance(stops, (list, tuple)) or not all(isinstance(s, str) for s in stops):
        raise InputError(f"stop must be a string or a list of strings, not {shown(value)}")
    for stop in stops:
        text_lib.check(stop, "stop")
        if not stop:
            raise InputError("stop: a stop sequence cannot be empty (none clears them)")
    return list(stops)


def check_settings(settings: SamplingSettings | None = None, **overrides: Any) -> SamplingSettings:
    """`settings` (default: the defaults) with `overrides`, every field checked by `check_value`."""
    if settings is None:
        settings = SamplingSettings()
    elif not isinstance(settings, SamplingSettings):
        raise InputError(f"settings must be a SamplingSettings, not {type(settings).__name__}")
    for name in overrides:
        if name not in SPECS:
            raise _no_setting(name)
    values = {**settings.as_dict(), **overrides}
    return SamplingSettings(**{name: check_value(name, value) for name, value in values.items()})


def _read_number(name: str, text: str, kind: type) -> Any:
    try:
        value = kind(text)
    except ValueError:
        what = "a whole number" if kind is int else "a number"
        raise InputError(f"{name} must be {what}, not {shown(text)}") from None
    if kind is float and not math.isfinite(value):
        raise InputError(f"{name} must be a finite number, not {shown(text, quote=False)}")
    return value


def parse_bool(text: str, name: str = "truncate") -> bool:
    value = text.strip().lower()
    if value in {"on", "true", "yes", "1"}:
        return True
    if value in {"off", "false", "no", "0"}:
        return False
    raise InputError(f"{name} must be on or off, not {shown(text)}")


def parse_stops(text: str) -> list[str]:
    """Stop sequences as typed after `/set stop`: words split like a shell's, quotes grouping
    spaces, then backslash escapes decoded in each (`\\n` is a newline, quoted or not, as in
    `--stop`); `none` clears them."""
    if text.strip().lower() in {"none", "off", ""}:
        return []
    lexer = shlex.shlex(text, posix=True)
    lexer.whitespace_split = True
    lexer.commenters = ""
    lexer.escape = ""  # backslashes are kept for decode_escapes, so \n means the same everywhere
    try:
        words = list(lexer)
    except ValueError as exc:
        raise InputError(f"stop: {exc}") from None
    return [decode_escapes(w) for w in words]


def decode_escapes(text: str) -> str:
    """Turn backslash escapes (\\n, \\t, \\u00a0) into characters; other text is kept as it is."""
    try:
        # Non-Latin-1 text (Hangul) survives as \\u escapes, so only the user's escapes are decoded.
        with warnings.catch_warnings():  # an unknown escape (\\q) is kept as typed, without a warning
            warnings.simplefilter("ignore", DeprecationWarning)
            decoded = text.encode("latin-1", "backslashreplace").decode("unicode_escape")
    except UnicodeDecodeError as exc:
        raise InputError(f"bad escape in {shown(text)}: {exc.reason}") from None
    return decoded


def _text_parser(name: str) -> Callable[[str], Any]:
    spec = SPECS[name]
    if spec.kind is bool:
        return lambda t: parse_bool(t, name)
    if spec.kind is list:
        return parse_stops

    def parse(t: str) -> Any:
        if spec.optional and t.strip().lower() in {"none", "off", ""}:
            return None
        return _read_number(name, t, spec.kind)

    return parse


PARSERS: dict[str, Callable[[str], Any]] = {name: _text_parser(name) for name in SPECS}

HELP: dict[str, str] = {
    "temperature": "sampling temperature; 0 (or below 1e-5) = greedy decoding",
    "max_length": "total tokens, prompt included (the original's meaning)",
    "max_new_tokens": "tokens of completion; wins over max_length when set (none = unset)",
    "top_p": "nucleus sampling: keep the smallest set of tokens with this much probability (1 = off)",
    "top_k": "sample from the k most likely tokens (0 = off)",
    "repetition_penalty": "penalise tokens already present (1 = off, 1.1-1.3 typical)",
    "no_repeat_ngram_size": "never repeat an n-gram of this size (0 = off)",
    "seed": "random seed for reproducible samples (none = a new one each time)",
    "stop": 'stop sequences, quoted, escapes allowed: "\\n\\n" "###" (none = off)',
    "num_return_sequences": "completions per prompt",
    "truncate": "on: keep the end of a prompt too long for the context, with room for max_new_tokens",
}

def parse_setting(name: str, text: str) -> Any:
    """The value of setting `name` typed as `text` (a flag, `/set`, a question): read from text,
    then checked by `check_value`; raises InputError with the reason."""
    if name not in PARSERS:
        raise _no_setting(name)
    return check_value(name, PARSERS[name](text_lib.check(text, name)))


def parse_max_length_answer(text: str, prompt_tokens: int, context: int) -> int:
    """The `max_length` question: more than the prompt's tokens, at most the context."""
    value = check_value("max_length", _read_number("max_length", text_lib.check(text, "max_length"), int))
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

