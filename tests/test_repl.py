"""The REPL end to end through prompt_toolkit's pipe input."""

from __future__ import annotations

import io
import threading

import pytest
from prompt_toolkit.application import create_app_session
from prompt_toolkit.input import create_pipe_input
from prompt_toolkit.output import DummyOutput
from rich.console import Console

from kogpt.cli.render import Renderer
from kogpt.cli.repl import GOODBYE, Repl

ENTER = "\r"
CTRL_C = "\x03"
CTRL_D = "\x04"


def make_renderer() -> Renderer:
    out = Console(file=io.StringIO(), width=80, color_system=None)
    err = Console(file=io.StringIO(), width=200, color_system=None)
    return Renderer(out, err)


def run_repl(gpt, keys: str, tmp_path, renderer=None, repl_hook=None):
    renderer = renderer or make_renderer()
    with create_pipe_input() as inp, create_app_session(input=inp, output=DummyOutput()):
        # From a thread: a long input would fill the pipe and block before the REPL reads it.
        sender = threading.Thread(target=inp.send_text, args=(keys,), daemon=True)
        sender.start()
        repl = Repl(gpt, renderer, history_path=tmp_path / "history")
        if repl_hook:
            repl_hook(repl)
        code = repl.run()
    return code, renderer.out.file.getvalue(), renderer.err.file.getvalue()


def test_a_normal_turn_with_defaults(gpt, tmp_path):
    code, out, err = run_repl(gpt, "오늘은 날씨가" + ENTER + ENTER + ENTER + CTRL_D, tmp_path)
    assert code == 0
    assert out.startswith("오늘은 날씨가")
    assert out.rstrip().endswith(GOODBYE)
    assert "tokens/s" in err
    assert (tmp_path / "history").read_text(encoding="utf-8").count("오늘은 날씨가") == 1


def test_answers_are_used(gpt, tmp_path):
    seen = []

    def hook(repl):
        original = repl.complete
        repl.complete = lambda turn: (seen.append(turn.settings), original(turn))

    run_repl(gpt, "서울" + ENTER + "0.5" + ENTER + "20" + ENTER + CTRL_D, tmp_path, repl_hook=hook)
    assert seen[0].temperature == 0.5 and seen[0].max_length == 20


def test_empty_prompt_asks_again(gpt, tmp_path):
    seen = []

    def hook(repl):
        repl.complete = lambda turn: seen.append(turn.prompt)

    run_repl(gpt, ENTER + "   " + ENTER + "봄" + ENTER + ENTER + ENTER + CTRL_D, tmp_path, repl_hook=hook)
    assert seen == ["봄"]


@pytest.mark.parametrize("bad", ["abc", "-1", "nan", "inf", "1e999", "1e9"])
def test_bad_temperature_is_asked_again(gpt, tmp_path, bad):
    code, out, err = run_repl(gpt, "봄" + ENTER + bad + ENTER + "0.7" + ENTER + "20" + ENTER + CTRL_D, tmp_path)
    assert code == 0
    assert "temperature must be" in err
    assert "tokens/s" in err  # the turn went on with the good answer


@pytest.mark.parametrize("bad, reason", [("abc", "whole number"), ("1.5", "whole number"), ("99999", "at most")])
def test_bad_max_length_is_asked_again(gpt, tmp_path, bad, reason):
    code, out, err = run_repl(gpt, "봄" + ENTER + ENTER + bad + ENTER + "20" + ENTER + CTRL_D, tmp_path)
    assert code == 0 and reason in err and "tokens/s" in err


def test_prompt_longer_than_max_length_says_so(gpt, tmp_path):
    prompt = "한국어 언어 모델은 문장을 이어서 쓰는 일을 잘한다."
    n = len(gpt.encode(prompt))
    keys = prompt + ENTER + ENTER + "3" + ENTER + str(n + 4) + ENTER + CTRL_D
    code, out, err = run_repl(gpt, keys, tmp_path)
    assert f"counts the prompt's {n} tokens" in err
    assert "tokens/s" in err


def test_prompt_longer_than_the_context(gpt, tmp_path):
    code, out, err = run_repl(gpt, "가나다라" * 200 + ENTER + CTRL_D, tmp_path)
    assert code == 0 and "more than the model's context of 128" in err and "truncate" in err


def test_ctrl_c_at_a_question_abandons_the_turn(gpt, tmp_path):
    seen = []

    def hook(repl):
        repl.complete = lambda turn: seen.append(turn.prompt)

    keys = "봄" + ENTER + CTRL_C + "여름" + ENTER + ENTER + ENTER + CTRL_D
    code, _, _ = run_repl(gpt, keys, tmp_path, repl_hook=hook)
    assert code == 0 and seen == ["여름"]


def test_ctrl_c_during_generation_stops_it_and_the_repl_goes_on(gpt, tmp_path):
    renderer = make_renderer()
    calls = []
    original = renderer.completion

    def completion(text):  # Ctrl-C arrives while the second chunk is printed
        calls.append(text)
        if len(calls) == 2:
            raise KeyboardInterrupt
        original(text)

    renderer.completion = completion
    keys = "봄" + ENTER + ENTER + "100" + ENTER + "여름" + ENTER + ENTER + "20" + ENTER + CTRL_D
    code, out, err = run_repl(gpt, keys, tmp_path, renderer=renderer)
    assert code == 0
    assert "[interrupted]" in err
    assert "여름" in out and err.count("tokens/s") == 1  # the next turn completed
    assert not [t for t in threading.enumerate() if t.name == "kogpt-generate" and t.is_alive()]


def test_model_text_is_never_markup():
    renderer = make_renderer()
    renderer.completion("[bold]굵게[/bold] [/x]")
    assert renderer.out.file.getvalue() == "[bold]굵게[/bold] [/x]"


def test_unwritable_history_warns_once_and_goes_on(gpt, tmp_path):
    history = tmp_path / "history"
    history.mkdir()  # a directory where the file should be: every write fails
    renderer = make_renderer()
    with create_pipe_input() as inp, create_app_session(input=inp, output=DummyOutput()):
        inp.send_text("봄" + ENTER + ENTER + "20" + ENTER + "여름" + ENTER + ENTER + "20" + ENTER + CTRL_D)
        code = Repl(gpt, renderer, history_path=history).run()
    err = renderer.err.file.getvalue()
    assert code == 0
    assert err.count("cannot save the prompt history") == 1
    assert err.count("tokens/s") == 2
