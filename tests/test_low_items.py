"""Issue 19, item 26: the low ones."""

from __future__ import annotations

import json

from kogpt.cli.history import cap
from kogpt.cli.main import main
from tests.test_repl import CTRL_D, ENTER, run_repl


def test_escape_codes_in_a_file_name_never_reach_the_terminal(capsys, tmp_path):
    name = str(tmp_path / "a\x1b]0;pwned\x07b\x1b[2J.txt")
    assert main(["--prompt-file", name, "--model", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "cannot read" in err and "\x1b" not in err and "\x07" not in err and "␛" in err


def test_retry_says_it_samples_a_new_seed(gpt, tmp_path):
    keys = "/set quick on" + ENTER + "/set max_new_tokens 3" + ENTER + "/set seed 1" + ENTER + "봄" + ENTER + "/retry" + ENTER + CTRL_D
    code, out, err = run_repl(gpt, keys, tmp_path)
    assert code == 0 and "new random seed (the last turn used seed 1)" in " ".join(out.split())


def test_help_says_retry_keeps_the_last_settings(gpt, tmp_path):
    code, out, err = run_repl(gpt, "/help" + ENTER + CTRL_D, tmp_path)
    assert "a later /set is not applied" in " ".join(out.split())


def test_the_history_file_is_capped_to_its_newest_entries(tmp_path):
    path = tmp_path / "history"
    entries = [f"\n# 2026-01-01 00:00:{i % 60:02d}\n+prompt {i}\n" for i in range(5000)]
    path.write_text("".join(entries), encoding="utf-8")
    cap(path, limit=20_000)
    text = path.read_text(encoding="utf-8")
    assert len(text.encode()) <= 10_000 + 100 and text.startswith("\n# ")
    assert text.endswith("+prompt 4999\n") and "+prompt 0\n" not in text


def test_plan_json_names_the_model_as_asked(tiny_dir, capsys):
    assert main(["--model", str(tiny_dir), "--device", "cpu", "--plan", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["model"] == str(tiny_dir)
