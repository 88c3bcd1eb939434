"""OpenAI's completion fields that are not kogpt settings: `logprobs` and the other options the
engine takes as `Extras`, checked one by one (a 400 naming the field otherwise)."""

from __future__ import annotations

from typing import Any

from kogpt.engine import Extras
from kogpt.engine.sampling import MAX_LOGPROBS
from kogpt.messages import shown
from kogpt.server.errors import bad_request

EXTRA_FIELDS = ("logprobs",)


def parse_extras(data: dict[str, Any]) -> Extras:
    """The engine's `Extras` for a request's body."""
    return Extras(logprobs=_logprobs(data.get("logprobs")))


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
