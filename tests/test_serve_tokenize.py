"""Issue 22: `POST /tokenize` and `POST /detokenize` in vLLM's shapes, with the completions route's checks."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("starlette")

from starlette.testclient import TestClient  # noqa: E402

from kogpt.server.app import ServerState, create_app  # noqa: E402
from kogpt.settings import SamplingSettings  # noqa: E402

NAME = "kogpt"
PROMPT = "인간처럼 생각하고, 행동하는"
LOCAL = "http://127.0.0.1:8000"


@pytest.fixture(scope="module")
def http(gpt):
    state = ServerState(NAME, SamplingSettings(max_new_tokens=4))
    state.ready(gpt)
    with TestClient(create_app(state), base_url=LOCAL, raise_server_exceptions=False) as client:
        yield client


def post(http, path: str, body: bytes | dict, status: int = 200, **headers) -> dict:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    response = http.post(path, content=content, headers={"Content-Type": "application/json", **headers})
    assert response.status_code == status, response.text
    reply = response.json()
    if status != 200:
        error = reply["error"]
        assert set(error) == {"message", "type", "param", "code"}
        assert "\n" not in error["message"] and "Traceback" not in error["message"]
        return error
    return reply


def test_tokenize_gives_the_ids_completions_run(http, gpt):
    reply = post(http, "/tokenize", {"model": NAME, "prompt": PROMPT})
    assert reply == {"count": len(gpt.encode(PROMPT)), "max_model_len": gpt.context_length, "tokens": gpt.encode(PROMPT)}
    usage = post(http, "/v1/completions", {"prompt": PROMPT, "max_tokens": 1})["usage"]
    assert usage["prompt_tokens"] == reply["count"]
    for special in (True, False):  # KoGPT's tokenizer adds no [BOS]: the same ids either way
        assert post(http, "/tokenize", {"prompt": PROMPT, "add_special_tokens": special})["tokens"] == reply["tokens"]


def test_tokenize_normalises_to_nfc_as_completions_do(http, gpt):
    decomposed = "\u1100\u1161"  # 가 as two jamo
    assert post(http, "/tokenize", {"prompt": decomposed})["tokens"] == gpt.encode("가")


def test_token_strs_when_asked(http, gpt):
    reply = post(http, "/tokenize", {"prompt": PROMPT, "return_token_strs": True})
    assert reply["token_strs"] == gpt.tokenizer.convert_ids_to_tokens(gpt.encode(PROMPT))
    assert len(reply["token_strs"]) == reply["count"]
    assert "token_strs" not in post(http, "/tokenize", {"prompt": PROMPT, "return_token_strs": False})


def test_an_empty_prompt_has_no_tokens(http):
    assert post(http, "/tokenize", {"prompt": ""})["tokens"] == []


def test_detokenize_round_trips(http, gpt):
    ids = gpt.encode(PROMPT)
    assert post(http, "/detokenize", {"model": NAME, "tokens": ids}) == {"prompt": PROMPT}
    assert post(http, "/detokenize", {"tokens": [float(i) for i in ids]}) == {"prompt": PROMPT}  # 3.0 is 3
    assert post(http, "/detokenize", {"tokens": []}) == {"prompt": ""}


@pytest.mark.parametrize(
    ("path", "body", "param", "words"),
    [
        ("/tokenize", {}, "prompt", "missing"),
        ("/tokenize", {"prompt": ["a"]}, "prompt", "one string"),
        ("/tokenize", {"prompt": 3}, "prompt", "one string"),
        ("/tokenize", {"prompt": "\ud800"}, "prompt", "lone surrogate"),
        ("/tokenize", {"prompt": "a", "add_special_tokens": "yes"}, "add_special_tokens", "true or false"),
        ("/tokenize", {"prompt": "a", "return_token_strs": 1}, "return_token_strs", "true or false"),
        ("/tokenize", {"prompt": "a", "messages": []}, "messages", "unknown field"),
        ("/tokenize", {"prompt": "a", "model": 7}, "model", "must be a string"),
        ("/detokenize", {}, "tokens", "missing"),
        ("/detokenize", {"tokens": "abc"}, "tokens", "list of token ids"),
        ("/detokenize", {"tokens": [1, -1]}, "tokens", "tokens[1] is -1, not a token id"),
        ("/detokenize", {"tokens": [2**70]}, "tokens", "not a token id"),
        ("/detokenize", {"tokens": [1.5]}, "tokens", "tokens[0] is 1.5"),
        ("/detokenize", {"tokens": [True]}, "tokens", "not a token id"),
        ("/detokenize", {"tokens": [None]}, "tokens", "not a token id"),
        ("/detokenize", {"tokens": ["1"]}, "tokens", "not a token id"),
    ],
)
def test_bad_bodies_get_one_line_400(http, path, body, param, words):
    error = post(http, path, body, status=400)
    assert error["param"] == param and words in error["message"], error


def test_ids_beyond_the_tokenizer_are_refused_not_decoded(http, gpt):
    vocab = len(gpt.tokenizer)
    assert vocab < gpt.model.config.vocab_size  # the tiny model is padded, as KoGPT's 64,512
    assert post(http, "/detokenize", {"tokens": [vocab - 1]})["prompt"] == gpt.tokenizer.decode([vocab - 1])
    error = post(http, "/detokenize", {"tokens": [vocab]}, status=400)
    assert f"from 0 to {vocab - 1}" in error["message"]


def test_the_completions_route_checks_apply(http):
    assert post(http, "/tokenize", {"model": "other", "prompt": "a"}, status=404)["code"] == "model_not_found"
    assert post(http, "/detokenize", {"model": "other", "tokens": [1]}, status=404)["param"] == "model"
    response = http.post("/tokenize", content=b'{"prompt": "a"}', headers={"Content-Type": "text/plain"})
    assert response.status_code == 415
    assert post(http, "/tokenize", b'{"prompt": ', status=400)["message"].startswith("the body is not valid JSON")
    assert post(http, "/detokenize", b"[1, 2]", status=400)["message"] == "the body must be a JSON object, not [1, 2]"
    assert http.get("/tokenize").status_code == 405


def test_the_guard_and_the_key_cover_them(gpt):
    state = ServerState(NAME, api_key="secret", allowed_hosts=["127.0.0.1"])
    state.ready(gpt)
    http = TestClient(create_app(state), base_url=LOCAL)
    for path, body in (("/tokenize", {"prompt": "a"}), ("/detokenize", {"tokens": [1]})):
        assert post(http, path, body, status=401)["code"] == "invalid_api_key"
        assert post(http, path, body, Authorization="Bearer secret")
        assert post(http, path, body, status=403, Authorization="Bearer secret", Host="evil.example")
        assert post(http, path, body, status=403, Authorization="Bearer secret", Origin="https://evil.example")


def test_loading_and_stopping_servers_answer_503(gpt):
    state = ServerState(NAME)
    http = TestClient(create_app(state), base_url=LOCAL)
    assert post(http, "/tokenize", {"prompt": "a"}, status=503)["code"] == "loading"
    state.ready(gpt)
    assert post(http, "/tokenize", {"prompt": "a"})["count"] >= 1
    state.stopping = True
    assert post(http, "/detokenize", {"tokens": [1]}, status=503)["code"] == "server_shutting_down"
