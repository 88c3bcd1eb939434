"""Issue 22: prompts as token ids (run as sent, never decoded and re-encoded), and whole-number
floats where an integer is expected, as vLLM takes them."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("starlette")


from kogpt.settings import SamplingSettings  # noqa: E402
from tests.serving import api_client, complete  # noqa: E402

PROMPT = "인간처럼 생각하고, 행동하는"
SAMPLED = {"temperature": 1.0, "seed": 5, "max_tokens": 8}


@pytest.fixture(scope="module")
def http(gpt):
    with api_client(gpt) as client:
        yield client


def refused(http, body: dict) -> dict:
    content = json.dumps(body).encode()
    response = http.post("/v1/completions", content=content, headers={"Content-Type": "application/json"})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert "\n" not in error["message"] and "Traceback" not in error["message"]
    return error


def texts(reply: dict) -> list[str]:
    return [choice["text"] for choice in sorted(reply["choices"], key=lambda c: c["index"])]


def test_a_token_id_prompt_completes_as_its_text(http, gpt):
    ids = gpt.encode(PROMPT)
    by_text = complete(http, prompt=PROMPT, n=2, **SAMPLED)
    by_ids = complete(http, prompt=ids, n=2, **SAMPLED)
    assert texts(by_ids) == texts(by_text) and by_ids["usage"] == by_text["usage"]
    assert complete(http, prompt=[float(i) for i in ids], n=2, **SAMPLED)["choices"] == by_ids["choices"]


def test_several_token_id_prompts(http, gpt):
    prompts = ["서울", "인간처럼"]
    by_text = complete(http, prompt=prompts, **SAMPLED)
    by_ids = complete(http, prompt=[gpt.encode(p) for p in prompts], **SAMPLED)
    assert texts(by_ids) == texts(by_text) and len(texts(by_ids)) == 2


def test_ids_run_as_sent_not_re_encoded(http, gpt):
    """Ids whose text encodes differently (one per byte) run as given: the prompt count and the
    completion are those of these ids, not of their text's own encoding."""
    text = "서울"
    pieces = "".join(gpt.tokenizer.convert_ids_to_tokens(gpt.encode(text)))
    spelled = gpt.tokenizer.convert_tokens_to_ids(list(pieces))  # one token per byte
    assert len(spelled) > len(gpt.encode(text))
    assert gpt.tokenizer.decode(spelled) == text
    reply = complete(http, prompt=spelled, max_tokens=6, temperature=0, echo=True)
    assert reply["usage"]["prompt_tokens"] == len(spelled)
    chunks = list(gpt.engine.stream(spelled, SamplingSettings(max_new_tokens=6, temperature=0), 0))
    assert reply["choices"][0]["text"] == text + "".join(chunk.text for chunk in chunks)


def test_echo_of_token_ids_is_their_text(http, gpt):
    ids = gpt.encode(PROMPT)
    plain = complete(http, prompt=ids, echo=True, max_tokens=3, temperature=0)["choices"][0]["text"]
    by_text = complete(http, prompt=PROMPT, echo=True, max_tokens=3, temperature=0)["choices"][0]["text"]
    assert plain.startswith(PROMPT) and plain == by_text
    with http.stream("POST", "/v1/completions", json={"prompt": ids, "echo": True, "max_tokens": 2, "stream": True}) as r:
        first = next(line for line in r.iter_lines() if line)
    assert json.loads(first[6:])["choices"][0]["text"] == PROMPT


def test_a_token_id_prompt_too_long_is_refused_as_text_is(http, gpt):
    error = refused(http, {"prompt": [5] * gpt.context_length, "max_tokens": 4})
    assert error["code"] == "context_length_exceeded" and f"{gpt.context_length} tokens" in error["message"]


@pytest.mark.parametrize(
    ("prompt", "words"),
    [
        ([[]], "prompt[0] holds no token ids"),
        ([[1], []], "prompt[1] holds no token ids"),
        ([], "non-empty"),
        ([1, -1], "prompt[1] is -1, not a token id"),
        ([1, 1.5], "prompt[1] is 1.5, not a token id"),
        ([1, "a"], "not a token id"),
        ([1, True], "not a token id"),
        ([[1, 2], [3, 10**6]], "prompt[1][1] is 1000000, not a token id"),
        (["a", [1]], "a list of token ids"),
        ([[1], "a"], "a list of token ids"),
        ([[[1]]], "not a token id"),
    ],
)
def test_bad_token_id_prompts_are_400s(http, prompt, words):
    error = refused(http, {"prompt": prompt})
    assert error["param"] == "prompt" and words in error["message"], error


def test_the_vocabulary_is_the_tokenizers(http, gpt):
    vocab = len(gpt.tokenizer)
    assert complete(http, prompt=[vocab - 1], max_tokens=1)["usage"]["prompt_tokens"] == 1
    assert f"from 0 to {vocab - 1}" in refused(http, {"prompt": [vocab]})["message"]


def test_whole_number_floats(http):
    reply = complete(http, prompt=PROMPT, max_tokens=1.0, temperature=1.0, seed=3.0, top_k=5.0,
                     no_repeat_ngram_size=2.0, n=2.0, best_of=2.0)  # fmt: skip
    assert len(reply["choices"]) == 2 and reply["usage"]["completion_tokens"] == 2
    again = complete(http, prompt=PROMPT, max_tokens=1, temperature=1.0, seed=3, top_k=5, no_repeat_ngram_size=2, n=2)
    assert texts(again) == texts(reply)


@pytest.mark.parametrize("name", ["max_tokens", "n", "seed", "top_k", "no_repeat_ngram_size", "best_of"])
def test_a_fraction_is_still_refused(http, name):
    error = refused(http, {"prompt": PROMPT, name: 1.5})
    assert error["param"] == name and name in error["message"]
