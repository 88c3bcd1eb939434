"""Korean-safe incremental decoding and stop-sequence matching."""

from __future__ import annotations

import pytest

from kogpt.engine.textstream import REPLACEMENT, IncrementalDecoder, StopMatcher
from tests.tiny import korean_lines, train_tokenizer


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer()


def stream_all(tokenizer, ids):
    decoder = IncrementalDecoder(tokenizer)
    pieces = [decoder.push(i) for i in ids]
    pieces.append(decoder.flush())
    return pieces


def test_a_syllable_split_across_tokens_never_yields_replacement(tokenizer):
    # Find a syllable that the tiny tokenizer splits across tokens, so the case is really built.
    split = [ch for ch in "흐드러지게핀벚꽃" if len(tokenizer.encode(ch)) > 1]
    assert split, "the tiny tokenizer should split some syllables"
    text = "봄이 오면 " + "".join(split) + " 핀다."
    ids = tokenizer.encode(text)
    pieces = stream_all(tokenizer, ids)
    assert all(REPLACEMENT not in p for p in pieces)
    assert "".join(pieces) == text
    # Some token completed nothing: the held-back case was exercised.
    assert "" in pieces[:-1]


@pytest.mark.parametrize("line", korean_lines())
def test_stream_joins_to_the_full_decode(tokenizer, line):
    ids = tokenizer.encode(line)
    assert "".join(stream_all(tokenizer, ids)) == tokenizer.decode(ids)


def test_never_completed_bytes_are_flushed_as_replacement(tokenizer):
    # The first token of a split syllable alone: held back while streaming, shown at the end.
    ids = next(ids for ch in "흐드러지게핀벚꽃" if len(ids := tokenizer.encode(ch)) > 1)
    head = ids[:1]
    assert tokenizer.decode(head).endswith(REPLACEMENT)
    assert stream_all(tokenizer, head) == ["", tokenizer.decode(head)]


def test_special_tokens_are_not_shown(tokenizer):
    ids = tokenizer.encode("안녕") + [tokenizer.convert_tokens_to_ids("[EOS]")]
    assert "".join(stream_all(tokenizer, ids)) == "안녕"


def feed_all(matcher, pieces):
    shown = [matcher.feed(p) for p in pieces]
    shown.append(matcher.flush())
    return "".join(shown)


def test_stop_sequence_cuts_the_text_and_is_not_shown():
    matcher = StopMatcher(["\n\n"])
    assert feed_all(matcher, ["첫 줄", "\n", "\n둘째", " 줄"]) == "첫 줄"
    assert matcher.stopped


def test_a_partial_stop_that_does_not_complete_is_shown_in_full():
    matcher = StopMatcher(["끝."])
    assert feed_all(matcher, ["이제 끝", "나지 않았다"]) == "이제 끝나지 않았다"
    assert not matcher.stopped


def test_text_that_may_start_a_stop_sequence_is_held_back():
    matcher = StopMatcher(["###"])
    assert matcher.feed("답: 예 #") == "답: 예 "
    assert matcher.feed("#") == ""
    assert matcher.feed("#") == ""
    assert matcher.stopped


def test_the_earliest_of_several_stops_wins():
    matcher = StopMatcher(["BB", "A"])
    assert feed_all(matcher, ["xxBBxA"]) == "xx"


def test_a_short_stop_that_completes_first_wins_over_a_longer_one_still_open():
    matcher = StopMatcher(["b", "\nb가"])
    assert feed_all(matcher, ["\n", "b", "가"]) == "\n"


def test_no_stops_passes_text_through():
    assert feed_all(StopMatcher(), ["a", "b"]) == "ab"


class _SlowTokenizer:
    """The tokenizer without its `tokenizers` backend: the decoder's own windowed path."""

    def __init__(self, tokenizer) -> None:
        self.decode = tokenizer.decode


@pytest.mark.parametrize("path", ["DecodeStream", "window"])
def test_both_decoding_paths_keep_whole_characters_and_join_to_the_decode(tokenizer, path):
    import random

    tok = tokenizer if path == "DecodeStream" else _SlowTokenizer(tokenizer)
    assert (IncrementalDecoder(tok)._stream is not None) == (path == "DecodeStream")
    rng = random.Random(0)
    unfinished = 0
    for _ in range(300):
        ids = [rng.randrange(len(tokenizer)) for _ in range(rng.randrange(1, 30))]
        full = tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)
        decoder = IncrementalDecoder(tok)
        shown = ""
        for token in ids:
            piece = decoder.push(token)
            assert not piece.endswith(REPLACEMENT)
            shown += piece
            assert full.startswith(shown)
        tail = decoder.flush()
        unfinished += bool(tail)
        assert shown + tail == full
    assert unfinished > 50  # random bytes often end inside a character: the flush matters
