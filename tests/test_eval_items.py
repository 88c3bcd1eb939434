"""Issue 22: `kogpt eval --items FILE` writes each item's prompt, candidates, log-likelihoods, token
counts and prediction, one JSON object a line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kogpt.cli.main import main

DATA = Path(__file__).parent / "data"


def test_items_hold_each_items_scores(tmp_path, capsys, gpt, tiny_dir):
    items = tmp_path / "items.jsonl"
    code = main(["eval", "nsmc", "--data", str(DATA / "nsmc.txt"), "--model", str(tiny_dir), "--device", "cpu",
                 "--shots", "0", "--json", "--items", str(items)])  # fmt: skip
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    rows = [json.loads(line) for line in items.read_text(encoding="utf-8").splitlines()]
    assert len(rows) == report["counts"]["items"] == 24
    assert sum(row["gold"] == row["predicted"] for row in rows) == report["counts"]["correct"]
    for row in rows:
        assert set(row) == {"line", "prompt", "candidates", "loglikelihoods", "tokens", "prompt_tokens", "gold",
                            "predicted"}  # fmt: skip
        assert set(row["candidates"]) == set(row["loglikelihoods"]) == set(row["tokens"]) == {"0", "1"}
        best = max(row["loglikelihoods"].values())
        assert row["loglikelihoods"][row["predicted"]] == best
    row = rows[0]
    context = gpt.encode(row["prompt"].rstrip())
    space = row["prompt"][len(row["prompt"].rstrip()):]
    for label, text in row["candidates"].items():
        answer = gpt.encode(space + text)
        assert row["tokens"][label] == len(answer) and row["prompt_tokens"] == len(context)
        scored = gpt.score(context + answer)[len(context) - 1:]
        assert row["loglikelihoods"][label] == pytest.approx(sum(p for p, _ in scored), abs=1e-4)


def test_an_items_file_that_cannot_be_written_fails_before_the_model_loads(tmp_path, capsys, tiny_dir):
    path = tmp_path / "missing" / "items.jsonl"
    code = main(["eval", "nsmc", "--data", str(DATA / "nsmc.txt"), "--model", str(tiny_dir), "--device", "cpu",
                 "--items", str(path)])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 1 and "--items" in err and "cannot write" in err
