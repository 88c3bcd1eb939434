"""Bad input, faults and resource limits: a clear one-line message, and the session goes on."""

from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
import threading
import time

import pytest
import torch

from kogpt import KoGPT, KoGPTError
from kogpt.cli.render import printable
from kogpt.transcript import Transcript
from tests.test_repl import CTRL_D, ENTER, make_renderer, run_repl


def slow_generate(gpt, step_seconds: float, stop_delay: float = 0.0):
    """A stand-in for `model.generate` that emits a token every `step_seconds` until stopped,
    and takes `stop_delay` to notice the stop (a slow decoding step)."""

    def generate(**kwargs):
        streamer, criteria = kwargs["streamer"], kwargs["stopping_criteria"]
        ids = kwargs["input_ids"]
        streamer.put(ids)
        for _ in range(kwargs["max_new_tokens"]):
            time.sleep(step_seconds)
            streamer.put(torch.tensor([gpt.encode("가")[0]]))
            if bool(criteria(ids, None)[0]):
                time.sleep(stop_delay)
                break
        streamer.end()

    return generate


def test_special_token_strings_typed_in_the_repl_are_text(gpt, tmp_path):
    turns = []
    keys = "[BOS]질문[EOS][PAD]" + ENTER + ENTER + "60" + ENTER + CTRL_D

    def hook(repl):
        original = repl.complete
        repl.complete = lambda turn: (turns.append(turn), original(turn))

    code, out, err = run_repl(gpt, keys, tmp_path, repl_hook=hook)
    assert code == 0 and out.startswith("[BOS]질문[EOS][PAD]")
    ids = gpt.encode(turns[0].prompt)
    assert not {0, 1, 3} & set(ids)


def test_control_characters_and_nul_in_a_prompt(gpt, tmp_path):
    code, out, err = run_repl(gpt, "가\x00나\x07다" + ENTER + ENTER + "40" + ENTER + CTRL_D, tmp_path)
    assert code == 0 and "tokens/s" in err


def test_model_text_cannot_drive_the_terminal():
    renderer = make_renderer()
    renderer.completion("a\x1b[2Jb\x07c\rd\x9be\nf")
    shown = renderer.out.file.getvalue()
    assert "\x1b" not in shown and "\x07" not in shown and "\r" not in shown and "\x9b" not in shown
    assert shown == printable("a\x1b[2Jb\x07c\rd\x9be\nf") == "a\u241b[2Jb\u2407c\u240dd\ufffde\nf"


def test_an_extremely_long_pasted_line(gpt, tmp_path):
    long = "가나다라마바사" * 20_000  # pasted: prompt_toolkit receives it as one bracketed paste
    code, out, err = run_repl(gpt, "\x1b[200~" + long + "\x1b[201~" + ENTER + CTRL_D, tmp_path)
    assert code == 0 and "more than the model's context of 128" in err and "truncate" in err


def test_left_truncation_keeps_the_end_of_the_prompt(gpt):
    long = "가나다라마바사" * 100
    with pytest.raises(KoGPTError, match="asks for 8 more, beyond the model's context of 128"):
        gpt.generate(long, max_new_tokens=8)
    chunks = list(gpt.stream(long, max_new_tokens=8, truncate=True, temperature=0))
    assert chunks[-1].tokens <= 8
    ids = gpt.fit_context(gpt.encode(long), gpt_settings(max_new_tokens=8, truncate=True))
    assert len(ids) == 120 and ids == gpt.encode(long)[-120:]


def gpt_settings(**kw):
    from kogpt.settings import SamplingSettings

    return SamplingSettings(**kw)


def test_empty_prompt_in_one_shot_mode(gpt):
    with pytest.raises(KoGPTError, match="the prompt is empty"):
        gpt.generate("")


def test_out_of_memory_in_the_repl_goes_on(gpt, tmp_path, monkeypatch):
    calls = []

    def generate(**kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise torch.OutOfMemoryError("CUDA out of memory")
        return original(**kwargs)

    original = gpt.model.generate
    monkeypatch.setattr(gpt.model, "generate", generate)
    keys = "봄" + ENTER + ENTER + "20" + ENTER + "여름" + ENTER + ENTER + "20" + ENTER + CTRL_D
    code, out, err = run_repl(gpt, keys, tmp_path)
    assert code == 0 and "out of memory" in err and "max_length" in err
    assert err.count("tokens/s") == 1


def test_an_unexpected_worker_error_is_one_line_and_never_hangs(gpt, tmp_path, monkeypatch):
    def broken(**kwargs):
        raise RuntimeError("expected all tensors to be on the same device\nsecond line")

    monkeypatch.setattr(gpt.model, "generate", broken)
    code, out, err = run_repl(gpt, "봄" + ENTER + ENTER + "20" + ENTER + CTRL_D, tmp_path)
    assert code == 0
    assert "generation failed: RuntimeError: expected all tensors" in err
    assert "second line" not in err and "Traceback" not in err


def test_ctrl_c_twice_quickly_stops_once_and_leaves_no_worker(gpt, tmp_path, monkeypatch):
    monkeypatch.setattr(gpt.model, "generate", slow_generate(gpt, 0.01, stop_delay=0.5))
    renderer = make_renderer()
    original = renderer.completion
    fired = []

    def completion(text):
        original(text)
        if not fired:
            fired.append(1)
            main = threading.main_thread().ident

            def two_interrupts():
                for _ in range(2):
                    signal.pthread_kill(main, signal.SIGINT)
                    time.sleep(0.05)

            threading.Thread(target=two_interrupts).start()

    renderer.completion = completion
    keys = "봄" + ENTER + ENTER + "100" + ENTER + CTRL_D
    code, out, err = run_repl(gpt, keys, tmp_path, renderer=renderer)
    assert code == 0 and "[interrupted]" in err
    time.sleep(0.1)
    assert not [t for t in threading.enumerate() if t.name == "kogpt-generate" and t.is_alive()]


def test_unreadable_directory(tiny_dir, monkeypatch):
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if str(p) == str(tiny_dir) else real(p, mode))
    with pytest.raises(KoGPTError, match="cannot read the model directory .*permission denied"):
        KoGPT.load(str(tiny_dir), device="cpu")


def test_hub_revision_that_does_not_exist(monkeypatch):
    import huggingface_hub
    from huggingface_hub.errors import RevisionNotFoundError

    def missing(*args, **kwargs):
        error = RevisionNotFoundError.__new__(RevisionNotFoundError)  # its HTTP response is not needed here
        Exception.__init__(error, "404 Client Error: Revision Not Found")
        raise error

    monkeypatch.setattr(huggingface_hub, "snapshot_download", missing)
    with pytest.raises(KoGPTError, match="has no revision 'nope'"):
        KoGPT.load("kakaobrain/kogpt", revision="nope", device="cpu")


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_pickled_weights_never_run_code(tiny_bin_dir, tmp_path):
    import shutil

    d = shutil.copytree(tiny_bin_dir, tmp_path / "evil")
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    with open(d / "pytorch_model.bin", "wb") as f:
        pickle.dump({"transformer.wte.weight": Evil()}, f)
    with pytest.raises(KoGPTError, match="could not load the weights"):
        KoGPT.load(str(d), device="cpu")
    assert not marker.exists()


def test_remote_code_is_off_unless_asked(tiny_dir, tmp_path, monkeypatch):

    from transformers import AutoConfig

    seen = []
    real = AutoConfig.from_pretrained
    monkeypatch.setattr(AutoConfig, "from_pretrained", lambda *a, **kw: (seen.append(kw), real(*a, **kw))[1])
    KoGPT.load(str(tiny_dir), device="cpu")
    assert seen[-1]["trust_remote_code"] is False


def test_unwritable_transcript_warns_once_and_the_session_goes_on(gpt, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    renderer = make_renderer()
    transcript = Transcript(blocker / "transcript.jsonl", renderer.warning)

    def hook(repl):
        repl.transcript = transcript

    keys = "봄" + ENTER + ENTER + "20" + ENTER + "여름" + ENTER + ENTER + "20" + ENTER + CTRL_D
    code, out, err = run_repl(gpt, keys, tmp_path, renderer=renderer, repl_hook=hook)
    assert code == 0 and err.count("cannot write the transcript") == 1 and err.count("tokens/s") == 2


def test_transcript_keeps_completed_and_interrupted_generations(gpt, tmp_path):
    path = tmp_path / "t.jsonl"
    renderer = make_renderer()
    original = renderer.completion
    count = []

    def completion(text):
        count.append(text)
        if len(count) == 2:
            raise KeyboardInterrupt
        original(text)

    renderer.completion = completion
    keys = "봄" + ENTER + "0" + ENTER + "100" + ENTER + "여름" + ENTER + ENTER + "30" + ENTER + CTRL_D
    run_repl(gpt, keys, tmp_path, renderer=renderer,
             repl_hook=lambda repl: setattr(repl, "transcript", Transcript(path, renderer.warning)))
    records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert [r["prompt"] for r in records] == ["봄", "여름"]
    assert records[0]["finish_reason"] == "interrupted" and records[0]["completion"] == count[0]
    assert records[1]["finish_reason"] in {"length", "eos"}


def test_sigterm_ends_the_repl_cleanly_and_keeps_the_transcript(tiny_dir, tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "XDG_DATA_HOME": str(tmp_path / "data"),
           "XDG_STATE_HOME": str(tmp_path / "state")}
    proc = subprocess.Popen([sys.executable, "-m", "kogpt", "--model", str(tiny_dir), "--device", "cpu"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    proc.stdin.write("봄\n\n20\n".encode())
    proc.stdin.flush()
    transcript = tmp_path / "data" / "kogpt" / "transcript.jsonl"
    deadline = time.monotonic() + 120
    while not transcript.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143
    assert b"Traceback" not in err
    assert json.loads(transcript.read_text(encoding="utf-8"))["prompt"] == "봄"
