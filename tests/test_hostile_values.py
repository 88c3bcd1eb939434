"""Issue 19, items 3-5 outside the server: the same seed, temperature and penalty rules through
the flags, `/set`, JSON Lines and the Python API (the API server's share is in test_serve_hostile.py)."""

from __future__ import annotations

import json

import pytest

from kogpt.cli.main import main
from kogpt.cli.scripting import parse_prompts_file
from kogpt.messages import shown
from kogpt.settings import MAX_SEED, InputError, SamplingSettings, check_value, parse_setting, sequence_seed
from tests.test_repl import CTRL_D, ENTER, run_repl

PROMPT = "인간처럼 생각하고,"


def run_json(tiny_dir, capsys, *flags: str) -> list[dict]:
    argv = ["--model", str(tiny_dir), "--device", "cpu", "-p", PROMPT, "--json", "--max-new-tokens", "6", *flags]
    assert main(argv) == 0, capsys.readouterr().err
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


def test_seed_plus_sequence_wraps_in_the_cli(tiny_dir, capsys):
    """Item 3: `--seed` with `--num-return-sequences` near the top: every record's seed can be typed
    back with --seed and gives the same text."""
    records = run_json(tiny_dir, capsys, "--seed", str(MAX_SEED), "--num-return-sequences", "2", "--temperature", "1")
    assert [r["seed"] for r in records] == [MAX_SEED, 0]
    (again,) = run_json(tiny_dir, capsys, "--seed", "0", "--temperature", "1")
    assert again["completion"] == records[1]["completion"]


def test_sequence_seed():
    assert [sequence_seed(MAX_SEED - 1, i) for i in range(3)] == [MAX_SEED - 1, MAX_SEED, 0]
    assert sequence_seed(5, 2) == 7


@pytest.mark.parametrize("text", ["1e-38", "1e-40", "5e-324", "0.000009"])
def test_a_tiny_temperature_is_greedy_everywhere(text, tiny_dir, capsys, gpt, tmp_path):
    """Item 5: the flag, `/set`, a JSON Lines field and the API agree: greedy (was: a crash)."""
    value = float(text)
    assert parse_setting("temperature", text) == check_value("temperature", value) == 0.0
    ((_, _, settings),) = parse_prompts_file(json.dumps({"prompt": "a", "temperature": value}), "p.jsonl",
                                              SamplingSettings())  # fmt: skip
    assert settings.temperature == 0.0
    greedy = gpt.generate(PROMPT, temperature=0, max_new_tokens=6)
    assert gpt.generate(PROMPT, temperature=value, max_new_tokens=6) == greedy
    (record,) = run_json(tiny_dir, capsys, "--temperature", text)
    assert record["completion"] == greedy
    seen = []
    run_repl(gpt, f"/set temperature {text}" + ENTER + CTRL_D, tmp_path, repl_hook=seen.append)
    assert seen[0].settings.temperature == 0.0


@pytest.mark.parametrize("text", ["1e-300", "1e-38", "0.005", "0"])
def test_a_tiny_repetition_penalty_is_refused_everywhere(text, tiny_dir, capsys, gpt):
    with pytest.raises(InputError, match="at least 0.01"):
        parse_setting("repetition_penalty", text)
    with pytest.raises(InputError, match="at least 0.01"):
        check_value("repetition_penalty", float(text))
    with pytest.raises(InputError, match="at least 0.01"):
        gpt.generate(PROMPT, repetition_penalty=float(text), max_new_tokens=2)
    with pytest.raises(SystemExit):
        main(["--model", str(tiny_dir), "--device", "cpu", "-p", PROMPT, "--repetition-penalty", text])
    assert "at least 0.01" in capsys.readouterr().err
    assert gpt.generate(PROMPT, repetition_penalty=0.01, temperature=1.0, max_new_tokens=4, seed=1) is not None


@pytest.mark.parametrize(
    "value",
    ["\ud800", "x" * 500_000, 10**5000, {"\ud800": 1}, ["\udfff"] * 9999, "a\nb\x1b[31m", 1e400],
    ids=["surrogate", "long", "digits", "dict", "list", "escapes", "inf"],
)
def test_messages_quote_any_value_safely(value):
    """Item 4: any value can be quoted (no exception, valid UTF-8, one line, bounded)."""
    text = shown(value)
    text.encode("utf-8")
    assert len(text) <= 40 and "\n" not in text and "\x1b" not in text
    for name in ["temperature", "max_length", "stop", "truncate"]:
        try:
            check_value(name, value)
        except InputError as exc:
            assert len(str(exc)) < 200
            str(exc).encode("utf-8")
