"""The log-likelihood scorer against a plain forward pass of the tiny model."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch

from kogpt.errors import KoGPTError
from kogpt.evaluate import data, fewshot, runner
from kogpt.evaluate.scoring import Request, score
from kogpt.evaluate.templates import TASKS

NSMC = Path(__file__).parent / "data" / "nsmc.txt"


def direct(model, request: Request) -> list[float]:
    """Sum of log-softmax of each label token given the prompt, one plain forward per candidate."""
    out = []
    for cont in request.continuations:
        ids = torch.tensor([request.context + cont])
        with torch.no_grad():
            logp = torch.log_softmax(model(ids).logits.float(), dim=-1)[0]
        out.append(sum(logp[len(request.context) - 1 + i, token].item() for i, token in enumerate(cont)))
    return out


def random_requests(vocab: int, n: int = 9, seed: int = 0) -> list[Request]:
    rng = random.Random(seed)
    ids = lambda k: [rng.randrange(5, vocab) for _ in range(k)]  # noqa: E731
    return [
        Request(ids(rng.randint(1, 30)), [ids(rng.randint(1, 4)) for _ in range(rng.randint(2, 7))]) for _ in range(n)
    ]


@pytest.fixture(scope="module")
def reqs(gpt):
    return random_requests(len(gpt.tokenizer))


@pytest.fixture(scope="module")
def reference(gpt, reqs):
    return [direct(gpt.model, r) for r in reqs]


@pytest.mark.parametrize("method", ["prefix", "full"])
@pytest.mark.parametrize("batch_size", [1, 4, 100])
def test_scores_equal_a_plain_forward(gpt, reqs, reference, method, batch_size):
    got = list(score(gpt.model, reqs, batch_size, method, pad_id=gpt.tokenizer.pad_token_id))
    assert [len(g) for g in got] == [len(r.continuations) for r in reqs]
    for mine, theirs in zip(got, reference, strict=True):
        assert mine == pytest.approx(theirs, abs=1e-4)


def test_batched_equals_unbatched(gpt, reqs):
    one = list(score(gpt.model, reqs, 1, "prefix"))
    for batch_size in (2, 9):
        for a, b in zip(list(score(gpt.model, reqs, batch_size, "prefix")), one, strict=True):
            assert a == pytest.approx(b, abs=1e-5)


def test_scores_are_log_probabilities_that_differ_between_labels(reference):
    flat = [s for item in reference for s in item]
    assert all(s < 0 for s in flat) and len({round(s, 4) for s in flat}) > len(flat) // 2


def test_single_token_candidates_score_as_the_direct_computation(gpt):
    reqs = [Request([10, 11, 12], [[20], [21], [22]]), Request([13], [[20], [21], [22]])]
    got = list(score(gpt.model, reqs, 2, "prefix"))
    for mine, request in zip(got, reqs, strict=True):
        assert mine == pytest.approx(direct(gpt.model, request), abs=1e-4)


def test_bfloat16_model_scores_in_float32_close_to_float32(gpt, reqs, reference):
    from kogpt import KoGPT

    half = KoGPT.load(gpt.loaded.source, device="cpu", dtype="bfloat16")
    assert half.loaded.dtype == torch.bfloat16
    got = list(score(half.model, reqs, 4, "prefix"))
    for mine, theirs in zip(got, reference, strict=True):
        assert mine == pytest.approx(theirs, abs=0.5, rel=0.05)


def test_bad_requests_are_refused(gpt):
    with pytest.raises(ValueError):
        list(score(gpt.model, [Request([], [[1]])]))
    with pytest.raises(ValueError):
        list(score(gpt.model, [Request([1], [[1]])], method="sampled"))


def test_evaluate_predicts_the_most_likely_label(gpt):
    task = TASKS["nsmc"]
    prompts = fewshot.build(task.template, data.read("nsmc", NSMC), None, 0, 1, limit=6)
    reqs = runner.requests(gpt, task, task.template, prompts)
    assert reqs[0].context == gpt.encode("배우들 연기가 정말 좋았다")
    assert reqs[0].continuations == [gpt.encode(" (부정)"), gpt.encode(" (긍정)")]
    seen = []
    outcome = runner.evaluate(gpt, task, prompts, reqs, batch_size=4, advance=seen.append)
    assert sum(seen) == 6
    for item, scores, predicted in zip(reqs, outcome.scores, outcome.predicted, strict=True):
        expected = direct(gpt.model, item)
        assert scores == pytest.approx(expected, abs=1e-4)
        assert predicted == task.labels[expected.index(max(expected))]
    assert outcome.gold == [p.example.label for p in prompts]


def test_prompts_longer_than_the_context_are_refused_with_the_line(gpt):
    task = TASKS["nsmc"]
    ds = data.read("nsmc", NSMC)
    prompts = fewshot.build(task.template, ds, None, 20, 1, limit=2)
    with pytest.raises(KoGPTError, match=r"nsmc.txt, line 2: the prompt is \d+ tokens.*128-token"):
        runner.requests(gpt, task, task.template, prompts, str(NSMC))


@pytest.mark.parametrize("attention", ["eager", "sdpa"])
def test_both_attention_implementations_agree(gpt, reqs, reference, attention):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(gpt.loaded.source, attn_implementation=attention).eval()
    assert model.config._attn_implementation == attention
    for mine, theirs in zip(score(model, reqs, 5, "prefix"), reference, strict=True):
        assert mine == pytest.approx(theirs, abs=1e-4)
