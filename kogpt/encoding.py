"""KoGPT's one encoding of text into token ids, and its bounded form for prompts of any size.

A prompt can only ever use the last `context` tokens, so a 50 MB prompt file is tokenized from
its end, in growing pieces, until the piece holds more tokens than can be kept: the work and the
memory are bounded by the context, not by the file. The result for a long text is remembered, so
the check before the load and the generation after it tokenize it once.
"""

from __future__ import annotations

import logging
import unicodedata
from collections import OrderedDict

from kogpt import text as text_lib

log = logging.getLogger(__name__)

CHARS_PER_TOKEN = 16  # the first piece: generous for Korean and English (about 1-4 characters a token)
MARGIN = 16  # tokens at a piece's cut that may tokenize differently from the whole text: never kept
REMEMBERED = 8  # long texts whose tail encoding is kept
LONG = 1 << 16  # characters: shorter texts are encoded whole and not remembered
_memo: OrderedDict = OrderedDict()


def encode(tokenizer, text: str) -> list[int]:
    """KoGPT's token ids of `text`: checked to be encodable, NFC-normalised, special-token strings
    kept as text. The one encoding for the REPL, scripting's early checks and the API."""
    normal = unicodedata.normalize("NFC", text_lib.check(text, "the prompt"))
    if normal != text:
        log.debug("normalised the prompt to NFC (%d -> %d characters)", len(text), len(normal))
    return tokenizer.encode(normal, add_special_tokens=False, split_special_tokens=True)


def encode_tail(tokenizer, text: str, limit: int) -> tuple[list[int], bool]:
    """(ids, cut): the token ids of `text`, or when it has more than `limit` tokens, possibly just
    its last `limit` (then `cut` is True and the text has at least that many). Bounded by `limit`."""
    if len(text) <= max(LONG, limit * CHARS_PER_TOKEN):
        return encode(tokenizer, text), False
    key = (getattr(tokenizer, "name_or_path", ""), len(tokenizer), len(text), hash(text), limit)
    if key in _memo:
        _memo.move_to_end(key)
        return _memo[key]
    text_lib.check(text, "the prompt")  # the whole text is checked, only its end is tokenized
    chars = limit * CHARS_PER_TOKEN
    while True:
        ids = encode(tokenizer, text[-chars:])
        if len(ids) > limit + MARGIN:
            found = ids[-limit:], True
            break
        if chars >= len(text):
            found = ids, False
            break
        chars *= 4
    _memo[key] = found
    while len(_memo) > REMEMBERED:
        _memo.popitem(last=False)
    return found
