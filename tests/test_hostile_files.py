"""Issue 10, section 2 (and the 0600 rule of section 6): `/save` is atomic, never replaces what
is not a regular file, asks before replacing a file (or takes --force), and reads its argument as
a shell word; every editor failure is one line; files holding what the user typed are 0600."""

from __future__ import annotations

import json
import os
import stat
import sys

import pytest

from kogpt import transcript
from kogpt.transcript import Record, write_jsonl
from tests.test_repl import CTRL_D, ENTER, run_repl

TURN = "봄이 오면" + ENTER + ENTER + "20" + ENTER


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def saved_prompts(path) -> list[str]:
    return [json.loads(line)["prompt"] for line in open(path, encoding="utf-8")]


def test_a_quoted_name_with_spaces_is_one_file(gpt, tmp_path):
    target = tmp_path / "my dir" / "quoted name.jsonl"
    target.parent.mkdir()
    code, out, err = run_repl(gpt, TURN + f'/save "{target}"' + ENTER + CTRL_D, tmp_path)
    assert code == 0 and "saved 1 completion to" in out, err
    assert saved_prompts(target) == ["봄이 오면"] and mode(target) == 0o600
    assert not any(p.name.startswith('"') for p in tmp_path.rglob("*"))


@pytest.mark.parametrize("kind", ["symlink", "fifo", "directory", "dangling symlink"])
def test_what_is_not_a_regular_file_is_never_replaced(gpt, tmp_path, kind):
    target = tmp_path / "target"
    real = tmp_path / "real.txt"
    real.write_text("keep me")
    if kind == "symlink":
        target.symlink_to(real)
    elif kind == "dangling symlink":
        target.symlink_to(tmp_path / "nowhere")
    elif kind == "fifo":
        os.mkfifo(target)
    else:
        target.mkdir()
    before = os.lstat(target)
    code, out, err = run_repl(gpt, TURN + f"/save {target} --force" + ENTER + CTRL_D, tmp_path)
    assert code == 0 and f"cannot save to {target}: it is a" in err and "never replaced" in err
    after = os.lstat(target)
    assert (after.st_mode, after.st_ino) == (before.st_mode, before.st_ino)
    assert real.read_text() == "keep me"
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_a_device_is_never_replaced(gpt, tmp_path):
    code, out, err = run_repl(gpt, TURN + "/save /dev/null --force" + ENTER + CTRL_D, tmp_path)
    assert code == 0 and "cannot save to /dev/null: it is a character device" in err
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)


@pytest.mark.parametrize("answer, replaced", [("y", True), ("yes", True), ("n", False), ("", False)])
def test_an_existing_file_is_replaced_only_after_a_yes(gpt, tmp_path, answer, replaced):
    target = tmp_path / "old.jsonl"
    target.write_text("old\n")
    code, out, err = run_repl(gpt, TURN + f"/save {target}" + ENTER + answer + ENTER + CTRL_D, tmp_path)
    assert code == 0
    if replaced:
        assert saved_prompts(target) == ["봄이 오면"] and "saved 1 completion" in out
    else:
        assert target.read_text() == "old\n" and "not saved" in out


def test_force_replaces_without_asking(gpt, tmp_path):
    target = tmp_path / "old.jsonl"
    target.write_text("old\n")
    code, out, err = run_repl(gpt, TURN + f"/save --force {target}" + ENTER + CTRL_D, tmp_path)
    assert code == 0 and saved_prompts(target) == ["봄이 오면"]


@pytest.mark.parametrize("args", ['"unclosed', "a b", ""])
def test_bad_save_arguments_are_one_line(gpt, tmp_path, args):
    code, out, err = run_repl(gpt, f"/save {args}" + ENTER + CTRL_D, tmp_path)
    assert code == 0 and len(err.strip().splitlines()) == 1 and ("usage: /save FILE" in err or "/save:" in err)


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    target = tmp_path / "old.jsonl"
    target.write_text("old\n")

    def full(*args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(transcript.os, "replace", full)
    with pytest.raises(OSError):
        write_jsonl(target, [Record("봄")])
    assert target.read_text() == "old\n" and sorted(p.name for p in tmp_path.iterdir()) == ["old.jsonl"]


def test_a_missing_directory_is_one_line(gpt, tmp_path):
    code, out, err = run_repl(gpt, TURN + f"/save {tmp_path}/no/such/f.jsonl" + ENTER + CTRL_D, tmp_path)
    assert code == 0 and "No such file or directory; nothing was changed" in err
    assert not (tmp_path / "no").exists()


@pytest.mark.parametrize(
    "editor, message",
    [('"unclosed', "cannot be read as a command: No closing quotation"),
     ("/nonexistent/editor", "cannot run the editor"),
     ("false", "exited with status 1"),
     (f"{sys.executable} -c \"import os,signal; os.kill(os.getpid(), signal.SIGKILL)\"", "stopped by signal 9"),
     (f"{sys.executable} -c \"import sys,os; os.unlink(sys.argv[1])\"", "cannot read back the edited prompt")],
)
def test_every_editor_failure_is_one_line_and_the_session_goes_on(gpt, tmp_path, monkeypatch, editor, message):
    monkeypatch.setenv("VISUAL", editor)
    code, out, err = run_repl(gpt, "/edit" + ENTER + "/show" + ENTER + CTRL_D, tmp_path)
    assert code == 0 and message in err and len(err.strip().splitlines()) == 1
    assert "temperature" in out  # /show ran after the failure


@pytest.mark.parametrize("editor, message", [("'unclosed", "No closing quotation"), ("false", "exited with status 1")])
def test_ctrl_x_ctrl_e_with_a_bad_editor_is_one_line(gpt, tmp_path, monkeypatch, editor, message):
    import threading
    import time

    from prompt_toolkit.application import create_app_session
    from prompt_toolkit.input import create_pipe_input
    from prompt_toolkit.output import DummyOutput

    from kogpt.cli.repl import Repl
    from tests.test_repl import make_renderer

    monkeypatch.setenv("VISUAL", editor)
    renderer = make_renderer()

    def type_slowly(inp):
        inp.send_text("봄\x18\x05")  # Ctrl-X Ctrl-E: the editor, from the prompt
        deadline = time.monotonic() + 60  # the rest only once the failure was reported, however busy the CPU
        while message not in renderer.err.file.getvalue() and time.monotonic() < deadline:
            time.sleep(0.05)
        inp.send_text(ENTER + ENTER + "20" + ENTER + CTRL_D)

    with create_pipe_input() as inp, create_app_session(input=inp, output=DummyOutput()):
        threading.Thread(target=type_slowly, args=(inp,), daemon=True).start()
        code = Repl(gpt, renderer, history_path=tmp_path / "history").run()
    err = renderer.err.file.getvalue()
    assert code == 0 and message in err and "tokens/s" in err  # the line was kept and completed


def test_an_empty_visual_falls_back_to_editor(gpt, tmp_path, monkeypatch):
    editor = tmp_path / "editor.py"
    editor.write_text("import sys\nopen(sys.argv[1], 'w', encoding='utf-8').write('편집')\n")
    monkeypatch.setenv("VISUAL", "  ")
    monkeypatch.setenv("EDITOR", f"{sys.executable} {editor}")
    turns = []

    def hook(repl):
        repl.complete = turns.append

    run_repl(gpt, "/edit" + ENTER + ENTER + "20" + ENTER + CTRL_D, tmp_path, repl_hook=hook)
    assert [t.prompt for t in turns] == ["편집"]


def test_history_is_private_even_when_it_was_not(gpt, tmp_path):
    history = tmp_path / "history"
    run_repl(gpt, TURN + CTRL_D, tmp_path)
    assert mode(history) == 0o600
    os.chmod(history, 0o644)  # as kogpt 0.2.0 left it
    run_repl(gpt, "여름" + ENTER + ENTER + "20" + ENTER + CTRL_D, tmp_path)
    assert mode(history) == 0o600 and "봄이 오면" in history.read_text(encoding="utf-8")


def test_transcript_is_private(tmp_path):
    path = tmp_path / "t" / "transcript.jsonl"
    transcript.Transcript(path, print).add([Record("봄")])
    assert mode(path) == 0o600
