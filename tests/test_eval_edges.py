"""`kogpt eval` at its edges: a prompt ending in whitespace (item 11), choices that are token
prefixes of each other and --normalize (12), one rule for labels' spaces (13), Ctrl-C (25)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from kogpt.cli.main import main
from kogpt.evaluate import data as data_lib
from kogpt.evaluate.fewshot import build
from kogpt.evaluate.runner import Request, evaluate, normalized, requests
from kogpt.evaluate.templates import TASKS, Template

DATA = Path(__file__).parent / "data"


def nsmc_prompts(template, shots=2):
    return build(template, data_lib.read("nsmc", DATA / "nsmc.txt"), None, shots, 1, limit=6)


def test_a_prompt_ending_in_a_space_is_scored_as_lm_eval_does(gpt, caplog):
    spaced = Template("{document}\n감정: ", {"1": "긍정", "0": "부정"})
    plain = Template("{document}\n감정:", {"1": " 긍정", "0": " 부정"})
    task = TASKS["nsmc"]
    with caplog.at_level(logging.INFO, logger="kogpt"):
        got = requests(gpt, task, spaced, nsmc_prompts(spaced))
    want = requests(gpt, task, plain, nsmc_prompts(plain))
    assert got == want  # the space moved into each answer: the same tokens, so the same scores
    assert "end in whitespace" in caplog.text
    assert all(r.context[-1] != gpt.encode(" ")[-1] for r in got)


def test_choices_that_are_token_prefixes_warn(gpt, caplog):
    template = Template("{document}\n", {"1": " 추천", "0": " 추천 안 함"})
    with caplog.at_level(logging.WARNING):
        requests(gpt, TASKS["nsmc"], template, nsmc_prompts(template, 0))
    assert "token prefix" in caplog.text and "--normalize" in caplog.text


def test_normalize_divides_by_tokens_chars_or_bytes():
    request = Request([1], [[5], [6, 7, 8]])
    scores = [-2.0, -3.0]
    assert normalized(scores, request, "none", ()) == scores
    assert normalized(scores, request, "token", ()) == [-2.0, -1.0]
    assert normalized(scores, request, "char", (" 추천", " 추천 안 함")) == [-2.0 / 3, -3.0 / 7]
    assert normalized(scores, request, "byte", (" 추천", " 추천 안 함")) == [-2.0 / 7, -3.0 / 15]


@pytest.mark.parametrize("normalize, predicted", [("none", "0"), ("token", "1")])
def test_normalize_changes_the_choice(gpt, normalize, predicted):
    task = TASKS["nsmc"]  # labels 0, 1
    prompts = nsmc_prompts(task.template, 0)[:1]
    batch = [Request([1, 2], [[3], [4, 5, 6]])]

    def scorer(items, size):
        return iter([[-2.0, -3.0]])  # label 0 more likely in total, label 1 per token

    outcome = evaluate(gpt, task, prompts, batch, scorer=scorer, normalize=normalize)
    assert outcome.predicted == [predicted]


def test_a_label_with_a_leading_space_is_read_in_every_task(tmp_path):
    ynat = tmp_path / "ynat.jsonl"
    ynat.write_text(json.dumps({"title": "코스피 상승", "label": " 경제 "}, ensure_ascii=False) + "\n", encoding="utf-8")
    assert data_lib.read("ynat", ynat).examples[0].label == "경제"
    nsmc = tmp_path / "nsmc.txt"
    nsmc.write_text("id\tdocument\tlabel\n1\t좋아요\t 1\n", encoding="utf-8")
    assert data_lib.read("nsmc", nsmc).examples[0].label == "1"


def test_ctrl_c_keeps_the_items_scored(tiny_dir, capsys, monkeypatch):
    import kogpt.evaluate.runner as runner

    real = runner.score

    def interrupted(model, items, *args, **kwargs):
        for n, scores in enumerate(real(model, items, *args, **kwargs)):
            if n == 5:
                raise KeyboardInterrupt
            yield scores

    monkeypatch.setattr(runner, "score", interrupted)
    code = main(["eval", "nsmc", "--data", str(DATA / "nsmc.txt"), "--model", str(tiny_dir), "--device", "cpu",
                 "--shots", "0", "--batch-size", "2", "--json"])
    captured = capsys.readouterr()
    assert code == 130
    report = json.loads(captured.out)
    assert report["interrupted"] is True and report["counts"]["items"] == 5
    assert sum(map(sum, report["confusion_matrix"])) == 5 and "interrupted" in captured.err
