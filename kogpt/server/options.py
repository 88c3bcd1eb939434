"""OpenAI's completion fields that are not kogpt settings, checked one by one (a 400 naming the field
otherwise): `logprobs`, `presence_penalty`, `frequency_penalty` and `logit_bias` (the engine's
`Extras`), `best_of`, and `max_tokens: 0` with `echo`."""

from __future__ import annotations

import math
from typing import Any

from kogpt.engine import Extras
from kogpt.engine.sampling import MAX_LOGPROBS
from kogpt.messages import shown
from kogpt.server.errors import bad_request

EXTRA_FIELDS = ("logprobs", "presence_penalty", "frequency_penalty", "logit_bias", "best_of")
MAX_PENALTY = 2.0  # OpenAI's range for both penalties: -2 to 2
MAX_BIAS = 100.0  # and for a logit bias: -100 to 100


def parse_extras(data: dict[str, Any], vocab: int) -> Extras:
    """The engine's `Extras` for a request's body; token ids run from 0 to `vocab` - 1."""
    return Extras(
        logprobs=_logprobs(data.get("logprobs")),
        presence_penalty=_number(data, "presence_penalty", MAX_PENALTY),
        frequency_penalty=_number(data, "frequency_penalty", MAX_PENALTY),
        logit_bias=_logit_bias(data.get("logit_bias"), vocab),
    )


def parse_best_of(data: dict[str, Any], n: int, choices: int, prompts: int) -> int | None:
    """`best_of` (None: absent): at least `n`, at most `choices` completions with the prompts, never streamed."""
    value = data.get("best_of")
    if value is None:
        return None
    value = _whole(value)
    if not _is_int(value) or not n <= value <= choices:
        raise bad_request(f"best_of must be a whole number from n ({n}) to {choices}, not {shown(value)}",
                          param="best_of")
    if data.get("stream") is True and value != n:
        raise bad_request("best_of cannot be streamed: the best choices are known at the end; leave out stream",
                          param="best_of")
    if prompts * value > choices:
        raise bad_request(f"{prompts} prompts x best_of={value} is more than {choices} completions in one request",
                          param="best_of")
    return value if value != n else None  # best_of == n: every choice, as without it


def _number(data: dict[str, Any], name: str, bound: float) -> float:
    value = data.get(name)
    if value is None:
        return 0.0
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or abs(value) > bound:
        raise bad_request(f"{name} must be a number from {-bound:g} to {bound:g}, not {shown(value)}", param=name)
    return float(value)


def _logit_bias(value: Any, vocab: int) -> dict[int, float]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise bad_request(f"logit_bias must be an object of token ids to biases, not {shown(value)}", param="logit_bias")
    bias = {}
    for key, number in value.items():
        token = int(key) if isinstance(key, str) and key.isascii() and key.isdigit() and len(key) < 20 else -1
        if not 0 <= token < vocab:
            raise bad_request(f"logit_bias key {shown(key)} is not a token id: this model's ids run from 0 to "
                              f"{vocab - 1}", param="logit_bias")  # fmt: skip
        bias[token] = _number({"logit_bias": number}, "logit_bias", MAX_BIAS)
    return bias


def scores_only(data: dict[str, Any]) -> bool:
    """Whether the request asks for no tokens (`max_tokens: 0`), which only `echo` allows: the
    prompt comes back with its log-probabilities and nothing is generated."""
    value = data.get("max_tokens")
    if isinstance(value, bool) or _whole(value) != 0:
        return False
    if data.get("echo") is not True:
        raise bad_request("max_tokens must be at least 1, or 0 with echo (the prompt back, with its logprobs)",
                          param="max_tokens")
    return True


def _logprobs(value: Any) -> int | None:
    if value is None:
        return None
    value = _whole(value)
    if not _is_int(value) or not 0 <= value <= MAX_LOGPROBS:
        raise bad_request(f"logprobs must be a whole number from 0 to {MAX_LOGPROBS}, not {shown(value)}",
                          param="logprobs")
    return value


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _whole(value: Any) -> Any:
    return int(value) if isinstance(value, float) and value.is_integer() else value
