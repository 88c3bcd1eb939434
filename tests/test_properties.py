"""Property-based tests of the input handling and the streaming decoder."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kogpt.cli.scripting import parse_prompts_file
from kogpt.engine.textstream import REPLACEMENT, IncrementalDecoder, StopMatcher
from kogpt.errors import KoGPTError
from kogpt.settings import PARSERS, InputError, SamplingSettings, parse_setting
from tests.tiny import train_tokenizer

TOKENIZER = train_tokenizer()
VOCAB = len(TOKENIZER)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=VOCAB - 1), max_size=40))
def test_streaming_random_tokens_joins_to_the_full_decode(ids):
    decoder = IncrementalDecoder(TOKENIZER)
    full = TOKENIZER.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)
    shown = ""
    for token in ids:
        piece = decoder.push(token)
        shown += piece
        # Only ever appended, and always a prefix of the final text: a U+FFFD shown mid-stream
        # would be a character that later bytes completed, and would break this.
        assert full.startswith(shown)
        if piece:
            assert not piece.endswith(REPLACEMENT)
    assert shown + decoder.flush() == full


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.sampled_from("가각갂나다라하힣"), min_size=1, max_size=12), st.integers(1, 11))
def test_sequences_cut_inside_a_syllable_hold_it_back(text, cut):
    ids = TOKENIZER.encode(text)
    head = ids[: min(cut, len(ids))]
    decoder = IncrementalDecoder(TOKENIZER)
    shown = "".join(decoder.push(t) for t in head)
    assert REPLACEMENT not in shown
    assert text.startswith(shown)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(sorted(PARSERS)), st.text(max_size=30))
def test_any_text_for_any_setting_parses_or_says_why(name, text):
    try:
        parse_setting(name, text)
    except InputError as exc:
        assert str(exc) and "\n" not in str(exc)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=200))
def test_any_prompts_file_parses_or_names_the_line(text):
    try:
        for number, prompt, _ in parse_prompts_file(text, "f.txt", SamplingSettings()):
            assert number >= 1 and isinstance(prompt, str)
    except KoGPTError as exc:
        assert str(exc).startswith("f.txt:")


@settings(max_examples=300, deadline=None)
@given(st.lists(st.text(alphabet="ab#\n가", max_size=5), max_size=12), st.lists(st.text(alphabet="ab#\n가", min_size=1, max_size=3), max_size=3))
def test_stop_matcher_shows_exactly_the_text_before_the_first_stop(pieces, stops):
    matcher = StopMatcher(stops)
    shown = "".join(matcher.feed(p) for p in pieces) + matcher.flush()
    full = "".join(pieces)
    expected, stopped = earliest_end(full, stops)
    assert shown == expected
    assert matcher.stopped == stopped


def earliest_end(full: str, stops: list[str]) -> tuple[str, bool]:
    """An oracle independent of `StopMatcher`'s rule: read the text one character at a time, as
    generation does, and stop at the first moment some stop sequence has just ended; of those
    ending there, the longest (the one that starts earliest) is cut off."""
    for end in range(1, len(full) + 1):
        ending = [s for s in stops if s and full[:end].endswith(s)]
        if ending:
            return full[: end - max(map(len, ending))], True
    return full, False


@pytest.mark.parametrize(
    "stops, pieces, shown",
    [
        (["a#b", "#"], ["xa#b"], "xa"),  # the shorter completes first, inside the longer, in one piece
        (["#", "a#b"], ["xa#b"], "xa"),  # whatever the order of the stops
        (["a#b", "#"], ["xa", "#b"], "xa"),
        (["b#", "#"], ["xb#"], "x"),  # both end at the same character: the longer starts earlier
        (["ab", "bc"], ["xabc"], "x"),
    ],
)
def test_stop_matcher_examples(stops, pieces, shown):
    matcher = StopMatcher(stops)
    assert "".join(matcher.feed(p) for p in pieces) + matcher.flush() == shown
    assert matcher.stopped
