"""`kogpt eval` end to end through `kogpt.cli.main`, on the tiny checkpoint, with stdout parsed."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from kogpt.cli import evaluate as eval_cli
from kogpt.cli.main import build_parser, main

DATA = Path(__file__).parent / "data"
FILES = {"nsmc": DATA / "nsmc.txt", "ynat": DATA / "ynat.json", "klue-sts": DATA / "sts.json"}
GOLD = {
    "nsmc": {"0": 12, "1": 12},
    "ynat": {"IT과학": 3, "경제": 3, "사회": 2, "생활문화": 2, "세계": 2, "스포츠": 2, "정치": 2},
    "klue-sts": {"0": 5, "1": 7},
}


@pytest.fixture(scope="module")
def long_dir(tiny_dir, tmp_path_factory) -> Path:
    """The tiny checkpoint with a 512-token context, room for a few demonstrations of its long tokens."""
    path = tmp_path_factory.mktemp("tiny-long") / "model"
    shutil.copytree(tiny_dir, path)
    config = json.loads((path / "config.json").read_text())
    config["n_positions"] = 512  # rotary tables are not stored: the weights fit any context
    (path / "config.json").write_text(json.dumps(config))
    return path


def run_json(capsys, model: Path, task: str, *extra: str) -> dict:
    code = main(["eval", task, "--data", str(FILES[task]), "--model", str(model), "--device", "cpu", "--json", *extra])
    out = capsys.readouterr().out
    assert code == 0
    return json.loads(out)


@pytest.mark.parametrize("task", list(FILES))
def test_each_task_end_to_end(capsys, long_dir, task):
    report = run_json(capsys, long_dir, task, "--shots", "2", "--seed", "5", "--batch-size", "3")
    assert report["task"] == task and report["shots"] == 2 and report["seed"] == 5
    assert report["device"] == "cpu" and report["dtype"] in ("float32", "bfloat16")
    assert report["revision"] is None and report["model"] == str(long_dir)
    assert report["data"]["sha256"] == hashlib.sha256(FILES[task].read_bytes()).hexdigest()
    assert report["template"]["choices"] == eval_cli.TASKS[task].template.as_dict()["choices"]
    labels = report["labels"]
    assert {label: row["gold"] for label, row in labels.items()} == GOLD[task]
    assert report["counts"]["items"] == sum(GOLD[task].values())
    assert sum(row["predicted"] for row in labels.values()) == report["counts"]["items"]
    # The metrics, recomputed by hand from the per-label counts (not with kogpt's own functions).
    matrix = report["confusion_matrix"]
    correct = sum(matrix[i][i] for i in range(len(matrix)))
    assert report["counts"]["correct"] == correct
    assert report["metrics"]["accuracy"] == pytest.approx(correct / report["counts"]["items"])
    f1s = [2 * matrix[i][i] / (sum(matrix[i]) + sum(row[i] for row in matrix)) if matrix[i][i] else 0.0
           for i in range(len(matrix))]  # fmt: skip
    if task == "ynat":
        assert report["metrics"]["macro_f1"] == pytest.approx(sum(f1s) / len(f1s))
    if task == "klue-sts":
        assert report["metrics"]["f1"] == pytest.approx(f1s[1])
    assert report["items_per_second"] > 0


def test_same_seed_same_results_other_seed_other_demonstrations(capsys, long_dir):
    volatile = ("seconds", "items_per_second")
    runs = [run_json(capsys, long_dir, "nsmc", "--shots", "3", "--seed", "11") for _ in range(2)]
    first, second = ({k: v for k, v in r.items() if k not in volatile} for r in runs)
    assert first == second
    prompts = []
    for seed in ("11", "11", "12"):
        assert (
            main(["eval", "nsmc", "--data", str(FILES["nsmc"]), "--shots", "3", "--seed", seed, "--show-prompt"]) == 0
        )
        prompts.append(capsys.readouterr().out)
    assert prompts[0] == prompts[1] and prompts[0] != prompts[2]


def test_limit_train_file_and_table(capsys, long_dir):
    args = ["eval", "nsmc", "--data", str(FILES["nsmc"]), "--train", str(DATA / "nsmc_train.txt")]
    code = main([*args, "--limit", "5", "--shots", "2", "--model", str(long_dir), "--device", "cpu"])
    out = capsys.readouterr().out
    assert code == 0
    assert "kogpt eval nsmc" in out and "accuracy" in out and "items/s" in out and "' (긍정)'" in out
    report = run_json(capsys, long_dir, "nsmc", "--train", str(DATA / "nsmc_train.txt"), "--limit", "5")
    assert report["counts"]["items"] == 5 and report["limit"] == 5
    assert report["train"]["items"] == 8


def test_template_file_is_used_and_recorded(capsys, long_dir, tmp_path):
    template = {"prompt": "리뷰: {document}\n감정:", "choices": {"1": " 좋음", "0": " 나쁨"}}
    path = tmp_path / "t.json"
    path.write_text(json.dumps(template, ensure_ascii=False), encoding="utf-8")
    report = run_json(capsys, long_dir, "nsmc", "--template", str(path), "--shots", "1", "--limit", "4")
    assert report["template"] == {**template, "separator": "\n\n"}
    assert report["template_file"] == str(path)
    assert main(["eval", "nsmc", "--data", str(FILES["nsmc"]), "--template", str(path), "--show-prompt"]) == 0
    assert "리뷰: 배우들 연기가 정말 좋았다\n감정:" in capsys.readouterr().out


def test_debug_logs_the_first_prompt(capsys, long_dir):
    code = main(
        [
            "eval",
            "ynat",
            "--data",
            str(FILES["ynat"]),
            "--model",
            str(long_dir),
            "--device",
            "cpu",
            "--shots",
            "1",
            "--limit",
            "2",
            "--json",
            "-d",
        ]
    )
    captured = capsys.readouterr()
    assert code == 0
    assert "full prompt of the first item (line 2)" in captured.err
    assert "새 스마트폰 인공지능 기능 공개" in captured.err


def test_malformed_data_exits_1_naming_file_and_line(capsys, tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_text("id\tdocument\tlabel\n1\t좋다\t1\n2\t별로\t긍정\n", encoding="utf-8")
    assert main(["eval", "nsmc", "--data", str(bad), "--show-prompt"]) == 1
    err = "".join(capsys.readouterr().err.split())  # rich may wrap the long path anywhere
    assert "".join(f"error: {bad}, line 3: the label must be 0 or 1".split()) in err


def test_too_long_prompt_exits_1_before_scoring(capsys, tiny_dir):
    code = main(["eval", "klue-sts", "--data", str(FILES["klue-sts"]), "--model", str(tiny_dir), "--device", "cpu"])
    err = "".join(capsys.readouterr().err.split())
    assert code == 1 and f"{FILES['klue-sts'].name},line2:thepromptis" in err and "usefewer--shots" in err


def test_model_flags_are_shared_with_the_repl():
    model_flags = ["--model", "m", "--revision", "KoGPT6B-ryan1.5b", "--device", "cpu", "--dtype", "bfloat16", "-d"]
    repl = build_parser().parse_args(model_flags)
    ev = eval_cli.build_parser().parse_args(["nsmc", "--data", "x", *model_flags])
    for name in ("model", "revision", "device", "dtype", "debug"):
        assert getattr(repl, name) == getattr(ev, name)
    assert ev.shots == eval_cli.DEFAULT_SHOTS and ev.seed == eval_cli.DEFAULT_SEED
    with pytest.raises(SystemExit):
        eval_cli.build_parser().parse_args(["nsmc", "--data", "x", "--shots", "-1"])
    with pytest.raises(SystemExit):
        build_parser().parse_args(["nsmc"])  # the REPL takes no task: "eval" must come first


def test_help_and_show_prompt_do_not_import_torch(tmp_path):
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from kogpt.cli import main\n"
        f"assert main(['eval', 'ynat', '--data', {str(FILES['ynat'])!r}, '--show-prompt']) == 0\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    root = Path(__file__).parent.parent
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=root, env={"PYTHONPATH": str(root)}
    )
    assert done.returncode == 0, done.stderr
    assert "새 스마트폰 인공지능 기능 공개" in done.stdout
