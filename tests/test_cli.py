"""The command line: flags, help, one-line failures, and a real `python -m kogpt` subprocess."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from kogpt.cli.main import build_parser, main
from kogpt.cli.repl import GOODBYE


def test_help_keeps_the_original_interface(capsys):
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args(["--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    assert text.startswith("usage: kogpt [FLAGS]")
    assert "KoGPT inference" in text and "KakaoBrain Korean(hangul) Generative Pre-Training Model" in text
    for flag in ["--model", "--revision", "--device {cpu,cuda}", "--dtype", "-d, --debug"]:
        assert flag in text


def test_defaults():
    args = build_parser().parse_args([])
    assert (args.model, args.revision, args.device, args.dtype, args.debug) == (
        "kakaobrain/kogpt", "KoGPT6B-ryan1.5b-float16", "cuda", "auto", False,
    )


@pytest.mark.parametrize("argv", [["--device", "tpu"], ["--revision", "main"], ["--dtype", "int3"]])
def test_bad_flag_values_are_refused(argv, capsys):
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args(argv)
    assert exit_.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


def test_missing_directory_is_one_line_and_exit_1(tmp_path, capsys):
    code = main(["--model", str(tmp_path / "missing"), "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 1
    assert "error: no such model directory" in err
    assert "Traceback" not in err


def test_broken_checkpoint_is_one_line(tmp_path, capsys):
    (tmp_path / "config.json").write_text("{not json")
    (tmp_path / "model.safetensors").write_bytes(b"\0" * 16)
    code = main(["--model", str(tmp_path), "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 1 and "is not a valid model config" in err and "Traceback" not in err


def test_debug_shows_the_traceback(tmp_path, capsys):
    code = main(["--model", str(tmp_path / "missing"), "--device", "cpu", "--debug"])
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" in err


def run_kogpt(args, stdin: str, env_extra=None) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", **(env_extra or {})}
    return subprocess.run(
        [sys.executable, "-m", "kogpt", *args], input=stdin, capture_output=True, text=True,
        timeout=180, env=env,
    )


def test_python_m_kogpt_with_piped_answers(tiny_dir, tmp_path):
    answers = "오늘은 날씨가\n\n40\n서울의 가을\nabc\n0.5\n30\n"
    result = run_kogpt(
        ["--model", str(tiny_dir), "--device", "cpu"], answers, {"XDG_STATE_HOME": str(tmp_path)}
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert out.count("prompt> ") == 3 and "temperature(0.8)> " in out and "max_length(128)> " in out
    assert "오늘은 날씨가" in out and "서울의 가을" in out
    assert out.rstrip().endswith(GOODBYE)
    assert "temperature must be a number, not 'abc'" in result.stderr
    assert result.stderr.count("tokens/s") == 2
    assert "Traceback" not in result.stderr


def test_python_m_kogpt_debug_logs_the_steps(tiny_dir, tmp_path):
    result = run_kogpt(
        ["--model", str(tiny_dir), "--device", "cuda", "--debug"], "봄\n\n20\n", {"XDG_STATE_HOME": str(tmp_path)}
    )
    assert result.returncode == 0, result.stderr
    err = result.stderr
    for needle in ["CUDA is not available", "is a local directory", "dtype float32 on cpu", "parameters",
                   "prompt: ", "generating up to", "tokens in"]:
        assert needle in err, needle
    assert "] [DEBUG] " in err  # timestamps and levels
