"""Issue 22: `logprobs` on `/v1/completions` in OpenAI's legacy shape, plain, streamed and echoed,
the model's raw log-softmax (before temperature and the other processors, as vLLM's default)."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("starlette")
openai = pytest.importorskip("openai")

import torch  # noqa: E402

from kogpt.engine import Extras  # noqa: E402
from kogpt.engine.chunk import TokenLogprob  # noqa: E402
from kogpt.server.app import ServerState, create_app  # noqa: E402
from kogpt.server.logprobs import Shaper  # noqa: E402
from kogpt.settings import SamplingSettings  # noqa: E402
from tests.serving import api_client, complete, running  # noqa: E402

PROMPT = "인간처럼 생각하고, 행동하는"


@pytest.fixture(scope="module")
def http(gpt):
    with api_client(gpt) as client:
        yield client


def events(http, **body) -> list[dict]:
    response = http.post("/v1/completions", json={**body, "stream": True})
    assert response.status_code == 200, response.text
    lines = [line[len("data: "):] for line in response.text.splitlines() if line.startswith("data: ")]
    assert lines[-1] == "[DONE]"
    return [json.loads(line) for line in lines[:-1]]


def raw_logprobs(gpt, ids: list[int]) -> torch.Tensor:
    """(len(ids), vocab) log-softmax of the model's float32 logits after each prefix of `ids`."""
    with torch.inference_mode():
        return torch.log_softmax(gpt.model(torch.tensor([ids])).logits[0].float(), dim=-1)


def sampled(gpt, prompt_ids, **settings) -> list[TokenLogprob]:
    chunks = gpt.engine.stream(prompt_ids, SamplingSettings(**settings), 0, extras=Extras(logprobs=3))
    return [entry for chunk in chunks for entry in chunk.logprobs or []]


def test_plain_logprobs_are_the_models_raw_log_softmax(http, gpt):
    reply = complete(http, prompt=PROMPT, max_tokens=8, temperature=0, logprobs=3)
    (choice,) = reply["choices"]
    logprobs = choice["logprobs"]
    assert set(logprobs) == {"tokens", "token_logprobs", "top_logprobs", "text_offset"}
    n = reply["usage"]["completion_tokens"]
    assert all(len(logprobs[key]) == n for key in logprobs)
    ids = gpt.encode(PROMPT)
    tokens = [e.token for e in sampled(gpt, ids, temperature=0, max_new_tokens=8)]
    expected = raw_logprobs(gpt, ids + tokens)
    for i, (token, value, top) in enumerate(zip(tokens, logprobs["token_logprobs"], logprobs["top_logprobs"])):
        row = expected[len(ids) - 1 + i]
        assert value == pytest.approx(row[token].item(), abs=1e-4)
        assert value == pytest.approx(max(top.values()), abs=1e-6)  # greedy: the most likely token
        assert 3 <= len(top) <= 4  # the top 3, and the chosen one when it is not among them
        assert sorted(top.values(), reverse=True)[:3] == pytest.approx(row.topk(3).values.tolist(), abs=1e-4)


def test_logprobs_come_before_temperature_and_top_k(gpt):
    ids = gpt.encode(PROMPT)
    cold = sampled(gpt, ids, temperature=0.3, top_k=2, seed=1, max_new_tokens=1)[0]
    hot = sampled(gpt, ids, temperature=5.0, seed=1, max_new_tokens=1)[0]
    assert [t for t, _ in cold.top] == [t for t, _ in hot.top]  # one distribution, whatever the settings
    assert [p for _, p in cold.top] == pytest.approx([p for _, p in hot.top], abs=1e-6)
    assert len(cold.top) == 3  # top-k 2 does not hide the third most likely token


def test_streamed_chunks_carry_their_own_tokens(http):
    body = {"prompt": PROMPT, "max_tokens": 10, "temperature": 0, "logprobs": 2}
    plain = complete(http, **body)["choices"][0]
    chunks = [event["choices"][0] for event in events(http, **body)]
    assert "".join(c["text"] for c in chunks) == plain["text"]
    merged = {key: [v for c in chunks for v in c["logprobs"][key]] for key in plain["logprobs"]}
    assert merged == plain["logprobs"]
    at = 0
    for chunk in chunks:
        offsets = chunk["logprobs"]["text_offset"]
        assert all(at <= o <= at + len(chunk["text"]) for o in offsets)
        at += len(chunk["text"])


def test_requests_that_do_not_ask_compute_nothing(http, monkeypatch):
    def refuse(*args):
        raise AssertionError("log-probabilities computed for a request that did not ask")

    monkeypatch.setattr("kogpt.engine.scheduler.logprobs_of", refuse)
    assert complete(http, prompt=PROMPT, max_tokens=3)["choices"][0]["logprobs"] is None
    assert all(e["choices"][0]["logprobs"] is None for e in events(http, prompt=PROMPT, max_tokens=3))


def test_logprobs_zero_gives_the_chosen_token_alone(http):
    logprobs = complete(http, prompt=PROMPT, max_tokens=3, temperature=0, logprobs=0)["choices"][0]["logprobs"]
    assert all(len(top) == 1 for top in logprobs["top_logprobs"])


@pytest.mark.parametrize("value", [21, -1, 1.5, True, "3"])
def test_bad_logprobs_are_refused_naming_the_field(http, value):
    response = http.post("/v1/completions", json={"prompt": PROMPT, "logprobs": value})
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "logprobs"


def test_korean_tokens_and_offsets(gpt):
    """A syllable split across byte-level tokens: its pieces are shown as `bytes:` and share its offset."""
    text = "인간처럼 생각하고"
    ids = gpt.encode(text)
    shaped = Shaper(gpt.tokenizer).shape([TokenLogprob(t, -1.0) for t in ids])
    assert len(ids) > len(text)  # the tiny tokenizer splits syllables
    assert any(t.startswith("bytes:\\x") for t in shaped["tokens"])
    offsets = shaped["text_offset"]
    assert offsets[0] == 0 and offsets == sorted(offsets) and offsets[-1] < len(text)
    whole = [t for t in shaped["tokens"] if not t.startswith("bytes:")]
    for token, offset in zip(shaped["tokens"], offsets):
        if token in whole:
            assert text[offset:].startswith(token)


def test_the_openai_client_reads_logprobs(gpt):
    state = ServerState("kogpt", SamplingSettings(max_new_tokens=4))
    state.ready(gpt)
    with running(create_app(state)) as url:
        client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=60)
        plain = client.completions.create(model="kogpt", prompt=PROMPT, max_tokens=6, temperature=0, logprobs=2)
        logprobs = plain.choices[0].logprobs
        assert len(logprobs.tokens) == len(logprobs.token_logprobs) == plain.usage.completion_tokens
        stream = client.completions.create(model="kogpt", prompt=PROMPT, max_tokens=6, temperature=0, logprobs=2,
                                           stream=True)
        tokens = [t for chunk in stream for t in chunk.choices[0].logprobs.tokens]
        assert tokens == logprobs.tokens
