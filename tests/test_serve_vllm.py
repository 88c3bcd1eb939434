"""`kogpt eval --engine vllm` without vLLM: a stand-in `LLM` computes prompt log-probabilities the way
vLLM returns them (per position, token id -> Logprob), from the tiny model, and the metrics must equal
the built-in engine's."""

from __future__ import annotations

import json
import shutil
import sys
import types
from pathlib import Path

import pytest
import torch

from kogpt.cli.main import main
from kogpt.evaluate import vllm as eval_vllm
from kogpt.evaluate.scoring import Request, score

DATA = Path(__file__).parent / "data"
FILES = {"nsmc": DATA / "nsmc.txt", "ynat": DATA / "ynat.json", "klue-sts": DATA / "sts.json"}


class FakeLLM:
    """`vllm.LLM.generate` with `prompt_logprobs=0`, on a transformers model."""

    def __init__(self, model) -> None:
        self.model = model
        self.calls = 0

    def generate(self, prompts, params, use_tqdm=True):
        assert params["prompt_logprobs"] == 0 and params["max_tokens"] == 1
        self.calls += 1
        outputs = []
        for prompt in prompts:
            ids = prompt["prompt_token_ids"]
            with torch.inference_mode():
                logits = self.model(torch.tensor([ids])).logits[0].float()
            logp = torch.log_softmax(logits, dim=-1)
            positions = [None] + [
                {ids[i]: types.SimpleNamespace(logprob=logp[i - 1, ids[i]].item())} for i in range(1, len(ids))
            ]
            outputs.append(types.SimpleNamespace(prompt_logprobs=positions))
        return outputs


@pytest.fixture
def fake_vllm(monkeypatch):
    module = types.ModuleType("vllm")
    module.SamplingParams = lambda **kw: kw
    inputs = types.ModuleType("vllm.inputs")
    inputs.TokensPrompt = lambda **kw: kw
    monkeypatch.setitem(sys.modules, "vllm", module)
    monkeypatch.setitem(sys.modules, "vllm.inputs", inputs)


def test_scores_equal_the_built_in_scorer(gpt, fake_vllm):
    requests = [
        Request(gpt.encode("영화가 정말 재미있었다"), [gpt.encode(" (긍정)"), gpt.encode(" (부정)")]),
        Request(gpt.encode("별로"), [gpt.encode(" 예"), gpt.encode(" 아니"), gpt.encode(" 글쎄")]),
    ]
    llm = FakeLLM(gpt.model)
    got = list(eval_vllm.VLLMScorer(llm=llm)(requests, 8))
    want = list(score(gpt.model, requests, 8))
    assert [len(s) for s in got] == [2, 3]
    assert got == [pytest.approx(w, abs=1e-4) for w in want]
    assert llm.calls == 1  # one batch for vLLM to schedule


def test_continuation_logprob_reads_the_right_positions():
    logprob = lambda x: types.SimpleNamespace(logprob=x)  # noqa: E731
    positions = [None, {5: logprob(-1.0)}, {6: logprob(-2.0)}, {7: logprob(-4.0)}]
    assert eval_vllm.continuation_logprob(positions, [4, 5, 6, 7], 2) == -6.0


@pytest.fixture(scope="module")
def long_dir(tiny_dir, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("tiny-long-vllm") / "model"
    shutil.copytree(tiny_dir, path)
    config = json.loads((path / "config.json").read_text())
    config["n_positions"] = 512
    (path / "config.json").write_text(json.dumps(config))
    return path


@pytest.mark.parametrize("task", list(FILES))
def test_eval_engine_vllm_gives_the_same_metrics(task, long_dir, fake_vllm, monkeypatch, capsys):
    from kogpt import KoGPT

    gpt = KoGPT.load(str(long_dir), device="cpu")

    def load(model, revision, dtype, tp, pp, trust_remote_code=False, before_loading=None):
        before_loading(long_dir)  # the prompts are checked before vLLM would load
        described = eval_vllm.Described(model, "cuda (vLLM stand-in)", "float32")
        scorer = eval_vllm.VLLMScorer(llm=FakeLLM(gpt.model))
        return eval_vllm.Engine(gpt.tokenizer, gpt.context_length, scorer, described)

    monkeypatch.setattr(eval_vllm, "load", load)
    monkeypatch.setattr("kogpt.loading.vllm.check_available", lambda: None)  # no GPU here
    argv = [
        "eval",
        task,
        "--data",
        str(FILES[task]),
        "--model",
        str(long_dir),
        "--device",
        "cpu",
        "--json",
        "--shots",
        "2",
    ]
    reports = []
    for engine in ("kogpt", "vllm"):
        assert main([*argv, "--engine", engine]) == 0
        reports.append(json.loads(capsys.readouterr().out))
    built_in, vllm = reports
    assert vllm["engine"] == "vllm" and built_in["engine"] == "kogpt"
    assert vllm["confusion_matrix"] == built_in["confusion_matrix"]
    assert vllm["metrics"] == pytest.approx(built_in["metrics"])
