"""The one rule for text that enters kogpt: it must be encodable as UTF-8, or it is refused in one
line that says where it came from (and, for bytes, the offset of the first bad one).

Keys, pastes, pipes, argv, files, the editor, `/set`, JSON fields and the Python API all pass
through `decode` (bytes) or `check` (str) before any model work.
"""

from __future__ import annotations

from kogpt.errors import InputError

BOM = "\ufeff"


class TextError(InputError):
    """Text that cannot be encoded: a one-line message naming its source."""


def decode(data: bytes, where: str, offset: int = 0) -> str:
    """`data` decoded as UTF-8 (a leading byte-order mark dropped); else a TextError naming `where`
    and the byte offset (`offset` is where `data` starts in a longer stream)."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise TextError(
            f"{where} is not valid UTF-8: byte {offset + exc.start} is {data[exc.start]:#04x}"
        ) from None
    return text[1:] if offset == 0 and text.startswith(BOM) else text


def check(text: str, where: str) -> str:
    """`text` itself if it can be encoded as UTF-8; else a TextError naming `where`.

    Undecodable bytes reach Python as surrogate escapes (U+DC80..U+DCFF: argv, a terminal in
    another encoding, prompt_toolkit's key reader); they are reported as the bytes they were.
    Any other lone surrogate (U+D800..U+DFFF, from JSON escapes or the API) is reported as a
    character.
    """
    if not isinstance(text, str):
        raise TextError(f"{where} must be text (str), not {type(text).__name__}")
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError as exc:
        index = exc.start
    try:
        raw = text.encode("utf-8", "surrogateescape")
        raw.decode("utf-8")
    except UnicodeEncodeError:  # not an escaped byte
        pass
    except UnicodeDecodeError as bad_byte:
        raise TextError(f"{where} is not valid UTF-8: byte {bad_byte.start} is {raw[bad_byte.start]:#04x}") from None
    raise TextError(f"{where} is not valid text: character {index} is U+{ord(text[index]):04X}, a lone surrogate")


def check_all(texts, where: str) -> None:
    """`check` each of `texts`."""
    for text in texts:
        check(text, where)
