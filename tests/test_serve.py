"""`kogpt serve`'s API on the tiny checkpoint, through the official `openai` client and raw HTTP.

The server runs in this process on 127.0.0.1; nothing leaves the loopback.
"""

from __future__ import annotations

import json
import socket
from concurrent.futures import ThreadPoolExecutor

import pytest

pytest.importorskip("starlette")
openai = pytest.importorskip("openai")
httpx = pytest.importorskip("httpx")

from kogpt.errors import InputError  # noqa: E402
from kogpt.server.app import ServerState, create_app  # noqa: E402
from kogpt.settings import SamplingSettings, check_value  # noqa: E402
from tests.serving import GatedGPT, running, wait_for  # noqa: E402

NAME = "kakaobrain/kogpt"
PROMPT = "인간처럼 생각하고, 행동하는"
MAX_BODY = 64 * 1024


@pytest.fixture(scope="module")
def server(gpt):
    state = ServerState(NAME, SamplingSettings(max_new_tokens=16), max_body=MAX_BODY)
    state.ready(gpt)
    with running(create_app(state)) as url:
        yield url, state


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server[0] + "/v1", api_key="unused", max_retries=0, timeout=60)


def post(server, body: bytes | dict, **headers) -> httpx.Response:
    content = json.dumps(body).encode() if isinstance(body, dict) else body
    headers = {"Content-Type": "application/json", **headers}
    return httpx.post(server[0] + "/v1/completions", content=content, headers=headers, timeout=60)


def error_of(response: httpx.Response) -> dict:
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert "\n" not in error["message"] and error["message"]
    return error


def test_plain_completion(client, gpt):
    reply = client.completions.create(model=NAME, prompt=PROMPT, max_tokens=12, temperature=0)
    (choice,) = reply.choices
    assert choice.text == gpt.generate(PROMPT, temperature=0, max_new_tokens=12)
    assert choice.finish_reason in ("stop", "length") and choice.index == 0
    assert reply.object == "text_completion" and reply.model == NAME
    assert reply.usage.prompt_tokens == len(gpt.encode(PROMPT))
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens
    assert 1 <= reply.usage.completion_tokens <= 12


def test_streaming_joins_to_the_plain_text(client):
    plain = client.completions.create(model=NAME, prompt=PROMPT, max_tokens=24, temperature=0).choices[0]
    stream = client.completions.create(
        model=NAME, prompt=PROMPT, max_tokens=24, temperature=0, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    texts = [c.choices[0].text for c in chunks if c.choices]
    assert "".join(texts) == plain.text
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == plain.finish_reason
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens >= 1
    assert all(c.usage is None for c in chunks[:-1])


def test_sse_wire_format(server):
    body = {"prompt": PROMPT, "max_tokens": 4, "stream": True}
    with httpx.stream("POST", server[0] + "/v1/completions", json=body, timeout=60) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        events = [line for line in response.iter_lines() if line]
    assert all(line.startswith("data: ") for line in events)
    assert events[-1] == "data: [DONE]"
    assert json.loads(events[0][6:])["object"] == "text_completion"


def test_n_and_seed_are_reproducible(client):
    ask = dict(model=NAME, prompt=PROMPT, max_tokens=10, temperature=1.0, n=3, seed=7)
    first, again = client.completions.create(**ask), client.completions.create(**ask)
    assert [c.index for c in first.choices] == [0, 1, 2]
    assert [c.text for c in first.choices] == [c.text for c in again.choices]
    assert len({c.text for c in first.choices}) > 1  # each choice has its own seed: 7, 8, 9
    single = client.completions.create(**{**ask, "n": 1, "seed": 8})
    assert single.choices[0].text == first.choices[1].text


def test_prompt_list_indexes_choices_by_prompt(client):
    reply = client.completions.create(model=NAME, prompt=["가나다", "라마바"], max_tokens=4, temperature=0, n=2)
    assert [c.index for c in reply.choices] == [0, 1, 2, 3]
    assert reply.choices[0].text == reply.choices[1].text  # greedy: both choices of a prompt agree


def test_stop_cuts_the_text(client):
    ask = dict(model=NAME, prompt=PROMPT, max_tokens=24, temperature=0)
    text = client.completions.create(**ask).choices[0].text
    assert len(text) >= 6
    stop = text[3:5]
    cut = client.completions.create(**ask, stop=[stop]).choices[0]
    assert cut.text == text[: text.find(stop)] and cut.finish_reason == "stop"


def test_server_defaults_apply_to_fields_left_out_or_null(gpt):
    from starlette.testclient import TestClient

    state = ServerState(NAME, SamplingSettings(max_new_tokens=5, temperature=0, stop=["\n"]))
    state.ready(gpt)
    with TestClient(create_app(state)) as http:
        body = http.post("/v1/completions", json={"prompt": PROMPT, "stop": None, "max_tokens": None}).json()
    assert body["choices"][0]["text"] == gpt.generate(PROMPT, temperature=0, max_new_tokens=5, stop=["\n"])
    assert body["usage"]["completion_tokens"] <= 5


def test_echo_prepends_the_prompt(client):
    ask = dict(model=NAME, prompt=PROMPT, max_tokens=5, temperature=0)
    plain = client.completions.create(**ask).choices[0].text
    assert client.completions.create(**ask, echo=True).choices[0].text == PROMPT + plain


def test_models(client, gpt):
    (model,) = client.models.list().data
    assert model.id == NAME and model.model_extra["max_model_len"] == gpt.context_length


def test_concurrent_clients_are_never_mixed(client):
    prompts = [f"{PROMPT} {i}번" for i in range(6)]
    expected = [
        client.completions.create(model=NAME, prompt=p, max_tokens=10, temperature=0).choices[0].text for p in prompts
    ]

    def ask(i: int) -> str:
        if i % 2:
            stream = client.completions.create(model=NAME, prompt=prompts[i], max_tokens=10, temperature=0, stream=True)
            return "".join(c.choices[0].text for c in stream)
        return client.completions.create(model=NAME, prompt=prompts[i], max_tokens=10, temperature=0).choices[0].text

    with ThreadPoolExecutor(len(prompts)) as pool:
        assert list(pool.map(ask, range(len(prompts)))) == expected


@pytest.mark.parametrize(
    ("body", "param", "words"),
    [
        (b'{"prompt": "a",', None, "not valid JSON"),
        (b'{"prompt": "\xed\x9e\xff"}', None, "not valid UTF-8"),
        (b"", None, "empty"),
        (b'["a"]', None, "JSON object"),
        (b'{"prompt": "a", "temprature": 1}', "temprature", "unknown field"),
        (b'{"prompt": "a", "temperature": "hot"}', "temperature", "must be a number"),
        (b'{"prompt": "a", "max_tokens": 0}', "max_tokens", "max_tokens must be"),
        (b'{"prompt": "a", "n": 99}', "n", "n must be"),
        (b'{"prompt": "a", "top_p": 0}', "top_p", "top_p must be"),
        (b'{"prompt": "a", "stream": "yes"}', "stream", "true or false"),
        (b'{"prompt": "a", "logprobs": 21}', "logprobs", "from 0 to 20"),
        (b'{"prompt": "a", "presence_penalty": 2.5}', "presence_penalty", "from -2 to 2"),
        (b'{"prompt": [1, "a"]}', "prompt", "not a token id"),
        (b'{"prompt": ""}', "prompt", "empty"),
        (b'{"prompt": "\\ud800"}', "prompt", "lone surrogate"),
        (b'{"max_tokens": 3}', "prompt", "missing"),
        (b'{"prompt": "a", "stop": [""]}', "stop", "empty"),
        (b'{"prompt": "a", "stream_options": {"include_usage": true}}', "stream_options", "stream: true"),
        (b'{"prompt": "a", "seed": 1e400}', "seed", "whole number"),
        (b'{"prompt": "a", "temperature": 1e400}', "temperature", "finite"),
        (b'{"prompt": "a", "max_tokens": 1' + b"0" * 5000 + b"}", None, "5001 digits"),
    ],
)
def test_bad_requests_get_one_line_400(server, body, param, words):
    response = post(server, body)
    assert response.status_code == 400
    error = error_of(response)
    assert words in error["message"] and error["param"] == param and error["type"] == "invalid_request_error"


def test_settings_are_judged_as_the_command_line_judges_them(server):
    with pytest.raises(InputError) as cli:
        check_value("temperature", -1)  # the rule of the flags, /set and JSON fields
    assert error_of(post(server, {"prompt": "a", "temperature": -1}))["message"] == str(cli.value)


def test_neutral_openai_fields_are_accepted(server):
    neutral = {
        "frequency_penalty": 0,
        "presence_penalty": 0.0,
        "logit_bias": {},
        "best_of": 1,
        "user": "me",
        "suffix": None,
    }
    assert post(server, {"prompt": "a", "max_tokens": 2, **neutral}).status_code == 200


def test_prompt_longer_than_the_context(server, gpt):
    response = post(server, {"prompt": "가" * gpt.context_length * 2, "max_tokens": 4})
    assert response.status_code == 400
    error = error_of(response)
    assert error["code"] == "context_length_exceeded" and str(gpt.context_length) in error["message"]


def test_oversized_body_is_refused(server):
    response = post(server, b'{"prompt": "' + b"a" * (MAX_BODY + 10) + b'"}')
    assert response.status_code == 413 and error_of(response)["code"] == "request_too_large"


def test_oversized_chunked_body_is_refused(server):
    def pieces():
        yield b'{"prompt": "'
        for _ in range(MAX_BODY // 1024 + 2):
            yield b"a" * 1024

    headers = {"Content-Type": "application/json"}
    response = httpx.post(server[0] + "/v1/completions", content=pieces(), headers=headers, timeout=60)
    assert response.status_code == 413


def test_unknown_model_route_and_method(server):
    assert error_of(post(server, {"prompt": "a", "model": "gpt-4"}))["code"] == "model_not_found"
    assert post(server, {"prompt": "a", "model": "gpt-4"}).status_code == 404
    assert httpx.get(server[0] + "/v1/chat").status_code == 404
    response = httpx.get(server[0] + "/v1/completions")
    assert response.status_code == 405 and error_of(response)


def test_api_key(gpt):
    state = ServerState(NAME, api_key="s3cret")
    state.ready(gpt)
    with running(create_app(state)) as url:
        assert httpx.get(url + "/health").status_code == 200  # health needs no key
        denied = httpx.get(url + "/v1/models", headers={"Authorization": "Bearer wrong"})
        assert denied.status_code == 401 and error_of(denied)["code"] == "invalid_api_key"
        keyed = openai.OpenAI(base_url=url + "/v1", api_key="s3cret", max_retries=0)
        assert keyed.completions.create(model=NAME, prompt="a", max_tokens=2).choices
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=url + "/v1", api_key="nope", max_retries=0).models.list()


def test_health_is_503_until_the_model_is_ready(gpt):
    from starlette.testclient import TestClient

    state = ServerState(NAME)
    client = TestClient(create_app(state))
    assert client.get("/health").status_code == 503
    loading = client.post("/v1/completions", json={"prompt": "a"})
    assert loading.status_code == 503 and loading.json()["error"]["code"] == "loading"
    state.ready(gpt)
    assert client.get("/health").json() == {"status": "ok"}


def test_disconnect_mid_stream_cancels_the_generation(gpt):
    gated = GatedGPT(gpt)
    state = ServerState(NAME)
    runner = state.ready(gated)
    with running(create_app(state)) as url:
        port = int(url.rsplit(":", 1)[1])
        body = json.dumps({"prompt": PROMPT, "max_tokens": 100, "temperature": 0, "stream": True}).encode()
        with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
            sock.sendall(
                b"POST /v1/completions HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
                + f"Content-Length: {len(body)}\r\n\r\n".encode()
                + body
            )
            received = b""
            while b"data: " not in received:  # the first chunk; the generation then waits at the gate
                piece = sock.recv(65536)
                assert piece, "the server closed the stream"
                received += piece
        wait_for(lambda: runner.stats.left == 1, "the server to notice the client left")
        gated.gate.set()
        wait_for(lambda: runner.stats.running == 0, "the generation to stop")
    assert runner.stats.cancelled == 1 and runner.stats.finished == 0


def test_disconnect_before_a_plain_reply_cancels_the_generation(gpt):
    gated = GatedGPT(gpt)
    state = ServerState(NAME)
    runner = state.ready(gated)
    with running(create_app(state)) as url:
        # The read times out at once: the client closes the connection while its reply is pending.
        with pytest.raises(httpx.ReadTimeout), httpx.Client(timeout=httpx.Timeout(30, read=0.001)) as http:
            http.post(url + "/v1/completions", json={"prompt": PROMPT, "max_tokens": 100, "temperature": 0})
        wait_for(lambda: runner.stats.left == 1, "the server to notice the client left")
        gated.gate.set()
        wait_for(lambda: runner.stats.running == 0, "the generation to stop")
    assert runner.stats.cancelled == 1 and runner.stats.finished == 0
