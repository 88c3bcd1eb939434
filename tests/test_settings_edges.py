"""Settings at their edges, with exact expectations (written against mutmut's survivors)."""

from __future__ import annotations

import pytest

from kogpt.settings import (
    InputError,
    SamplingSettings,
    check_settings,
    format_value,
    parse_max_length_answer,
    parse_setting,
)


@pytest.mark.parametrize(
    "settings, prompt, context, room",
    [
        (SamplingSettings(max_length=10), 4, 128, 6),  # max_length counts the prompt
        (SamplingSettings(max_length=10), 10, 128, 0),  # nothing left: 0, not 1
        (SamplingSettings(max_length=10), 12, 128, 0),
        (SamplingSettings(max_length=128, max_new_tokens=5), 4, 128, 5),  # max_new_tokens wins
        (SamplingSettings(max_new_tokens=50), 100, 128, 28),  # bounded by what the context leaves
        (SamplingSettings(max_length=128), 100, 120, 20),
    ],
)
def test_new_tokens(settings, prompt, context, room):
    assert settings.new_tokens(prompt, context) == room


def test_an_unknown_setting_lists_the_settings():
    with pytest.raises(InputError) as caught:
        check_settings(temprature=0.5)
    assert str(caught.value).startswith("no setting 'temprature'; settings: temperature, max_length, max_new_tokens, ")


def test_settings_of_the_wrong_type():
    with pytest.raises(InputError, match="^settings must be a SamplingSettings, not int$"):
        check_settings(3)


def test_the_max_length_answer_at_its_bounds():
    assert parse_max_length_answer("128", 10, 128) == 128  # the whole context
    with pytest.raises(InputError, match="^max_length can be at most the model's context of 128 tokens$"):
        parse_max_length_answer("129", 10, 128)
    with pytest.raises(InputError, match="^max_length must be a whole number, not 'abc'$"):
        parse_max_length_answer("abc", 10, 128)
    with pytest.raises(InputError, match="^max_length counts the prompt's 10 tokens: give more than 10$"):
        parse_max_length_answer("10", 10, 128)


@pytest.mark.parametrize(
    "value, shown",
    [(None, "none"), (True, "on"), (False, "off"), ([], "none"), (["a", "\n"], "'a' '\\n'"), (0.5, "0.5")],
)
def test_format_value(value, shown):
    assert format_value(value) == shown


@pytest.mark.parametrize("text", ["none", "NONE", " Off ", ""])
def test_an_optional_number_is_cleared_by_none_or_off(text):
    assert parse_setting("max_new_tokens", text) is None
    assert parse_setting("seed", text) is None


def test_a_number_setting_names_itself_when_refused():
    with pytest.raises(InputError, match="^top_k must be a whole number, not 'x'$"):
        parse_setting("top_k", "x")
    with pytest.raises(InputError, match="^truncate must be on or off, not 'maybe'$"):
        parse_setting("truncate", "maybe")


@pytest.mark.parametrize("text", ["on", "true", "yes", "1", " ON ", "True", "YES"])
def test_every_spelling_of_on(text):
    assert parse_setting("truncate", text) is True


@pytest.mark.parametrize("text", ["off", "false", "no", "0", " OFF ", "False", "NO"])
def test_every_spelling_of_off(text):
    assert parse_setting("truncate", text) is False


def test_a_value_of_the_wrong_type_says_whether_none_is_allowed():
    with pytest.raises(InputError, match=r"^seed must be a whole number or none, not 'x'$"):
        check_settings(seed="x")
    with pytest.raises(InputError, match=r"^top_k must be a whole number, not 'x'$"):
        check_settings(top_k="x")
