"""How a prompt and its completion share the model's context: the limits that depend on the model,
and the one check of a prompt's tokens (with `truncate`, the prompt's end is kept), used by the
API, the REPL, and scripting's checks before the load."""

from __future__ import annotations

import logging

from kogpt.errors import InputError
from kogpt.settings import SamplingSettings

log = logging.getLogger(__name__)


def check_context(settings: SamplingSettings, context: int) -> None:
    """The limits that depend on the model: `max_length` within the context, and `max_new_tokens`
    leaving room for at least one prompt token."""
    if settings.max_length > context:
        raise InputError(f"max_length is {settings.max_length}, more than the model's context of {context} tokens")
    if settings.max_new_tokens is not None and settings.max_new_tokens >= context:
        raise InputError(
            f"max_new_tokens is {settings.max_new_tokens}: the model's context of {context} tokens holds "
            f"the prompt too, so at most {context - 1}"
        )


def fit_prompt(
    ids: list[int], settings: SamplingSettings, context: int, announce: bool = True, cut: bool = False
) -> list[int]:
    """The prompt's token ids, checked to leave room in `context` for the completion asked for
    (`max_new_tokens`, or what `max_length` leaves after the prompt); with `truncate`, a prompt
    that does not fit keeps its last tokens and the completion keeps its room. `cut`: `ids` are
    only the end of a longer prompt (`encoding.encode_tail`), which has at least that many tokens."""
    if not ids:
        raise InputError("the prompt is empty")
    check_context(settings, context)
    n = len(ids)
    size = f"at least {n}" if cut else str(n)
    if settings.max_new_tokens is None:
        if n < settings.max_length:
            return ids  # max_length <= context: the whole text fits
        if n >= context:
            raise InputError(
                f"the prompt is {size} tokens, more than the model's context of {context}: shorten it, "
                "or set max_new_tokens with truncate on to keep its end"
            )
        raise InputError(
            f"the prompt is {size} tokens and max_length ({settings.max_length}) counts them: nothing is left "
            f"to generate; give a max_length above {n} (at most {context}) or set max_new_tokens"
        )
    room = settings.max_new_tokens
    if n + room <= context:
        return ids
    if settings.truncate:
        keep = context - room
        if announce:
            log.info("the prompt is %s tokens; keeping its last %d for %d new tokens", size, keep, room)
        return ids[n - keep :]
    raise InputError(
        f"the prompt is {size} tokens and max_new_tokens asks for {room} more, beyond the model's context of "
        f"{context}: shorten the prompt, lower max_new_tokens, or turn truncate on to keep the prompt's end"
    )
