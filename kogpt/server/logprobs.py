"""OpenAI's legacy `logprobs` object of a completion choice, Korean-correct.

`{"tokens", "token_logprobs", "top_logprobs", "text_offset"}`, one entry per token. KoGPT's tokens
are byte-level: a Hangul syllable (three UTF-8 bytes) may be split across tokens, so a token is
shown as its text when its bytes are whole UTF-8 characters, and otherwise as `bytes:` followed by
its bytes as `\\xNN` escapes (OpenAI's way for such tokens). `text_offset` counts characters of the
choice's text (the prompt's first, with `echo`): a token's offset is where the first character it
adds bytes to begins, so the tokens of a split syllable share its offset.
"""

from __future__ import annotations

import codecs
from collections.abc import Callable, Sequence

from kogpt.engine import TokenLogprob


def _byte_of_char() -> dict[str, int]:
    """GPT-2's byte-level alphabet, reversed: the character a byte is written as in a token -> the byte."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars, extra = {}, 0
    for byte in range(256):
        if byte in printable:
            chars[chr(byte)] = byte
        else:
            chars[chr(256 + extra)] = byte
            extra += 1
    return chars


BYTE_OF_CHAR = _byte_of_char()


def token_bytes(tokenizer) -> Callable[[int], bytes | None]:
    """A function giving the UTF-8 bytes a token id stands for (a special token: its name; None for
    an id of the model's padded vocabulary that the tokenizer does not have)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    byte_level = type(getattr(backend, "decoder", None)).__name__ == "ByteLevel"
    special = set(tokenizer.all_special_ids)
    cache: dict[int, bytes | None] = {}

    def of(token: int) -> bytes | None:
        if token not in cache:
            piece = tokenizer.convert_ids_to_tokens(token)
            if piece is None:
                cache[token] = None
            elif byte_level and token not in special and all(c in BYTE_OF_CHAR for c in piece):
                cache[token] = bytes(BYTE_OF_CHAR[c] for c in piece)
            else:
                cache[token] = (piece if token in special else tokenizer.decode([token])).encode("utf-8")
        return cache[token]

    return of


def shown(data: bytes | None, token: int = -1) -> str:
    """A token as OpenAI shows it: its text, or `bytes:\\xNN...` when it is not whole characters
    (`token_id:N`, vLLM's form, for an id the tokenizer does not have)."""
    if data is None:
        return f"token_id:{token}"
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return "bytes:" + "".join(f"\\x{b:02x}" for b in data)


class Shaper:
    """Turns one choice's `TokenLogprob`s, in order and in any number of calls, into OpenAI's objects;
    the offsets run on from one call to the next."""

    def __init__(self, tokenizer, of: Callable[[int], bytes] | None = None) -> None:
        self.of = of or token_bytes(tokenizer)
        self.decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self.chars = 0  # whole characters of the tokens shaped so far

    def shape(self, entries: Sequence[TokenLogprob]) -> dict:
        out: dict = {"tokens": [], "token_logprobs": [], "top_logprobs": [], "text_offset": []}
        for entry in entries:
            data = self.of(entry.token)
            name = shown(data, entry.token)
            out["tokens"].append(name)
            out["token_logprobs"].append(entry.logprob)
            if entry.logprob is None:  # the prompt's first token: nothing before it to predict it
                out["top_logprobs"].append(None)
            else:
                top = {shown(self.of(t), t): p for t, p in entry.top}
                top.setdefault(name, entry.logprob)  # the chosen token is always listed, as vLLM does
                out["top_logprobs"].append(top)
            out["text_offset"].append(self.chars)
            self.chars += len(self.decoder.decode(data or b""))
        return out


def joined(parts: Sequence[dict]) -> dict:
    """Several `shape` results of one choice as one object."""
    out: dict = {"tokens": [], "token_logprobs": [], "top_logprobs": [], "text_offset": []}
    for part in parts:
        for key in out:
            out[key] += part[key]
    return out

