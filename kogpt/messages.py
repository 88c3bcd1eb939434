"""Input quoted in error messages: safe for any value, and bounded.

A message that echoes what a user sent (a setting, a JSON field, a header) must never fail to
encode (a lone surrogate from a JSON escape) nor grow with the input (half a megabyte of "x", a
number of thousands of digits)."""

from __future__ import annotations

import json
from typing import Any

MAX_SHOWN = 40  # characters of a value quoted in an error message


def shown(value: Any, quote: bool = True, limit: int = MAX_SHOWN) -> str:
    """`value` as an error message quotes it: any value works (lone surrogates and control
    characters escaped, integers of thousands of digits by their size), one line, at most `limit`
    characters."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 128:
        text = f"a number of about {int(value.bit_length() * 0.30103) + 1} digits"
    elif isinstance(value, str):
        text = repr(value[: limit + 1]) if quote else value[: limit + 1]
    elif isinstance(value, (bool, int, float)) or value is None:
        text = repr(value)
    else:
        try:
            text = json.dumps(value, ensure_ascii=False)[: limit + 1]
        except (TypeError, ValueError, RecursionError):
            text = type(value).__name__
    text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    if not quote or not isinstance(value, str):
        text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
    return text if len(text) <= limit else text[: limit - 3] + "..."
