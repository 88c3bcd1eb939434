"""Parsing and validation of every setting, valid and invalid."""

from __future__ import annotations

import pytest

from kogpt.settings import (
    HELP,
    PARSERS,
    InputError,
    SamplingSettings,
    format_value,
    parse_max_length_answer,
    parse_setting,
)


def test_every_setting_has_a_parser_and_help():
    from dataclasses import fields

    assert set(PARSERS) == {f.name for f in fields(SamplingSettings)} == set(HELP)


@pytest.mark.parametrize(
    "name, text, value",
    [
        ("temperature", "0.8", 0.8), ("temperature", "0", 0.0), ("temperature", "100", 100.0),
        ("max_length", "64", 64), ("max_new_tokens", "32", 32), ("max_new_tokens", "none", None),
        ("top_p", "0.9", 0.9), ("top_p", "1", 1.0), ("top_k", "0", 0), ("top_k", "50", 50),
        ("repetition_penalty", "1.2", 1.2), ("no_repeat_ngram_size", "3", 3),
        ("seed", "42", 42), ("seed", "none", None), ("num_return_sequences", "3", 3),
        ("truncate", "on", True), ("truncate", "off", False),
        ("stop", r'"\n\n" ###', ["\n\n", "###"]), ("stop", "none", []), ("stop", "'끝.'", ["끝."]),
    ],
)
def test_valid_values(name, text, value):
    assert parse_setting(name, text) == value


@pytest.mark.parametrize(
    "name, text, reason",
    [
        ("temperature", "abc", "must be a number"), ("temperature", "nan", "finite"),
        ("temperature", "inf", "finite"), ("temperature", "-1", "at least 0"), ("temperature", "1e9", "at most 100"),
        ("max_length", "0", "at least 1"), ("max_length", "1.5", "whole number"), ("max_length", "1e9", "whole number"),
        ("max_new_tokens", "-1", "at least 1"), ("top_p", "0", "more than 0"), ("top_p", "1.5", "at most 1"),
        ("top_k", "-1", "at least 0"), ("repetition_penalty", "0", "at least 0.01"),
        ("no_repeat_ngram_size", "x", "whole number"), ("seed", "-5", "at least 0"),
        ("num_return_sequences", "0", "at least 1"), ("num_return_sequences", "17", "at most 16"),
        ("truncate", "maybe", "on or off"), ("stop", '"unclosed', "stop:"), ("colour", "red", "no setting"),
    ],
)
def test_invalid_values_say_why(name, text, reason):
    with pytest.raises(InputError, match=reason):
        parse_setting(name, text)


def test_max_length_answer_counts_the_prompt():
    assert parse_max_length_answer("64", prompt_tokens=10, context=2048) == 64
    for bad, reason in [("10", "more than 10"), ("2049", "at most"), ("x", "whole number"), ("64.0", "whole number")]:
        with pytest.raises(InputError, match=reason):
            parse_max_length_answer(bad, prompt_tokens=10, context=2048)


def test_greedy_and_sampling_kwargs():
    assert SamplingSettings(temperature=0).generate_kwargs() == {"do_sample": False}
    kwargs = SamplingSettings(top_p=0.9, top_k=40, repetition_penalty=1.2, no_repeat_ngram_size=3).generate_kwargs()
    assert kwargs == {"do_sample": True, "temperature": 0.8, "top_p": 0.9, "top_k": 40,
                      "repetition_penalty": 1.2, "no_repeat_ngram_size": 3}


def test_format_value():
    assert [format_value(v) for v in (None, True, ["\n"], 0.5)] == ["none", "on", "'\\n'", "0.5"]
