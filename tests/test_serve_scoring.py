"""Issue 22: prompt scoring through `/v1/completions`: `echo` with `logprobs` returns the prompt's
token log-probabilities, from `kogpt eval`'s own scoring; `max_tokens: 0` with `echo` generates nothing."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import pytest

pytest.importorskip("starlette")
openai = pytest.importorskip("openai")


from kogpt.evaluate.scoring import Request, score  # noqa: E402
from kogpt.server.app import ServerState, create_app  # noqa: E402
from kogpt.settings import SamplingSettings  # noqa: E402
from tests.serving import api_client, complete, running  # noqa: E402

CONTEXT = "영화 리뷰: 배우들 연기가 정말 좋았다\n감정:"
ANSWER = " 긍정"


@pytest.fixture(scope="module")
def http(gpt):
    with api_client(gpt) as client:
        yield client


def test_echo_scores_the_prompt_as_kogpt_eval_does(http, gpt):
    context, answer = gpt.encode(CONTEXT), gpt.encode(ANSWER)
    reply = complete(http, prompt=context + answer, max_tokens=0, echo=True, logprobs=1)
    (choice,) = reply["choices"]
    assert choice["text"] == CONTEXT + ANSWER and choice["finish_reason"] == "length"
    assert reply["usage"] == {"prompt_tokens": len(context + answer), "completion_tokens": 0,
                              "total_tokens": len(context + answer)}
    logprobs = choice["logprobs"]
    assert logprobs["token_logprobs"][0] is None and logprobs["top_logprobs"][0] is None
    assert len(logprobs["tokens"]) == len(context + answer)
    for method in ("prefix", "full"):
        (expected,) = next(score(gpt.model, [Request(context, [answer])], method=method))
        assert sum(logprobs["token_logprobs"][len(context):]) == pytest.approx(expected, abs=1e-4)
    assert logprobs["text_offset"][len(context)] == len(CONTEXT)


def test_echo_with_generation_puts_the_prompt_first(http, gpt):
    prompt = CONTEXT + ANSWER
    n = len(gpt.encode(prompt))
    echoed = complete(http, prompt=prompt, max_tokens=3, temperature=0, echo=True, logprobs=2)["choices"][0]
    plain = complete(http, prompt=prompt, max_tokens=3, temperature=0, logprobs=2)["choices"][0]
    assert echoed["text"] == prompt + plain["text"]
    assert echoed["logprobs"]["tokens"][n:] == plain["logprobs"]["tokens"]
    assert echoed["logprobs"]["token_logprobs"][n:] == plain["logprobs"]["token_logprobs"]
    assert [o - len(prompt) for o in echoed["logprobs"]["text_offset"][n:]] == plain["logprobs"]["text_offset"]
    scored = complete(http, prompt=prompt, max_tokens=0, echo=True, logprobs=2)["choices"][0]["logprobs"]
    assert echoed["logprobs"]["token_logprobs"][:n] == scored["token_logprobs"]


def test_a_streamed_echo_carries_the_prompts_logprobs_first(http, gpt):
    body = {"prompt": CONTEXT, "max_tokens": 2, "temperature": 0, "echo": True, "logprobs": 1, "stream": True}
    response = http.post("/v1/completions", json=body)
    events = [json.loads(line[6:]) for line in response.text.splitlines() if line.startswith("data: {")]
    first = events[0]["choices"][0]
    assert first["text"] == CONTEXT and len(first["logprobs"]["tokens"]) == len(gpt.encode(CONTEXT))


def test_max_tokens_zero_needs_echo(http):
    response = http.post("/v1/completions", json={"prompt": CONTEXT, "max_tokens": 0})
    assert response.status_code == 400 and response.json()["error"]["param"] == "max_tokens"


def test_scoring_holds_the_models_lock_and_runs_beside_generations(http, gpt, monkeypatch):
    from kogpt import api

    real = api.token_logprobs

    def checked(model, ids, top=0):
        assert gpt.engine.exclusive().locked(), "the prompt was scored without the model's lock"
        return real(model, ids, top)

    monkeypatch.setattr(api, "token_logprobs", checked)
    body = {"prompt": CONTEXT + ANSWER, "max_tokens": 0, "echo": True, "logprobs": 1}
    alone = complete(http, **body)["choices"][0]["logprobs"]["token_logprobs"]
    busy = {"prompt": CONTEXT, "max_tokens": 24, "temperature": 1.0, "seed": 1}
    with ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(complete, http, **(body if i % 2 else busy)) for i in range(8)]
        replies = [f.result() for f in futures]
    for reply in replies[1::2]:
        assert reply["choices"][0]["logprobs"]["token_logprobs"] == pytest.approx(alone, abs=1e-5)


def test_the_openai_client_gets_echoed_logprobs(gpt):
    state = ServerState("kogpt", SamplingSettings(max_new_tokens=4))
    state.ready(gpt)
    with running(create_app(state)) as url:
        client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=60)
        reply = client.completions.create(model="kogpt", prompt=CONTEXT, max_tokens=0, echo=True, logprobs=1)
        logprobs = reply.choices[0].logprobs
        assert reply.choices[0].text == CONTEXT and logprobs.token_logprobs[0] is None
        assert len(logprobs.tokens) == reply.usage.prompt_tokens and all(logprobs.token_logprobs[1:])
