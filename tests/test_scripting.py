"""One-shot, stdin and prompts-file modes, JSON output, stop sequences and a closed pipe."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from kogpt.cli.scripting import parse_prompts_file
from kogpt.errors import KoGPTError
from kogpt.settings import SamplingSettings
from tests.test_cli import run_kogpt


def args(tiny_dir, *more):
    return ["--model", str(tiny_dir), "--device", "cpu", *more]


def test_one_shot_prints_only_the_completion(tiny_dir, gpt):
    result = run_kogpt(args(tiny_dir, "-p", "오늘은 날씨가", "--seed", "3", "--max-new-tokens", "12"), "")
    assert result.returncode == 0, result.stderr
    assert result.stdout == gpt.generate("오늘은 날씨가", seed=3, max_new_tokens=12) + "\n"
    assert "tokens/s" in result.stderr


def test_prompt_from_stdin_and_from_a_file(tiny_dir, tmp_path):
    expected = run_kogpt(args(tiny_dir, "-p", "서울의 가을", "--seed", "1", "--max-new-tokens", "8"), "").stdout
    assert run_kogpt(args(tiny_dir, "-p", "-", "--seed", "1", "--max-new-tokens", "8"), "서울의 가을").stdout == expected
    (tmp_path / "p.txt").write_text("서울의 가을", encoding="utf-8")
    from_file = run_kogpt(args(tiny_dir, "--prompt-file", str(tmp_path / "p.txt"), "--seed", "1", "--max-new-tokens", "8"), "")
    assert from_file.stdout == expected


def test_json_lines_parse_back_with_every_field(tiny_dir):
    result = run_kogpt(args(tiny_dir, "-p", "봄", "--json", "--seed", "9", "--max-new-tokens", "5",
                            "--num-return-sequences", "2"), "")
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["index"] for r in records] == [0, 1] and [r["seed"] for r in records] == [9, 10]
    for r in records:
        assert r["prompt"] == "봄" and r["settings"]["max_new_tokens"] == 5
        assert r["completion_tokens"] <= 5 and r["finish_reason"] in {"length", "eos"}
        assert r["seconds"] > 0 and r["prompt_tokens"] > 0


def test_prompts_file_in_order_with_per_line_settings(tiny_dir, tmp_path, gpt):
    lines = ['{"prompt": "봄"}', json.dumps({"prompt": "여름", "temperature": 0, "max_new_tokens": 4}, ensure_ascii=False),
             "", '{"prompt": "가을"}']
    (tmp_path / "prompts.txt").write_text("\n".join(lines), encoding="utf-8")
    result = run_kogpt(args(tiny_dir, "--prompts-file", str(tmp_path / "prompts.txt"), "--json",
                            "--max-new-tokens", "6", "--seed", "2"), "")
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["prompt"] for r in records] == ["봄", "여름", "가을"]
    assert records[1]["settings"]["temperature"] == 0 and records[1]["settings"]["max_new_tokens"] == 4
    assert records[1]["completion"] == gpt.generate("여름", temperature=0, max_new_tokens=4)
    assert records[0]["settings"]["max_new_tokens"] == 6


@pytest.mark.parametrize(
    "line, reason",
    [('{"prompt": 3}', "must be a string"), ('{"temperature": 1}', "no `prompt` field"),
     ('{"prompt": "a", "top_k": -2}', "top_k must be"), ("{not json", "Expecting")],
)
def test_bad_prompts_file_lines_name_the_line(line, reason):
    with pytest.raises(KoGPTError, match=rf"f.txt:2: .*{reason}"):
        list(parse_prompts_file('{"prompt": "좋은 줄"}\n' + line, "f.txt", SamplingSettings()))


def test_invalid_utf8_on_stdin_gives_the_byte_offset(tiny_dir):
    result = subprocess.run([sys.executable, "-m", "kogpt", *args(tiny_dir, "-p", "-")],
                            input="가나".encode() + b"\xff", capture_output=True, timeout=120)
    assert result.returncode == 1
    assert b"standard input is not valid UTF-8: byte 6 is 0xff" in result.stderr
    assert b"Traceback" not in result.stderr


def test_bad_flag_value_says_why(tiny_dir):
    result = run_kogpt(args(tiny_dir, "-p", "봄", "--temperature", "nan"), "")
    assert result.returncode == 2 and "temperature must be a finite number" in result.stderr


def test_closed_stdout_pipe_ends_quietly(tiny_dir):
    kogpt = subprocess.Popen([sys.executable, "-m", "kogpt", *args(tiny_dir, "-p", "봄", "--max-new-tokens", "100",
                              "--num-return-sequences", "8", "--stop", "never")],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    head = subprocess.run(["head", "-c", "1"], stdin=kogpt.stdout, capture_output=True)
    kogpt.stdout.close()
    err = kogpt.stderr.read().decode()
    assert kogpt.wait(timeout=120) in {0, 141}
    assert len(head.stdout) == 1
    assert "Traceback" not in err and "BrokenPipe" not in err


def test_stop_sequence_ends_the_stream_and_is_not_printed(gpt):
    greedy = gpt.generate("오늘은 날씨가", temperature=0, max_new_tokens=40)
    stop = next(greedy[i:i + 2] for i in range(3, len(greedy) - 2) if "\ufffd" not in greedy[i:i + 2])
    chunks = list(gpt.stream("오늘은 날씨가", temperature=0, max_new_tokens=40, stop=[stop]))
    text = "".join(c.text for c in chunks)
    assert text == greedy[: greedy.index(stop)]
    assert chunks[-1].finish_reason == "stop"
    assert chunks[-1].tokens < 40


def test_each_sequence_gets_its_own_line_even_without_text(gpt, monkeypatch):
    """Scripts read one line per sequence: one that produced no text (in the middle or at the end)
    is an empty line, not a shift of the ones after it."""
    import io

    from kogpt.cli import scripting
    from kogpt.cli.render import Renderer
    from kogpt.transcript import Record

    def complete(prompt, settings, on_text=None):
        for index, text in ((0, "하나"), (2, "셋")):
            on_text(index, text)
        return [Record(prompt, t, index=i, completion_tokens=1, seconds=0.1) for i, t in enumerate(["하나", "", "셋", ""])]

    monkeypatch.setattr(gpt, "complete", complete)
    from rich.console import Console

    out = io.StringIO()
    renderer = Renderer(err=Console(file=io.StringIO()))
    assert scripting.run_batch(gpt, [("", "봄", SamplingSettings(num_return_sequences=4))], renderer, False, out) == 0
    assert out.getvalue() == "하나\n\n셋\n\n"
