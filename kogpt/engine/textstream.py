"""Token ids in, printable text out: Korean-safe incremental decoding and stop-sequence matching.

KoGPT's byte-level tokens can end in the middle of a UTF-8 character (a Hangul syllable is three
bytes and may be split across tokens). Decoding such a prefix gives a trailing U+FFFD, which is
held back until the bytes that complete it arrive. Text is only ever appended, and the pieces
always join to exactly the decode of all the tokens.

For fast tokenizers the per-token work is done by tokenizers' `DecodeStream` (about 1 us a token
against 19 us for decoding a window in Python). It keeps whole characters and only appends, but
it never emits bytes that do not complete a character by the end (in 1,521 of 3,000 random token
sequences of the test tokenizer the joined pieces fell short of the decode), so `flush()` takes
the rest from one decode of all the tokens.
"""

from __future__ import annotations

try:
    from tokenizers.decoders import DecodeStream
except ImportError:  # tokenizers < 0.21
    DecodeStream = None

REPLACEMENT = "\ufffd"


class IncrementalDecoder:
    """Feed token ids one at a time; get back the newly completed text.

    Each step decodes from one clean segment back (`_prefix`) rather than from the start, which
    keeps the cost per token constant and keeps tokenizers that drop a leading space on the
    first token (SentencePiece-style) right: the segment before gives that space its context.
    """

    def __init__(self, tokenizer, skip_special_tokens: bool = True) -> None:
        self._tokenizer = tokenizer
        self._skip = skip_special_tokens
        self._ids: list[int] = []
        self._prefix = 0  # start of the context segment
        self._read = 0  # end of the text already returned
        self._backend = getattr(tokenizer, "_tokenizer", None)  # a fast tokenizer's `tokenizers.Tokenizer`
        self._stream = None
        if DecodeStream is not None and self._backend is not None:
            self._stream = DecodeStream(skip_special_tokens=skip_special_tokens)
        self._shown = 0  # characters returned since the last flush (DecodeStream path)

    def push(self, token_id: int) -> str:
        """Add one token; return the text it completes ('' while a character is still open)."""
        self._ids.append(token_id)
        if self._stream is not None:
            text = self._stream.step(self._backend, token_id) or ""
            self._shown += len(text)
            return text
        done = self._decode(self._prefix, self._read)
        text = self._decode(self._prefix, len(self._ids))
        if len(text) <= len(done) or text.endswith(REPLACEMENT):
            return ""
        self._prefix, self._read = self._read, len(self._ids)
        return text[len(done) :]

    def flush(self) -> str:
        """The rest, including a character that never completed (shown as U+FFFD)."""
        if self._stream is not None:
            rest = self._decode(0, len(self._ids))[self._shown :]
            self._ids, self._shown = [], 0
            self._stream = DecodeStream(skip_special_tokens=self._skip)
            return rest
        done = self._decode(self._prefix, self._read)
        text = self._decode(self._prefix, len(self._ids))
        self._prefix = self._read = len(self._ids)
        return text[len(done) :]

    def _decode(self, start: int, end: int) -> str:
        return self._tokenizer.decode(
            self._ids[start:end], skip_special_tokens=self._skip, clean_up_tokenization_spaces=False
        )


class StopMatcher:
    """Hold back text that might be the start of a stop sequence; cut the text at a full match."""

    def __init__(self, stops: tuple[str, ...] | list[str] = ()) -> None:
        self._stops = tuple(s for s in stops if s)
        self._held = ""
        self.stopped = False

    def feed(self, text: str) -> str:
        """Return the text that is safe to show now; sets `stopped` when a stop sequence appears."""
        if not self._stops or self.stopped:
            return "" if self.stopped else text
        buf = self._held + text
        # The stop that completes first wins (generation cannot wait for a longer one); on a tie,
        # the one that starts earlier.
        hits = [(i + len(s), i) for s, i in ((s, buf.find(s)) for s in self._stops) if i >= 0]
        if hits:
            self.stopped = True
            self._held = ""
            return buf[: min(hits)[1]]
        keep = self._partial_suffix(buf)
        self._held = buf[len(buf) - keep :]
        return buf[: len(buf) - keep]

    def flush(self) -> str:
        """Text held back at the end of generation: it turned out not to be a stop sequence."""
        held, self._held = self._held, ""
        return "" if self.stopped else held

    def _partial_suffix(self, buf: str) -> int:
        """Length of the longest suffix of `buf` that is a proper prefix of a stop sequence."""
        best = 0
        for stop in self._stops:
            for n in range(min(len(stop) - 1, len(buf)), best, -1):
                if buf.endswith(stop[:n]):
                    best = n
                    break
        return best
