"""Issue 10, sections 4-6: one meaning per setting (flags, /set, questions, JSON, the API),
truncation that keeps room for the completion, limits that name the context, input files, and
the smaller things users see."""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

cli = importlib.import_module("kogpt.cli.main")  # `kogpt.cli.main` the attribute is the function
from kogpt.cli.scripting import parse_prompts_file
from kogpt.context import fit_prompt
from kogpt.settings import (
    MAX_SEED,
    SPECS,
    InputError,
    SamplingSettings,
    check_settings,
    check_value,
    parse_setting,
)
from tests.test_cli import run_kogpt
from tests.test_repl import CTRL_D, ENTER, run_repl

INT_SETTINGS = [name for name, spec in SPECS.items() if spec.kind is int]
FLOAT_SETTINGS = [name for name, spec in SPECS.items() if spec.kind is float]


def flag(name: str, text: str):
    return cli.setting_type(name)(text)


def outcome(function, *args):
    try:
        return ("ok", function(*args))
    except (InputError, argparse.ArgumentTypeError) as exc:
        return ("error", str(exc))


@given(st.sampled_from(INT_SETTINGS), st.integers(-(2**40), 2**40))
def test_whole_numbers_mean_the_same_as_text_json_and_api(name, value):
    text, typed = outcome(parse_setting, name, str(value)), outcome(check_value, name, value)
    assert text == typed == outcome(flag, name, str(value))
    assert outcome(check_value, name, json.loads(json.dumps(value))) == typed


@given(st.sampled_from(FLOAT_SETTINGS), st.one_of(st.floats(allow_nan=False, allow_infinity=False), st.integers(-5, 500)))
def test_numbers_mean_the_same_as_text_json_and_api(name, value):
    typed = outcome(check_value, name, value)
    assert outcome(parse_setting, name, repr(value)) == typed == outcome(flag, name, repr(value))
    if typed[0] == "ok":
        assert isinstance(typed[1], float)


@pytest.mark.parametrize("name, value", [("max_length", 5.0), ("max_length", "64"), ("seed", True), ("top_k", 1.5),
                                         ("temperature", "0.5"), ("truncate", 1), ("truncate", "on"),
                                         ("stop", ["a", 1]), ("stop", 5), ("stop", {"a": 1}), ("stop", [""]),
                                         ("num_return_sequences", None), ("colour", 1)])
def test_json_and_api_values_are_taken_as_the_type_they_are(name, value):
    with pytest.raises(InputError, match=name):
        check_value(name, value)


@pytest.mark.parametrize("kwargs", [dict(max_new_tokens=0), dict(max_new_tokens=-3), dict(seed=-1), dict(top_p=0),
                                    dict(temperature=float("nan")), dict(max_length=True), dict(colour="red")])
def test_the_api_rejects_what_the_cli_rejects(gpt, monkeypatch, kwargs):
    monkeypatch.setattr(gpt.model, "forward", lambda *a, **kw: pytest.fail("the model ran"))
    with pytest.raises(InputError, match=next(iter(kwargs))):
        gpt.generate("봄", **kwargs)
    with pytest.raises(InputError):
        gpt.complete("봄", SamplingSettings(**{k: v for k, v in kwargs.items() if k != "colour"}) if "colour" not in kwargs
                     else "not settings")


def test_the_api_takes_whole_numbers_for_numbers_and_one_stop_string(gpt):
    settings = check_settings(temperature=2, repetition_penalty=2, stop="Vq")
    assert settings.temperature == 2.0 and isinstance(settings.temperature, float) and settings.stop == ["Vq"]
    assert isinstance(gpt.generate("봄", temperature=2, repetition_penalty=2, max_new_tokens=3, stop="Vq"), str)


def test_generate_refuses_several_sequences(gpt):
    with pytest.raises(InputError, match="complete"):
        gpt.generate("봄", num_return_sequences=2)


@pytest.mark.parametrize("typed, expected", [(r"\n", ["\n"]), (r'"\n\n" ###', ["\n\n", "###"]), ("'a b' c", ["a b", "c"]),
                                             (r"\t\\", ["\t\\"]), ("none", []), ("끝.", ["끝."])])
def test_stop_typed_after_set_means_what_the_flag_means(gpt, tmp_path, typed, expected):
    assert parse_setting("stop", typed) == expected
    if len(expected) == 1:
        assert cli.escaped(typed.strip("'\"")) == expected[0]
    seen = []
    run_repl(gpt, f"/set stop {typed}" + ENTER + CTRL_D, tmp_path, repl_hook=lambda repl: seen.append(repl))
    assert seen[0].settings.stop == expected


@pytest.mark.parametrize("line, stops", [('{"prompt": "a", "stop": "\\n"}', ["\n"]),
                                         ('{"prompt": "a", "stop": "\\\\n"}', ["\\n"]),
                                         ('{"prompt": "a", "stop": ["x", "\\n\\n"]}', ["x", "\n\n"]),
                                         ('{"prompt": "a", "stop": []}', [])])
def test_json_stop_is_the_json_string(line, stops):
    [(_, _, settings)] = parse_prompts_file(line, "p.jsonl", SamplingSettings())
    assert settings.stop == stops


@pytest.mark.parametrize("line, message", [('{"prompt": "a", "stop": ["a", 1]}', "p.jsonl:1: stop must be a string or a list"),
                                           ('{"prompt": "a", "temperature": "0.5"}', "p.jsonl:1: temperature must be a number"),
                                           ('{"prompt": "a", "seed": 1.0}', "p.jsonl:1: seed must be a whole number"),
                                           ('{"prompt": "a", "colour": 1}', "p.jsonl:1: no setting 'colour'"),
                                           ('["a"]', "p.jsonl:1: not a JSON object"),
                                           ('{"prompt": "a", "truncate": "yes"}', "p.jsonl:1: truncate must be on or off")])
def test_bad_json_settings_name_the_file_and_line(line, message):
    with pytest.raises(InputError, match=re.escape(message)):
        list(parse_prompts_file(line, "p.jsonl", SamplingSettings()))


def test_truncation_keeps_room_for_the_completion_asked_for(caplog):
    ids = list(range(3000))
    with caplog.at_level(logging.INFO, logger="kogpt"):
        kept = fit_prompt(ids, SamplingSettings(max_new_tokens=100, truncate=True), 2048)
    assert kept == ids[-1948:]
    assert len([r for r in caplog.records if "keeping its last 1948" in r.getMessage()]) == 1


@pytest.mark.parametrize("settings, message", [
    (SamplingSettings(max_length=5000), "max_length is 5000, more than the model's context of 2048"),
    (SamplingSettings(max_new_tokens=2048, truncate=True), "max_new_tokens is 2048: .* at most 2047"),
    (SamplingSettings(max_length=10), "the prompt is 10 tokens and max_length \\(10\\) counts them: nothing is left"),
    (SamplingSettings(max_length=2048), "the prompt is 3000 tokens, more than the model's context of 2048"),
])
def test_limits_that_depend_on_the_context_say_so(settings, message):
    ids = list(range(3000 if settings.max_length == 2048 else 10))
    with pytest.raises(InputError, match=message):
        fit_prompt(ids, settings, 2048)


def test_truncate_logs_once_through_the_api(gpt, caplog):
    with caplog.at_level(logging.INFO, logger="kogpt"):
        gpt.complete("가나다라마바사" * 60, SamplingSettings(max_new_tokens=4, truncate=True, num_return_sequences=2))
    assert len([r for r in caplog.records if "keeping its last 124" in r.getMessage()]) == 1


@pytest.mark.parametrize("more, message", [
    (["-p", "봄", "--max-length", "5000"], "max_length is 5000, more than the model's context of 128"),
    (["-p", "봄봄봄", "--max-length", "2"], "counts them: nothing is left to generate"),
    (["-p", "", "--max-new-tokens", "3"], "the prompt is empty"),
    (["-p", "가" * 300, "--max-new-tokens", "3"], "beyond the model's context of 128"),
])
def test_prompt_errors_come_before_the_load(tiny_dir, monkeypatch, capsys, more, message):
    from kogpt import api

    monkeypatch.setattr(api.KoGPT, "load", lambda *a, **k: pytest.fail("the model was loaded"))
    assert cli.main(["--model", str(tiny_dir), "--device", "cpu", *more]) == 1
    err = capsys.readouterr().err
    assert re.search(message, err) and len(err.strip().splitlines()) == 1


def test_set_checks_limits_against_the_context(gpt, tmp_path):
    code, out, err = run_repl(gpt, "/set max_length 5000" + ENTER + "/set max_new_tokens 128" + ENTER + CTRL_D, tmp_path)
    assert "max_length is 5000, more than the model's context of 128" in err and "at most 127" in err


def test_a_byte_order_mark_is_not_part_of_the_prompt(tiny_dir, tmp_path, gpt):
    path = tmp_path / "p.txt"
    path.write_bytes(b"\xef\xbb\xbf" + '{"prompt": "봄", "max_new_tokens": 3}\n'.encode())
    result = run_kogpt(["--model", str(tiny_dir), "--device", "cpu", "--prompts-file", str(path), "--json"], "")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["prompt"] == "봄"
    single = tmp_path / "one.txt"
    single.write_bytes(b"\xef\xbb\xbf" + "봄".encode())
    result = run_kogpt(["--model", str(tiny_dir), "--device", "cpu", "--prompt-file", str(single), "--json",
                        "--max-new-tokens", "3"], "")
    assert json.loads(result.stdout)["prompt"] == "봄"


def test_plain_lines_may_start_with_a_brace():
    text = "{이름}님 안녕하세요\n{\"prompt\": \"a\"}\n{not json\n"
    assert [p for _, p, _ in parse_prompts_file(text, "p.txt", SamplingSettings())] == text.splitlines()
    with pytest.raises(InputError, match="p.jsonl:1: not a JSON object"):
        list(parse_prompts_file("{이름}님\n", "p.jsonl", SamplingSettings()))


@pytest.mark.parametrize("command, message", [
    ("/set seed -1", "seed must be at least 0 and at most 4294967295, not -1"),
    ("/set max_length 0", "at most 1000000, not 0"),
    ("/set foo 1", "no setting 'foo'; settings: .*truncate, quick"),
    ("/set truncate maybe", "truncate must be on or off, not 'maybe'"),
    ("/set quick maybe", "quick must be on or off, not 'maybe'"),
])
def test_messages(gpt, tmp_path, command, message):
    code, out, err = run_repl(gpt, command + ENTER + CTRL_D, tmp_path)
    assert re.search(message, err), err
    assert "e+0" not in err
    assert str(MAX_SEED) == "4294967295"


def test_every_sequence_has_its_header(gpt, tmp_path):
    code, out, err = run_repl(gpt, "/set num_return_sequences 3" + ENTER + "/set quick on" + ENTER
                              + "/set max_new_tokens 3" + ENTER + "봄" + ENTER + CTRL_D, tmp_path)
    assert [line for line in err.splitlines() if re.fullmatch(r"\[\d/3\]", line)] == ["[1/3]", "[2/3]", "[3/3]"]


def test_flag_errors_are_one_line_exit_2(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["--temperature", "hot"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and len(err.strip().splitlines()) == 1 and "temperature must be a number" in err


def test_plan_exits_1_when_the_model_does_not_fit(tiny_dir, capsys):
    assert cli.main(["--model", str(tiny_dir), "--plan", "--device", "cpu", "--max-memory", "cpu=1KiB"]) == 1
    assert cli.main(["--model", str(tiny_dir), "--plan", "--device", "cpu"]) == 0


def test_the_package_never_needs_its_own_init_attributes():
    """`python -m kogpt` from a directory holding a checkout named kogpt imports the package as a
    namespace package (no __init__ attributes) under an editable install: only submodules may be
    imported from `kogpt` inside it."""
    root = Path(__file__).resolve().parent.parent / "kogpt"
    modules = {p.stem for p in root.iterdir() if p.suffix == ".py" or (p / "__init__.py").exists()}
    for path in root.rglob("*.py"):
        if path.name == "__init__.py" and path.parent == root:
            continue
        for names in re.findall(r"^\s*from kogpt import ([\w, ]+)", path.read_text(encoding="utf-8"), re.M):
            for name in (n.strip().split(" as ")[0] for n in names.split(",")):
                assert name in modules, f"{path}: from kogpt import {name}"


def test_python_m_kogpt_from_the_parent_of_a_checkout(tmp_path):
    import subprocess
    import sys

    (tmp_path / "kogpt").mkdir()  # a checkout's directory: no __init__.py at its top
    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONPATH": ""}
    script = ("import sys\n"
              f"sys.path.insert(0, {str(tmp_path)!r})\n"
              "import kogpt\n"  # the namespace package, as the editable finder leaves it
              f"kogpt.__path__.append({str(root / 'kogpt')!r})\n"
              "from kogpt.cli import main\nraise SystemExit(main(['--version']))\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path, env=env,
                            timeout=60)
    assert result.returncode == 0 and result.stdout.startswith("kogpt "), result.stderr


def test_plan_keeps_library_warnings_for_debug(tiny_dir, monkeypatch, capsys):
    import warnings

    from kogpt.placement import decide

    original = decide.decide

    def noisy(*args, **kwargs):
        warnings.warn("accelerate says something", UserWarning)
        return original(*args, **kwargs)

    monkeypatch.setattr(decide, "decide", noisy)
    for debug, shown in (([], False), (["--debug"], True)):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            assert cli.main(["--model", str(tiny_dir), "--plan", "--device", "cpu", *debug]) == 0
        assert any("accelerate says something" in str(w.message) for w in caught) == shown


def test_the_max_length_question_can_raise_it_above_a_long_prompt(gpt, tmp_path):
    prompt = "가나다라마바사" * 3
    n = len(gpt.encode(prompt))
    assert 10 < n < 100
    code, out, err = run_repl(gpt, "/set max_length 10" + ENTER + prompt + ENTER + ENTER + str(n + 5) + ENTER + CTRL_D,
                              tmp_path)
    assert "nothing is left" not in err and "tokens/s" in err
    code, out, err = run_repl(gpt, "/set max_length 10" + ENTER + "/set quick on" + ENTER + prompt + ENTER + CTRL_D,
                              tmp_path)
    assert f"the prompt is {n} tokens and max_length (10) counts them: nothing is left" in err
