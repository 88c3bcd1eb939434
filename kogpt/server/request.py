"""The body of `POST /v1/completions`: read within a size limit, decoded, and checked field by field.

A prompt is text, or token ids (as vLLM and OpenAI take them), each id checked against the vocabulary.

Numbers go through the parsers of `kogpt.settings`, the ones behind the command line's flags and the
REPL's `/set`, so a value is judged the same way wherever it is typed. OpenAI fields kogpt does not
implement are accepted at their neutral value only; anything else is refused, never ignored.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any

from starlette.requests import ClientDisconnect, Request

from kogpt import text as text_lib
from kogpt.errors import InputError
from kogpt.messages import shown
from kogpt.engine import Extras
from kogpt.server.errors import APIError, bad_request
from kogpt.server.options import EXTRA_FIELDS, parse_best_of, parse_extras, scores_only
from kogpt.settings import MAX_SEQUENCES, SPECS, SamplingSettings, check_value

MAX_BODY_BYTES = 1 << 20
MAX_CHOICES = MAX_SEQUENCES  # completions in one request (prompts x n), as n alone: 16
MAX_STOPS = 16

SETTINGS = {  # API field -> kogpt setting
    "max_tokens": "max_new_tokens",
    "temperature": "temperature",
    "top_p": "top_p",
    "top_k": "top_k",
    "repetition_penalty": "repetition_penalty",
    "no_repeat_ngram_size": "no_repeat_ngram_size",
    "seed": "seed",
    "n": "num_return_sequences",
}
NEUTRAL = {  # OpenAI fields kogpt does not implement -> the values that mean "off"
    "suffix": (None, ""),
}
OTHER = ("model", "prompt", "stop", "stream", "stream_options", "echo", "user")
FIELDS = (*SETTINGS, *NEUTRAL, *EXTRA_FIELDS, *OTHER)


@dataclass
class CompletionRequest:
    """A checked completion request: the prompts, the settings to run them with, and the reply's shape."""

    prompts: list[str | list[int]]  # text, or token ids
    settings: SamplingSettings
    model: str | None = None
    stream: bool = False
    include_usage: bool = False
    echo: bool = False
    extras: Extras = dataclasses.field(default_factory=Extras)  # logprobs, OpenAI's penalties, logit_bias
    score_only: bool = False  # max_tokens 0 with echo: the prompt and its logprobs, nothing generated
    best_of: int | None = None  # choices generated per prompt, of which the n best are returned

    @property
    def n(self) -> int:
        return self.settings.num_return_sequences

    @property
    def count(self) -> int:
        """Choices generated per prompt."""
        return self.best_of or self.n


JSON_TYPES = ("application/json",)  # and application/*+json, as FastAPI (vLLM) accepts


def check_content_type(request: Request) -> None:
    """Only JSON bodies (415 otherwise): a web page can send text/plain, form or multipart bodies
    to another origin without asking first (a CORS "simple request"), never application/json."""
    given = request.headers.get("content-type")
    media = (given or "").partition(";")[0].strip().lower()
    if media in JSON_TYPES or (media.startswith("application/") and media.endswith("+json")):
        return
    what = f"Content-Type {shown(given, quote=False)}" if given else "no Content-Type"
    raise APIError(415, f"the body must be JSON, sent as Content-Type: application/json, not {what}",
                   code="unsupported_media_type")


async def read_body(request: Request, limit: int = MAX_BODY_BYTES) -> bytes:
    """The request's body; more than `limit` bytes is refused (413) before it is all read."""
    too_large = APIError(413, f"the body is larger than the server's limit of {limit} bytes", code="request_too_large")
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise too_large
    body = bytearray()
    try:
        async for piece in request.stream():
            body += piece
            if len(body) > limit:
                raise too_large
    except ClientDisconnect:  # it left, or its body was too slow (see `listener`): nobody reads a reply
        raise APIError(499, "the client left before sending its whole body") from None
    return bytes(body)


def parse_json(body: bytes) -> dict[str, Any]:
    """The body as a JSON object; bad UTF-8, bad JSON and other values each get their own line."""
    try:
        text = text_lib.decode(body, "the body")
    except InputError as exc:
        raise bad_request(str(exc)) from None
    if not text.strip():
        raise bad_request('the body is empty: send a JSON object, e.g. {"prompt": "...", "max_tokens": 32}')
    try:
        data = json.loads(text, parse_int=_parse_int)
    except json.JSONDecodeError as exc:
        raise bad_request(f"the body is not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})") from None
    except RecursionError:
        raise bad_request("the body is not JSON kogpt can read: it is nested too deeply") from None
    if not isinstance(data, dict):
        raise bad_request(f"the body must be a JSON object, not {_kind(data)}")
    return data


def parse_completion(data: dict[str, Any], defaults: SamplingSettings, vocab: int = 0) -> CompletionRequest:
    """Check every field of a completion request; `defaults` are the server's (its sampling flags);
    token ids run from 0 to `vocab` - 1 (the tokenizer's size)."""
    unknown = [name for name in data if name not in FIELDS]
    if unknown:
        raise bad_request(f"unknown field {shown(unknown[0])}; kogpt reads: {', '.join(FIELDS)}", param=unknown[0])
    for name, neutral in NEUTRAL.items():
        if name in data and not any(_same(data[name], value) for value in neutral):
            raise bad_request(f"{name} is not supported by kogpt serve; leave it out", param=name)
    score_only = scores_only(data)
    given = {
        setting: _setting(name, setting, data[name]) for name, setting in SETTINGS.items()
        if data.get(name) is not None and not (score_only and name == "max_tokens")
    }
    if data.get("stop") is not None:
        given["stop"] = _stops(data["stop"])
    settings = dataclasses.replace(defaults, **given)  # max_tokens, when given, wins over --max-length
    prompts = _prompts(data.get("prompt"), vocab)
    if len(prompts) * settings.num_return_sequences > MAX_CHOICES:
        raise bad_request(
            f"{len(prompts)} prompts x n={settings.num_return_sequences} is more than {MAX_CHOICES} completions in one request",
            param="n",
        )
    stream = flag(data, "stream")
    options = data.get("stream_options")
    include_usage = False
    if options is not None:
        if not stream:
            raise bad_request("stream_options is only allowed with stream: true", param="stream_options")
        if not isinstance(options, dict) or set(options) - {"include_usage"}:
            raise bad_request('stream_options must be {"include_usage": true or false}', param="stream_options")
        include_usage = flag(options, "include_usage")
    model = data.get("model")
    if model is not None and not isinstance(model, str):
        raise bad_request(f"model must be a string, not {_kind(model)}", param="model")
    user = data.get("user")
    if user is not None and not isinstance(user, str):
        raise bad_request(f"user must be a string, not {_kind(user)}", param="user")
    extras = parse_extras(data, vocab)
    best_of = parse_best_of(data, settings.num_return_sequences, MAX_CHOICES, len(prompts))
    return CompletionRequest(prompts, settings, model, stream, include_usage, flag(data, "echo"), extras, score_only,
                             best_of)


def _setting(name: str, setting: str, value: Any) -> Any:
    if name == "top_k" and value == -1 and not isinstance(value, bool):  # vLLM's and OpenAI-style servers' "off"
        value = 0
    if SPECS[setting].kind is int:
        value = _whole(value)
    return _checked(name, setting, value)


def _checked(name: str, setting: str, value: Any) -> Any:
    """`value` checked by `settings.check_value`, the rule of the flags and `/set`; its message says
    the API's name of the field."""
    try:
        return check_value(setting, value)
    except InputError as exc:
        message = str(exc)
        if message.startswith(setting):
            message = name + message[len(setting) :]
        raise bad_request(message, param=name) from None


def _stops(value: Any) -> list[str]:
    stops = _checked("stop", "stop", value)
    if len(stops) > MAX_STOPS:
        raise bad_request(f"stop holds {len(stops)} sequences; at most {MAX_STOPS}", param="stop")
    return stops


def _prompts(value: Any, vocab: int) -> list[str | list[int]]:
    if value is None:
        raise bad_request("prompt is missing: give a string, a list of strings, or token ids", param="prompt")
    single = isinstance(value, str) or (isinstance(value, list) and value and _is_number(value[0]))
    prompts = [value] if single else value
    if not isinstance(prompts, list) or not prompts:
        raise bad_request(f"prompt must be a string or a non-empty list, not {_kind(value)}", param="prompt")
    if not (all(isinstance(p, str) for p in prompts) or all(isinstance(p, list) for p in prompts)):
        raise bad_request(
            "prompt must be a string, a list of strings, a list of token ids or a list of such lists, "
            f"not a list holding {_kind(next(p for p in prompts if not isinstance(p, str)))}",
            param="prompt",
        )
    return [_text(p) if isinstance(p, str) else _ids(p, vocab, i, single) for i, p in enumerate(prompts)]


def _text(prompt: str) -> str:
    if not prompt:
        raise bad_request("prompt is empty", param="prompt")
    try:
        return text_lib.check(prompt, "prompt")
    except InputError as exc:  # JSON's "\ud800": a lone surrogate, not a character
        raise bad_request(str(exc), param="prompt") from None


def _ids(prompt: list, vocab: int, index: int, single: bool) -> list[int]:
    name = "prompt" if single else f"prompt[{index}]"
    if not prompt:
        raise bad_request(f"{name} holds no token ids", param="prompt")
    return token_ids(prompt, name, vocab, param="prompt")


def token_ids(value: Any, name: str, vocab: int, param: str) -> list[int]:
    """`value` checked to be a list of token ids below `vocab` (whole-number floats taken as ints)."""
    if not isinstance(value, list):
        raise bad_request(f"{name} must be a list of token ids, not {_kind(value)}", param=param)
    ids = [_whole(item) for item in value]
    for i, item in enumerate(ids):
        if not _is_int(item) or not 0 <= item < vocab:
            raise bad_request(
                f"{name}[{i}] is {_kind(value[i])}, not a token id: this model's ids run from 0 to {vocab - 1}",
                param=param,
            )
    return ids


def flag(data: dict, name: str) -> bool:
    """`data[name]` as true or false (absent or null: false); anything else is a 400."""
    value = data.get(name)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise bad_request(f"{name} must be true or false, not {_kind(value)}", param=name)
    return value


def _same(value: Any, neutral: Any) -> bool:
    if isinstance(value, bool) or isinstance(neutral, bool):
        return value is neutral
    return value == neutral


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _whole(value: Any) -> Any:
    """1.0 as 1, as vLLM (pydantic) reads a whole number where an integer is expected; 1.5 stays."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


def _kind(value: Any) -> str:
    return shown(value)


def _parse_int(digits: str) -> int:
    if len(digits) > 100:  # int() itself refuses beyond 4300 digits, with Python's advice
        raise bad_request(f"the body holds a number of {len(digits)} digits; no field takes one that long")
    return int(digits)
