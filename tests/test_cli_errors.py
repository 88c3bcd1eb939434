"""Issue 18: a flag error is one line that names the bad flag, exit code 2, in every command; a
subcommand after a flag gets the order that works; the usage line shows what a user types."""

from __future__ import annotations

import subprocess
import sys

import pytest

from kogpt.cli.main import main


def refused(argv, capsys) -> str:
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert "usage:" not in err
    return err.strip()


@pytest.mark.parametrize(
    "argv, command",
    [
        (["--frobnicate"], "kogpt"),
        (["serve", "--frobnicate"], "kogpt serve"),
        (["cache", "--frobnicate"], "kogpt cache"),
        (["cache", "list", "--frobnicate=1"], "kogpt cache"),
        (["eval", "--frobnicate"], "kogpt eval"),  # not "--data is required"
        (["eval", "nsmc", "--data", "x", "--frobnicate"], "kogpt eval"),
    ],
)
def test_an_unknown_flag_is_named_in_one_line(argv, command, capsys):
    line = refused(argv, capsys)
    assert line == f"error: unrecognized argument --frobnicate ({command} --help lists the flags)"


@pytest.mark.parametrize(
    "argv, value",
    [
        (["--temperature", "hot"], "argument --temperature"),
        (["serve", "--port", "x"], "argument --port"),
        (["eval", "nsmc", "--data", "x", "--shots", "-1"], "argument --shots"),
        (["cache", "prune"], "argument action"),
    ],
)
def test_a_bad_value_is_named_in_one_line(argv, value, capsys):
    assert value in refused(argv, capsys)


@pytest.mark.parametrize(
    "argv, order",
    [
        (["--model", "X", "eval", "nsmc"], "kogpt eval nsmc --model X"),
        (["-d", "serve", "--port", "1"], "kogpt serve --port 1 -d"),
        (["--device", "cpu", "cache", "list"], "kogpt cache list --device cpu"),
    ],
)
def test_a_subcommand_after_a_flag_gets_the_order_that_works(argv, order, capsys):
    assert refused(argv, capsys).endswith(f"(the subcommand comes first: {order})")


def test_flags_after_the_subcommand_and_abbreviations_and_negative_numbers_still_work():
    from kogpt.cli import evaluate
    from kogpt.cli.main import build_parser

    args = evaluate.build_parser().parse_args(["--model", "X", "nsmc", "--data", "f", "--seed", "-3"])
    assert (args.model, args.task, args.seed) == ("X", "nsmc", -3)
    args = build_parser().parse_args(["--temp", "0.5", "-dp", "x"])
    assert (args.temperature, args.debug, args.prompt) == (0.5, True, "x")


def test_usage_shows_the_command_and_its_subcommands_and_keeps_the_title(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    assert text.startswith("usage: kogpt [FLAGS]")
    for line in ("kogpt eval {nsmc,ynat,klue-sts} --data FILE", "kogpt serve [FLAGS]", "kogpt cache {list,clear}"):
        assert line in text
    assert "KoGPT inference" in text and "KakaoBrain Korean(hangul) Generative Pre-Training Model" in text


def test_python_dash_m_names_itself_in_usage_and_errors():
    result = subprocess.run([sys.executable, "-m", "kogpt", "serve", "--frobnicate"], capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr == "error: unrecognized argument --frobnicate (python -m kogpt serve --help lists the flags)\n"
