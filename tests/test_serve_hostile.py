"""Issue 19, items 3-5 and 10 (the server's share; the same rules through the CLI are in
test_hostile_values.py), and the server tests that let bugs through (28, 29, 32, 33)."""

from __future__ import annotations

import json
import logging

import pytest

pytest.importorskip("starlette")

from starlette.testclient import TestClient  # noqa: E402

from kogpt.cli.main import main  # noqa: E402
from kogpt.server.app import ServerState, create_app  # noqa: E402
from kogpt.settings import MAX_SEED, SamplingSettings  # noqa: E402

PROMPT = "인간처럼 생각하고, 행동하는"
LOCAL = "http://127.0.0.1:8000"


@pytest.fixture(scope="module")
def http(gpt):
    state = ServerState("kogpt", SamplingSettings(max_new_tokens=8))
    state.ready(gpt)
    with TestClient(create_app(state), base_url=LOCAL, raise_server_exceptions=False) as client:
        yield client


def complete(http, **body) -> dict:
    response = http.post("/v1/completions", json={"prompt": PROMPT, "max_tokens": 6, **body})
    assert response.status_code == 200, response.text
    return response.json()


def refused(http, body: bytes | dict, status: int = 400) -> dict:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    response = http.post("/v1/completions", content=content, headers={"Content-Type": "application/json"})
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert "\n" not in error["message"] and len(error["message"]) <= 1000
    return error


def sse(http, **body) -> list[dict | str]:
    with http.stream("POST", "/v1/completions", json={"prompt": PROMPT, "max_tokens": 6, "stream": True, **body}) as r:
        lines = [line for line in r.iter_lines() if line]
    assert all(line.startswith("data: ") for line in lines)
    return [line[6:] if line == "data: [DONE]" else json.loads(line[6:]) for line in lines]


def test_seed_plus_n_wraps_modulo_2_32(http):
    """Item 3: seeds wrap (choice i runs with (seed + i) mod 2**32), plain and streamed."""
    top = complete(http, seed=MAX_SEED - 1, n=3, temperature=1.0)
    texts = [c["text"] for c in top["choices"]]
    assert complete(http, seed=0, temperature=1.0)["choices"][0]["text"] == texts[2]
    assert complete(http, seed=MAX_SEED, temperature=1.0)["choices"][0]["text"] == texts[1]
    events = sse(http, seed=MAX_SEED - 1, n=3, temperature=1.0)
    assert events[-1] == "[DONE]" and not any("error" in e for e in events[:-1])
    choices = [e["choices"][0] for e in events[:-1]]
    streamed = ["".join(c["text"] for c in choices if c["index"] == i) for i in range(3)]
    assert streamed == texts


@pytest.mark.parametrize(
    "body",
    [
        b'{"prompt": "a", "\\ud800": 1}',
        b'{"prompt": "a", "stream": "\\ud800"}',
        b'{"prompt": "a", "user": ["\\ud800"]}',
        b'{"prompt": "a", "model": ["\\ud800"]}',
        b'{"prompt": "a", "temperature": "\\ud800"}',
        b'{"prompt": "a", "stop": ["\\ud800"]}',
        b'{"prompt": "a", "stream_options": {"\\ud800": true}, "stream": true}',
        b'{"prompt": "a", "echo": {"\\udfff": "\\ud800"}}',
        b'{"prompt": ["\\ud800"]}',
        b'{"prompt": "a", "logit_bias": {"\\ud800": 1}}',
        b'{"prompt": "a", "n": "\\ud800"}',
    ],
)
def test_a_lone_surrogate_anywhere_is_a_400(http, body, caplog):
    """Item 4."""
    with caplog.at_level(logging.ERROR):
        refused(http, body)
    assert not caplog.records


def test_a_model_name_with_a_lone_surrogate_is_a_404(http):
    assert refused(http, b'{"prompt": "a", "model": "\\ud800"}', 404)["code"] == "model_not_found"


@pytest.mark.parametrize(
    ("field", "value"),
    [("temperature", "x" * 500_000), ("user", ["y" * 500_000]), ("x" * 500_000, 1), ("stream", {"k": "z" * 500_000}),
     ("max_tokens", int("9" * 4000)), ("temperature", int("9" * 4000)), ("model", "m" * 500_000)],
)  # fmt: skip
def test_error_messages_are_bounded(http, field, value):
    """Item 4: a message quotes at most a short piece of the value, never Python's own texts."""
    error = refused(http, {"prompt": "a", field: value}, 404 if field == "model" else 400)
    assert len(error["message"]) < 300 and "set_int_max_str_digits" not in error["message"]
    assert error["param"] is None or len(error["param"]) <= 40


def test_a_number_of_thousands_of_digits_says_so(http):
    error = refused(http, b'{"prompt": "a", "max_tokens": 1' + b"0" * 5000 + b"}")
    assert "5001 digits" in error["message"] and "sys." not in error["message"]


@pytest.mark.parametrize("temperature", [1e-38, 1e-40, 5e-324, 9e-6])
def test_a_tiny_temperature_is_greedy(http, temperature):
    """Item 5: below 1e-5 a temperature means greedy, as in vLLM (was: a 500)."""
    greedy = complete(http, temperature=0)["choices"][0]["text"]
    assert complete(http, temperature=temperature, seed=3)["choices"][0]["text"] == greedy


@pytest.mark.parametrize("penalty", [1e-300, 1e-38, 0.009])
def test_a_tiny_repetition_penalty_is_refused(http, penalty):
    error = refused(http, {"prompt": "a", "repetition_penalty": penalty})
    assert error["param"] == "repetition_penalty" and "at least 0.01" in error["message"]
    assert complete(http, repetition_penalty=0.01, temperature=0)["choices"]


def test_whole_number_floats_are_accepted_for_whole_number_fields(http):
    """Item 10: as vLLM (pydantic) reads them; 1.5 is still refused."""
    assert complete(http, max_tokens=2.0, n=2.0, seed=7.0, top_k=-1.0)["usage"]["completion_tokens"] <= 4
    assert refused(http, {"prompt": "a", "max_tokens": 1.5})["param"] == "max_tokens"


def test_one_token_is_one_token(gpt):
    state = ServerState("kogpt", SamplingSettings(max_length=1))
    state.ready(gpt)
    prompt = next(c for c in "가나다라마바사" if len(gpt.encode(c)) == 1)
    error = refused(TestClient(create_app(state), base_url=LOCAL), {"prompt": prompt})
    assert "is 1 token " in error["message"] and "--max-length of 1" in error["message"]


def test_the_server_max_length_is_named_not_the_context(gpt):
    """Item 10: with --max-length 20 a longer prompt was refused as longer than the context."""
    state = ServerState("kogpt", SamplingSettings(max_length=20))
    state.ready(gpt)
    prompt = PROMPT * 3
    n = len(gpt.encode(prompt))
    assert 20 <= n < gpt.context_length
    error = refused(TestClient(create_app(state), base_url=LOCAL), {"prompt": prompt})
    assert f"is {n} tokens" in error["message"] and "--max-length of 20" in error["message"]
    assert "context" not in error["message"]
    assert complete(TestClient(create_app(state), base_url=LOCAL), prompt=prompt, max_tokens=3)["choices"]


def test_max_tokens_beyond_the_context_names_max_tokens(http, gpt):
    error = refused(http, {"prompt": "a", "max_tokens": gpt.context_length + 5})
    assert error["param"] == "max_tokens" and "max_new_tokens" not in error["message"]


def test_405_says_which_methods(http):
    response = http.get("/v1/completions")
    assert response.status_code == 405 and response.headers["allow"] == "POST"


def test_chat_completions_says_kogpt_is_a_base_model(http):
    response = http.post("/v1/chat/completions", json={"messages": []})
    assert response.status_code == 404
    message = response.json()["error"]["message"]
    assert "base model" in message and "/v1/completions" in message


def test_models_is_503_while_loading(gpt):
    state = ServerState("kogpt")
    client = TestClient(create_app(state), base_url=LOCAL)
    loading = client.get("/v1/models")
    assert loading.status_code == 503 and loading.json()["error"]["code"] == "loading"
    state.ready(gpt)
    (model,) = client.get("/v1/models").json()["data"]
    assert model["max_model_len"] == gpt.context_length


def test_each_choice_of_each_prompt_has_its_own_seed(http):
    """Item 28: choice p*n+i is prompt p sampled with seed + i, as a single request shows."""
    prompts = ["가나다", "라마바사"]
    reply = complete(http, prompt=prompts, n=2, seed=11, temperature=1.0, max_tokens=8)
    assert [c["index"] for c in reply["choices"]] == [0, 1, 2, 3]
    for p, prompt in enumerate(prompts):
        for i in range(2):
            alone = complete(http, prompt=prompt, seed=11 + i, temperature=1.0, max_tokens=8)["choices"][0]["text"]
            assert reply["choices"][p * 2 + i]["text"] == alone
    assert len({c["text"] for c in reply["choices"]}) > 2  # sampled: the seeds show


def test_prompt_tokens_are_counted_once_per_prompt(http, gpt):
    """Item 29."""
    prompts = [PROMPT, "안녕"]
    usage = complete(http, prompt=prompts, n=3, temperature=0.5, max_tokens=2)["usage"]
    assert usage["prompt_tokens"] == sum(len(gpt.encode(p)) for p in prompts)
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


@pytest.mark.parametrize(("best_of", "n", "ok"), [(2, 1, True), (3, 3, True), (1, 2, False), (None, 2, True),
                                                  (17, 1, False), (0, 1, False)])
def test_best_of_is_at_least_n(http, best_of, n, ok):
    """Item 32, then issue 22: best_of from n to 16; n choices come back."""
    body = {"prompt": "a", "max_tokens": 1, "n": n, "best_of": best_of}
    if ok:
        assert len(complete(http, **body)["choices"]) == n
    else:
        assert refused(http, body)["param"] == "best_of"


def test_max_tokens_wins_over_the_server_max_length(gpt):
    """Item 32's dead branch: max_tokens counts the completion alone, whatever --max-length says."""
    state = ServerState("kogpt", SamplingSettings(max_length=5))
    state.ready(gpt)
    client = TestClient(create_app(state), base_url=LOCAL)
    reply = complete(client, prompt=PROMPT, max_tokens=12, temperature=0)
    assert reply["choices"][0]["finish_reason"] == "length" and reply["usage"]["completion_tokens"] == 12


def test_sse_events_against_transformers_generate(http, gpt, tiny_dir):
    """Item 33: every event's JSON, the finish reasons and the usage event; the text checked against
    transformers' own greedy `generate` on the same checkpoint."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_dir, dtype=torch.float32)
    ids = torch.tensor([gpt.encode(PROMPT)])
    eos = gpt.tokenizer.eos_token_id
    out = model.generate(ids, max_new_tokens=8, do_sample=False, eos_token_id=eos, pad_token_id=eos)[0, ids.shape[1] :]
    expected_tokens = out.tolist()
    events = sse(http, max_tokens=8, temperature=0, stream_options={"include_usage": True})
    assert events[-1] == "[DONE]"
    *chunks, usage = events[:-1]
    for event in chunks:
        assert set(event) == {"id", "object", "created", "model", "choices", "usage"}
        assert event["object"] == "text_completion" and event["id"] == chunks[0]["id"] and event["usage"] is None
        (choice,) = event["choices"]
        assert choice["index"] == 0 and choice["logprobs"] is None
    reasons = [e["choices"][0]["finish_reason"] for e in chunks]
    assert reasons[:-1] == [None] * (len(chunks) - 1)
    assert reasons[-1] == ("stop" if eos in expected_tokens else "length")
    text = "".join(e["choices"][0]["text"] for e in chunks)
    assert text == gpt.tokenizer.decode([t for t in expected_tokens if t != eos])
    assert usage["choices"] == [] and usage["usage"]["completion_tokens"] == len(expected_tokens)
    assert usage["usage"]["prompt_tokens"] == ids.shape[1]


def test_cli_flags(tiny_dir, capsys, monkeypatch):
    """Item 10: --port range, --host that is no address, a missing model before listening, key spaces."""
    from kogpt.cli import serve

    with pytest.raises(SystemExit) as exit_:
        main(["serve", "--model", str(tiny_dir), "--port", "70000"])
    assert exit_.value.code == 2 and "65535" in capsys.readouterr().err
    assert main(["serve", "--model", str(tiny_dir), "--host", "999.1.1.1"]) == 1
    err = capsys.readouterr().err
    assert "not an address" in err and "--api-key" not in err
    listened = []
    monkeypatch.setattr(serve, "bind", lambda host, port: listened.append(port))
    assert main(["serve", "--model", str(tiny_dir / "missing")]) == 1
    assert "no such model directory" in capsys.readouterr().err and not listened
    states = []
    monkeypatch.setattr(serve, "serve", lambda args, state, app: states.append(state) or 0)
    assert main(["serve", "--model", str(tiny_dir), "--api-key", "  s3cret \n"]) == 0
    assert states[0].api_key == "s3cret"
