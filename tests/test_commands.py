"""Slash commands, settings in the session, multi-line input and tab completion, through the pipe input."""

from __future__ import annotations

import json
import sys

import pytest
from prompt_toolkit.completion import CompleteEvent
from prompt_toolkit.document import Document

from kogpt.cli.commands import CommandCompleter
from tests.test_repl import CTRL_C, CTRL_D, ENTER, run_repl

ESC_ENTER = "\x1b\r"
PASTE_START, PASTE_END = "\x1b[200~", "\x1b[201~"


def prompts_seen(repl_hook_target: list):
    def hook(repl):
        repl.complete = lambda turn: repl_hook_target.append(turn)

    return hook


def test_set_changes_the_setting_and_the_question_default(gpt, tmp_path):
    turns = []
    keys = "/set temperature 0.3" + ENTER + "봄" + ENTER + ENTER + ENTER + CTRL_D
    code, out, err = run_repl(gpt, keys, tmp_path, repl_hook=prompts_seen(turns))
    assert code == 0 and "temperature = 0.3" in out
    assert turns[0].settings.temperature == 0.3


@pytest.mark.parametrize(
    "command, message",
    [
        ("/set temperature abc", "temperature must be a number"),
        ("/set top_p 2", "top_p must be more than 0 and at most 1"),
        ("/set colour red", "no setting 'colour'"),
        ("/set temperature", "usage: /set NAME VALUE"),
        ("/frobnicate", "unknown command /frobnicate; /help"),
        ("/continue", "nothing generated yet"),
        ("/retry", "nothing generated yet"),
        ("/save", "usage: /save FILE"),
    ],
)
def test_bad_commands_say_why_and_the_session_goes_on(gpt, tmp_path, command, message):
    turns = []
    code, out, err = run_repl(gpt, command + ENTER + "봄" + ENTER + ENTER + ENTER + CTRL_D, tmp_path,
                              repl_hook=prompts_seen(turns))
    assert code == 0 and message in err
    assert [t.prompt for t in turns] == ["봄"]


def test_show_lists_every_setting_with_value_and_default(gpt, tmp_path):
    code, out, _ = run_repl(gpt, "/set top_k 40" + ENTER + "/show" + ENTER + CTRL_D, tmp_path)
    for name in ["temperature", "max_length", "max_new_tokens", "top_p", "top_k", "repetition_penalty",
                 "no_repeat_ngram_size", "seed", "stop", "num_return_sequences", "truncate", "quick"]:
        assert name in out
    row = [line for line in out.splitlines() if line.strip().startswith("top_k")][-1]
    assert row.split()[1:3] == ["40", "0"]


def test_reset_restores_defaults(gpt, tmp_path):
    turns = []
    keys = "/set temperature 0.3" + ENTER + "/set quick on" + ENTER + "/reset" + ENTER + "봄" + ENTER + ENTER + ENTER + CTRL_D
    run_repl(gpt, keys, tmp_path, repl_hook=prompts_seen(turns))
    assert turns[0].settings.temperature == 0.8 and turns[0].ask


def test_quick_skips_the_questions(gpt, tmp_path):
    turns = []
    keys = "/set quick on" + ENTER + "/set max_new_tokens 5" + ENTER + "봄" + ENTER + CTRL_D
    run_repl(gpt, keys, tmp_path, repl_hook=prompts_seen(turns))
    assert turns[0].prompt == "봄" and turns[0].settings.max_new_tokens == 5


def test_double_slash_sends_a_literal_slash(gpt, tmp_path):
    turns = []
    run_repl(gpt, "//set 이건 프롬프트" + ENTER + ENTER + ENTER + CTRL_D, tmp_path, repl_hook=prompts_seen(turns))
    assert turns[0].prompt == "/set 이건 프롬프트"


def test_meta_enter_inserts_a_newline(gpt, tmp_path):
    turns = []
    keys = "질문: 하늘은?" + ESC_ENTER + "답:" + ENTER + ENTER + ENTER + CTRL_D
    run_repl(gpt, keys, tmp_path, repl_hook=prompts_seen(turns))
    assert turns[0].prompt == "질문: 하늘은?\n답:"


def test_bracketed_paste_arrives_whole(gpt, tmp_path):
    turns = []
    keys = PASTE_START + "리뷰: 좋다 (긍정)\r\n리뷰: 별로 (부정)\n리뷰: 최고" + PASTE_END + ENTER + ENTER + ENTER + CTRL_D
    run_repl(gpt, keys, tmp_path, repl_hook=prompts_seen(turns))
    assert turns[0].prompt == "리뷰: 좋다 (긍정)\n리뷰: 별로 (부정)\n리뷰: 최고"


def test_continue_retry_and_save(gpt, tmp_path):
    path = tmp_path / "session.jsonl"
    keys = ("/set quick on" + ENTER + "/set max_new_tokens 6" + ENTER + "/set seed 5" + ENTER
            + "봄이 오면" + ENTER + "/continue" + ENTER + "/retry" + ENTER + f"/save {path}" + ENTER + CTRL_D)
    code, out, err = run_repl(gpt, keys, tmp_path)
    assert code == 0 and "saved 3 completions" in out
    first, cont, retry = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert first["prompt"] == "봄이 오면" and first["seed"] == 5
    assert cont["prompt"] == first["prompt"] + first["completion"]
    assert retry["prompt"] == cont["prompt"] and retry["settings"]["seed"] is None  # the last turn again
    assert first["completion"] == gpt.generate("봄이 오면", seed=5, max_new_tokens=6)


def test_num_return_sequences_streams_each(gpt, tmp_path):
    keys = "/set quick on" + ENTER + "/set num_return_sequences 3" + ENTER + "/set max_new_tokens 4" + ENTER + "봄" + ENTER + CTRL_D
    code, out, err = run_repl(gpt, keys, tmp_path)
    assert out.count("봄") >= 3 and "[2/3]" in err and "[3/3]" in err


def test_a_sequence_without_text_still_shows_its_header_and_prompt(gpt, tmp_path, monkeypatch):
    """Random or tiny models often end a sample at once, or with ids that decode to no text: the
    sequence is still shown, in order, as an empty completion after its header and the prompt."""
    from kogpt.transcript import Record

    def complete(prompt, settings, on_text=None, interleaved=False):
        for index, text in ((0, "하나"), (2, "셋")):  # sequence 1 produces nothing
            on_text(index, text)
        return [Record(prompt, text, index=i, completion_tokens=1, seconds=0.1) for i, text in enumerate(["하나", "", "셋"])]

    monkeypatch.setattr(gpt, "complete", complete)
    keys = "/set quick on" + ENTER + "/set num_return_sequences 3" + ENTER + "봄" + ENTER + CTRL_D
    code, out, err = run_repl(gpt, keys, tmp_path)
    assert code == 0 and out.count("봄") == 3 and "봄하나" in out and "봄셋" in out
    assert err.index("[1/3]") < err.index("[2/3]") < err.index("[3/3]")


def test_edit_opens_the_editor_without_a_shell(gpt, tmp_path, monkeypatch):
    editor = tmp_path / "editor.py"
    editor.write_text("import sys\nopen(sys.argv[1], 'w', encoding='utf-8').write('편집한\\n프롬프트')\n")
    monkeypatch.setenv("VISUAL", f"{sys.executable} {editor}")
    turns = []
    run_repl(gpt, "/edit" + ENTER + ENTER + ENTER + CTRL_D, tmp_path, repl_hook=prompts_seen(turns))
    assert turns[0].prompt == "편집한\n프롬프트"


def test_an_editor_that_fails_is_one_line(gpt, tmp_path, monkeypatch):
    monkeypatch.setenv("VISUAL", "/nonexistent/editor")
    code, out, err = run_repl(gpt, "/edit" + ENTER + CTRL_D, tmp_path)
    assert code == 0 and "cannot run the editor" in err


def test_quit(gpt, tmp_path):
    code, out, _ = run_repl(gpt, "/quit" + ENTER + "never" + ENTER, tmp_path)
    assert code == 0 and "terminate" in out


def test_tab_completion_of_commands_and_settings():
    completer = CommandCompleter()

    def complete(text):
        return {c.text for c in completer.get_completions(Document(text), CompleteEvent())}

    assert complete("/s") == {"/set", "/show", "/save"}
    assert complete("/set te") == {"temperature"}
    assert complete("/set q") == {"quick"}
    assert complete("봄 /s") == set() and complete("/show x") == set()


def test_the_session_completes_with_it(gpt, tmp_path):
    holder = []
    run_repl(gpt, CTRL_D, tmp_path, repl_hook=holder.append)
    assert isinstance(holder[0].prompts.completer, CommandCompleter)


def test_ctrl_c_at_the_prompt_keeps_the_session(gpt, tmp_path):
    turns = []
    run_repl(gpt, "반쯤 쓴" + CTRL_C + "봄" + ENTER + ENTER + ENTER + CTRL_D, tmp_path, repl_hook=prompts_seen(turns))
    assert [t.prompt for t in turns] == ["봄"]


def toolbar_text(gpt, tmp_path, monkeypatch, typed: str, keys: str = CTRL_D) -> str:
    from types import SimpleNamespace

    import kogpt.cli.repl

    holder = []
    run_repl(gpt, keys, tmp_path, repl_hook=holder.append)
    app = SimpleNamespace(current_buffer=SimpleNamespace(text=typed))
    monkeypatch.setattr(kogpt.cli.repl, "get_app", lambda: app)
    return "".join(text for _, text in holder[0].toolbar())


def test_toolbar_shows_model_device_settings_and_live_tokens(gpt, tmp_path, monkeypatch):
    text = toolbar_text(gpt, tmp_path, monkeypatch, "오늘은 날씨가", "/set top_k 40" + ENTER + "/set quick on" + ENTER + CTRL_D)
    count = f"{len(gpt.encode('오늘은 날씨가'))}/128 tokens"
    assert text.strip().startswith(count + " · " + gpt.loaded.source.rstrip("/").split("/")[-1])  # count first
    assert "cpu float32" in text and "temperature=0.8 max_length=128" in text and "top_k=40" in text
    assert "quick" in text and f"{len(gpt.encode('오늘은 날씨가'))}/128 tokens" in text


def test_toolbar_does_not_tokenise_a_huge_paste(gpt, tmp_path, monkeypatch):
    text = toolbar_text(gpt, tmp_path, monkeypatch, "가" * 50_000)
    assert "50000 characters, over 128 tokens" in text
