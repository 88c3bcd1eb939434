"""Issue 22: OpenAI's `presence_penalty`, `frequency_penalty`, `logit_bias` and `best_of` on
`/v1/completions` (once accepted at their neutral values only)."""

from __future__ import annotations

import pytest

pytest.importorskip("starlette")

import torch  # noqa: E402

from kogpt.engine.sampling import CountPenalty, LogitBias  # noqa: E402
from kogpt.settings import SamplingSettings  # noqa: E402
from tests.serving import api_client, complete  # noqa: E402

REPETITIVE = "1 2 3"  # the tiny model's greedy completion of it repeats tokens


@pytest.fixture(scope="module")
def http(gpt):
    with api_client(gpt) as client:
        yield client


def refused(http, **body) -> dict:
    response = http.post("/v1/completions", json=body)
    assert response.status_code == 400, response.text
    return response.json()["error"]


def greedy_tokens(http, **extra) -> list[str]:
    reply = complete(http, prompt=REPETITIVE, max_tokens=24, temperature=0, logprobs=0, **extra)
    return reply["choices"][0]["logprobs"]["tokens"]


def test_the_penalties_follow_openais_formula():
    scores = torch.zeros(2, 5)
    history = torch.tensor([[9, 9, 1, 1, 1, 2], [9, 9, 4, 4, 4, 4]])  # two prompt tokens, then the completion
    out = CountPenalty(presence=0.5, frequency=0.25, prompt=2)(history, scores)
    expected = torch.tensor([[0, -0.5 - 0.75, -0.5 - 0.25, 0, 0], [0, 0, 0, 0, -0.5 - 1.0]])
    assert torch.equal(out, expected)  # the prompt's tokens (9 is outside the vocabulary here) count for nothing
    biased = LogitBias({3: -100.0, 0: 2.5})(None, torch.zeros(2, 5))
    assert biased.tolist() == [[2.5, 0, 0, -100, 0]] * 2


def test_frequency_penalty_breaks_a_repetitive_greedy_completion(http, gpt):
    plain = greedy_tokens(http)
    assert len(set(plain)) < len(plain)  # repeats
    penalised = greedy_tokens(http, frequency_penalty=1.0)
    assert penalised != plain and len(set(penalised)) > len(set(plain))


def test_presence_penalty_changes_a_repetitive_greedy_completion(http, gpt):
    plain = greedy_tokens(http)
    penalised = greedy_tokens(http, presence_penalty=1.0)
    assert penalised != plain and len(set(penalised)) > len(set(plain))
    assert greedy_tokens(http, presence_penalty=0, frequency_penalty=0.0) == plain


def test_logit_bias_moves_greedy_decoding(http, gpt):
    with torch.inference_mode():
        picked = int(gpt.model(torch.tensor([gpt.encode(REPETITIVE)])).logits[0, -1].argmax())  # greedy's first
    plain = complete(http, prompt=REPETITIVE, max_tokens=1, temperature=0, logprobs=0)["choices"][0]["logprobs"]
    banned = complete(http, prompt=REPETITIVE, max_tokens=1, temperature=0, logprobs=0,
                      logit_bias={str(picked): -100})["choices"][0]["logprobs"]  # fmt: skip
    assert banned["tokens"] != plain["tokens"]
    assert banned["token_logprobs"][0] < plain["token_logprobs"][0]  # raw: the bias does not lift its logprob
    (a,) = gpt.encode("a")
    forced = complete(http, prompt=REPETITIVE, max_tokens=4, temperature=0, logit_bias={str(a): 100})
    assert forced["choices"][0]["text"] == "aaaa"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"presence_penalty": 2.5}, "presence_penalty"),
        ({"frequency_penalty": -3}, "frequency_penalty"),
        ({"frequency_penalty": "1"}, "frequency_penalty"),
        ({"logit_bias": {"48": 101}}, "logit_bias"),
        ({"logit_bias": {"99999": 1}}, "logit_bias"),
        ({"logit_bias": {"-1": 1}}, "logit_bias"),
        ({"logit_bias": [1]}, "logit_bias"),
        ({"best_of": 3, "n": 4}, "best_of"),
        ({"best_of": 17}, "best_of"),
        ({"best_of": 2, "stream": True}, "best_of"),
        ({"best_of": 9, "prompt": ["a", "b"]}, "best_of"),
    ],
)
def test_bad_values_are_refused_naming_the_field(http, body, param):
    assert refused(http, **{"prompt": "a", "max_tokens": 1, **body})["param"] == param


def test_best_of_returns_the_n_most_likely_of_its_choices(http):
    body = {"prompt": REPETITIVE, "max_tokens": 6, "temperature": 1.0, "seed": 11}
    every = complete(http, n=5, logprobs=0, **body)["choices"]
    ranked = sorted(every, key=lambda c: -sum(c["logprobs"]["token_logprobs"]))
    assert [c["index"] for c in ranked[:2]] != [0, 1]  # with this seed, keeping the first n would be wrong
    best = complete(http, n=2, best_of=5, **body)
    assert [c["text"] for c in best["choices"]] == [c["text"] for c in ranked[:2]]
    assert [c["index"] for c in best["choices"]] == [0, 1]
    assert all(c["logprobs"] is None for c in best["choices"])  # not asked for
    assert best["usage"]["completion_tokens"] == sum(len(c["logprobs"]["tokens"]) for c in every)
    shown = complete(http, n=1, best_of=5, logprobs=1, **body)["choices"]
    assert shown[0]["text"] == ranked[0]["text"]
    # the same rows decode in another batch: equal but for the low bits (docs/serve.md, Determinism)
    assert shown[0]["logprobs"]["token_logprobs"] == pytest.approx(ranked[0]["logprobs"]["token_logprobs"], abs=1e-5)


def test_the_one_request_loop_gives_the_same_logprobs_and_penalties(gpt):
    """The static-cache loop (CUDA's, `engine/loop.py`) computes them as the batching scheduler does."""
    from kogpt import KoGPT
    from kogpt.engine import Extras

    fast = KoGPT(gpt.loaded, static_cache=True)
    ids = gpt.encode(REPETITIVE)
    settings = SamplingSettings(temperature=0, max_new_tokens=12)
    for extras in (Extras(logprobs=2), Extras(logprobs=0, frequency_penalty=1.0, logit_bias={5: -100.0})):
        got = [(e.token, e.logprob, e.top) for c in fast.engine.stream(ids, settings, 0, extras=extras)
               for e in c.logprobs]  # fmt: skip
        want = [(e.token, e.logprob, e.top) for c in gpt.engine.stream(ids, settings, 0, extras=extras)
                for e in c.logprobs]  # fmt: skip
        assert [t for t, _, _ in got] == [t for t, _, _ in want] and len(got) == 12
        assert [p for _, p, _ in got] == pytest.approx([p for _, p, _ in want], abs=1e-5)
        assert [[i for i, _ in top] for _, _, top in got] == [[i for i, _ in top] for _, _, top in want]
