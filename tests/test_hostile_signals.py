"""Issue 10, section 3: SIGTERM, SIGHUP and Ctrl-C during a generation keep what was generated:
the partial record reaches the transcript (REPL) or stdout (--json) with finish_reason
"interrupted", then the program exits 143, 129 or 130."""

from __future__ import annotations

import importlib
import io
import json
import os
import signal
import sys
import threading
import time

import pytest

from kogpt.cli import flags, terminal

cli = importlib.import_module("kogpt.cli.main")  # `kogpt.cli.main` the attribute is the function
from tests.test_hardening import slow_forward


@pytest.fixture
def handlers():
    saved = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)}
    yield
    for s, handler in saved.items():
        signal.signal(s, handler)


def kill_when(condition, signum):
    def wait_and_kill():
        deadline = time.monotonic() + 60
        while not condition() and time.monotonic() < deadline:
            time.sleep(0.02)
        os.kill(os.getpid(), signum)

    threading.Thread(target=wait_and_kill, daemon=True).start()


def start(gpt, monkeypatch):
    monkeypatch.setattr(gpt.model, "forward", slow_forward(gpt, 0.05, always="가"))
    gpt.engine.forget()  # the prefix cache holds the real model's logits for prompts earlier tests sent
    monkeypatch.setattr(flags, "load_model", lambda args, renderer: gpt)


SIGNALS = [(signal.SIGTERM, 143), (signal.SIGHUP, 129), (signal.SIGINT, 130)]


@pytest.mark.parametrize("signum, code", SIGNALS)
def test_json_batch_keeps_the_interrupted_record(gpt, tiny_dir, tmp_path, monkeypatch, capfd, handlers, signum, code):
    start(gpt, monkeypatch)
    prompts = tmp_path / "p.txt"
    prompts.write_text("봄\n여름\n가을\n", encoding="utf-8")
    out = io.StringIO()
    monkeypatch.setattr(sys, "stdout", out)
    # Once the first record is out and the second prompt is being generated (not between the two).
    kill_when(lambda: out.getvalue().count("\n") >= 1 and gpt.engine.busy, signum)
    result = cli.main(["--model", str(tiny_dir), "--device", "cpu", "--prompts-file", str(prompts), "--json",
                       "--max-new-tokens", "60", "--seed", "1"])
    assert result == code
    records = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [r["prompt"] for r in records] == ["봄", "여름"]
    assert records[0]["finish_reason"] == "length" and records[1]["finish_reason"] == "interrupted"


@pytest.mark.parametrize("signum, code", SIGNALS[:2])
def test_repl_keeps_the_partial_record_in_the_transcript(gpt, tiny_dir, tmp_path, monkeypatch, handlers, signum, code):
    start(gpt, monkeypatch)
    out = io.StringIO()
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO("봄\n여름\n".encode())))
    monkeypatch.setattr(sys, "stdout", out)
    kill_when(lambda: "가" in out.getvalue(), signum)
    result = cli.main(["--model", str(tiny_dir), "--device", "cpu", "--quick", "--max-new-tokens", "100"])
    assert result == code
    transcript = tmp_path / "data" / "kogpt" / "transcript.jsonl"
    records = [json.loads(line) for line in transcript.read_text(encoding="utf-8").splitlines()]
    assert len(records) == 1 and records[0]["prompt"] == "봄"
    assert records[0]["finish_reason"] == "interrupted" and records[0]["completion"].startswith("가")
    assert records[0]["completion"] in out.getvalue()  # the record is what was shown


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_a_signal_at_the_prompt_ends_the_session_at_once(gpt, tmp_path, handlers, signum):
    """Raised inside prompt_toolkit's event loop, the exception used to wait for the next key."""
    from prompt_toolkit.application import create_app_session
    from prompt_toolkit.input import create_pipe_input
    from prompt_toolkit.output import DummyOutput

    from kogpt.cli.repl import Repl
    from kogpt.errors import Terminated
    from tests.test_repl import make_renderer

    terminal.install_signal_handlers()
    with create_pipe_input() as inp, create_app_session(input=inp, output=DummyOutput()):
        inp.send_text("abc")  # typed, not sent: the session waits at the prompt
        repl = Repl(gpt, make_renderer(), history_path=tmp_path / "history")
        started = time.monotonic()
        kill_when(lambda: time.monotonic() > started + 2, signum)  # once the prompt is up
        with pytest.raises(Terminated) as info:
            repl.run()
    assert info.value.signum == signum and time.monotonic() - started < 30
