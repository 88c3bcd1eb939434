"""Issue 19, item 1 and part of 10: who may drive the server. A web page on another origin, a
DNS-rebound host name, bodies a browser sends without a preflight, routes under /v1 without the key."""

from __future__ import annotations

import pytest

pytest.importorskip("starlette")

from starlette.testclient import TestClient  # noqa: E402

from kogpt.cli import serveflags  # noqa: E402
from kogpt.cli.main import main  # noqa: E402
from kogpt.server.app import ServerState, create_app  # noqa: E402
from kogpt.server.guard import LOOPBACK_HOSTS  # noqa: E402
from kogpt.settings import SamplingSettings  # noqa: E402

NAME = "kogpt"
BODY = {"prompt": "안녕", "max_tokens": 2, "temperature": 0}
LOCAL = "http://127.0.0.1:8000"


def client(gpt, **state) -> tuple[TestClient, ServerState]:
    state = ServerState(NAME, SamplingSettings(max_new_tokens=2), **state)
    runner = state.ready(gpt)
    runner.stats.started = 0
    return TestClient(create_app(state), base_url=LOCAL), state


def error(response) -> dict:
    body = response.json()["error"]
    assert set(body) == {"message", "type", "param", "code"} and "\n" not in body["message"]
    return body


@pytest.mark.parametrize("host", ["attacker.example:8000", "attacker.example", "127.0.0.1.nip.io:8000", "", "a b"])
def test_a_foreign_host_is_refused_on_a_loopback_bind_without_a_key(gpt, host):
    http, state = client(gpt, allowed_hosts=list(LOOPBACK_HOSTS))
    response = http.post("/v1/completions", json=BODY, headers={"Host": host})
    assert response.status_code == 403 and error(response)["code"] == "host_not_allowed"
    assert http.get("/health", headers={"Host": host}).status_code == 403
    assert state.runner.stats.started == 0


@pytest.mark.parametrize("host", ["127.0.0.1:8000", "localhost:8000", "[::1]:8000", "LOCALHOST", "127.0.0.2:1"])
def test_loopback_hosts_are_served(gpt, host):
    http, _ = client(gpt, allowed_hosts=list(LOOPBACK_HOSTS))
    assert http.post("/v1/completions", json=BODY, headers={"Host": host}).status_code == 200


def test_allowed_hosts_extend_the_list(gpt):
    http, _ = client(gpt, allowed_hosts=[*LOOPBACK_HOSTS, "kogpt.internal", "*.example.com"])
    for host in ["kogpt.internal:80", "api.example.com"]:
        assert http.get("/health", headers={"Host": host}).status_code == 200
    assert http.get("/health", headers={"Host": "example.com.evil"}).status_code == 403


def test_any_host_when_no_list(gpt):  # a key, or a public bind: the key is the guard
    http, _ = client(gpt)
    assert http.get("/health", headers={"Host": "anything.example"}).status_code == 200


@pytest.mark.parametrize(
    "content_type",
    [None, "text/plain;charset=UTF-8", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"],
)
def test_only_json_bodies_are_read(gpt, content_type):
    import json

    http, state = client(gpt)
    headers = {"Content-Type": content_type} if content_type else {}
    response = http.post("/v1/completions", content=json.dumps(BODY).encode(), headers=headers)
    assert response.status_code == 415 and error(response)["code"] == "unsupported_media_type"
    assert state.runner.stats.started == 0


@pytest.mark.parametrize("content_type", ["application/json", "application/json; charset=utf-8", "application/x+json"])
def test_json_media_types_are_read(gpt, content_type):
    import json

    http, _ = client(gpt)
    response = http.post("/v1/completions", content=json.dumps(BODY).encode(), headers={"Content-Type": content_type})
    assert response.status_code == 200


def test_a_page_on_another_origin_is_refused(gpt):
    """The simple request a page sends without a preflight, and the preflight itself."""
    http, state = client(gpt, allowed_hosts=list(LOOPBACK_HOSTS))
    page = {"Origin": "http://attacker.example", "Content-Type": "text/plain;charset=UTF-8"}
    response = http.post("/v1/completions", content=b'{"prompt": "a"}', headers=page)
    assert response.status_code == 403 and error(response)["code"] == "origin_not_allowed"
    assert "access-control-allow-origin" not in response.headers
    preflight = http.options(
        "/v1/completions",
        headers={"Origin": "http://attacker.example", "Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": "content-type"},
    )  # fmt: skip
    assert preflight.status_code >= 400 and "access-control-allow-origin" not in preflight.headers
    assert state.runner.stats.started == 0


def test_allowed_origins_get_cors_grants(gpt):
    http, _ = client(gpt, allowed_origins=["http://localhost:3000"])
    preflight = http.options(
        "/v1/completions",
        headers={"Origin": "http://localhost:3000", "Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": "content-type,authorization"},
    )  # fmt: skip
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == "http://localhost:3000"
    response = http.post("/v1/completions", json=BODY, headers={"Origin": "http://localhost:3000"})
    assert response.status_code == 200 and response.headers["access-control-allow-origin"] == "http://localhost:3000"
    assert http.get("/health", headers={"Origin": "http://other:3000"}).status_code == 403


def test_with_a_key_every_v1_path_needs_it(gpt):
    http, _ = client(gpt, api_key="s3cret")
    for method, path in [("GET", "/v1/nothing"), ("GET", "/v1/completions"), ("POST", "/v1/chat/completions"),
                         ("DELETE", "/v1/models"), ("GET", "/v1")]:  # fmt: skip
        response = http.request(method, path)
        assert response.status_code == 401, (method, path)
        assert error(response)["code"] == "invalid_api_key" and response.headers["www-authenticate"] == "Bearer"
    assert http.get("/health").status_code == 200
    keyed = {"Authorization": "Bearer s3cret"}
    assert http.get("/v1/nothing", headers=keyed).status_code == 404
    assert http.post("/v1/completions", json=BODY, headers=keyed).status_code == 200


def test_flags_and_variables(monkeypatch, tiny_dir):
    monkeypatch.setenv("KOGPT_ALLOWED_HOSTS", "kogpt.lan, *.example.com")
    monkeypatch.setenv("KOGPT_ALLOWED_ORIGINS", "http://localhost:3000")
    args = serveflags.build_parser().parse_args([])
    assert args.allowed_hosts == "kogpt.lan, *.example.com" and args.allowed_origins == "http://localhost:3000"
    states = []
    monkeypatch.setattr("kogpt.cli.serve.serve", lambda args, state, app: states.append(state) or 0)
    assert main(["serve", "--model", str(tiny_dir)]) == 0
    assert main(["serve", "--model", str(tiny_dir), "--api-key", "k", "--allowed-hosts", ""]) == 0
    monkeypatch.delenv("KOGPT_ALLOWED_HOSTS")
    assert main(["serve", "--model", str(tiny_dir), "--api-key", "k"]) == 0
    assert main(["serve", "--model", str(tiny_dir)]) == 0
    assert states[0].allowed_hosts == [*LOOPBACK_HOSTS, "kogpt.lan", "*.example.com"]
    assert states[0].allowed_origins == ["http://localhost:3000"]
    assert states[1].allowed_hosts is None  # a key and no list: any Host (the key is the guard)
    assert states[2].allowed_hosts is None
    assert states[3].allowed_hosts == list(LOOPBACK_HOSTS)  # loopback, no key: loopback names only


@pytest.mark.parametrize("origin", [LOCAL, "http://localhost:8000", "http://[::1]:8000", "HTTP://127.0.0.1:8000/"])
def test_the_servers_own_page_may_call(gpt, origin):
    """Browsers send Origin on a page's same-origin POSTs: the playground at / calls its own server."""
    http, _ = client(gpt, allowed_hosts=list(LOOPBACK_HOSTS))
    host = origin.split("//")[1].rstrip("/")
    response = http.post("/v1/completions", json=BODY, headers={"Origin": origin, "Host": host})
    assert response.status_code == 200 and "access-control-allow-origin" not in response.headers


@pytest.mark.parametrize(
    "origin",
    ["http://127.0.0.1:8001", "http://127.0.0.1", "https://127.0.0.1", "null", "http://localhost:8000",
     "http://127.0.0.1:8000/page", "http://user@127.0.0.1:8000", "file://127.0.0.1:8000"],
)  # fmt: skip
def test_an_origin_that_is_not_the_host_is_still_refused(gpt, origin):
    """Another port or name is another site. (The scheme is not compared: Host carries none, and
    a page served through a TLS proxy in front of the server is https; one port has one server.)"""
    http, state = client(gpt, allowed_hosts=list(LOOPBACK_HOSTS))
    response = http.post("/v1/completions", json=BODY, headers={"Origin": origin, "Host": "127.0.0.1:8000"})
    assert response.status_code == 403 and error(response)["code"] == "origin_not_allowed"
    assert state.runner.stats.started == 0


def test_default_ports_make_the_same_origin(gpt):
    """A port left out is the scheme's default; https through a TLS proxy that passes the Host on."""
    http, _ = client(gpt, allowed_hosts=[*LOOPBACK_HOSTS, "kogpt.internal"])
    same = [("http://kogpt.internal", "kogpt.internal"), ("http://kogpt.internal", "kogpt.internal:80"),
            ("https://kogpt.internal", "kogpt.internal:443"), ("https://kogpt.internal", "kogpt.internal")]  # fmt: skip
    for origin, host in same:
        assert http.post("/v1/completions", json=BODY, headers={"Origin": origin, "Host": host}).status_code == 200
    other = [("http://kogpt.internal:8080", "kogpt.internal"), ("http://kogpt.internal", "kogpt.internal:8080")]
    for origin, host in other:
        response = http.post("/v1/completions", json=BODY, headers={"Origin": origin, "Host": host})
        assert response.status_code == 403, (origin, host)


def test_a_rebound_page_is_not_its_own_origin_without_a_key(gpt):
    """With any Host served (a public --host without a key, or --allowed-hosts '*'), a page that
    rebinds attacker.example to this server is same-origin with itself; its name is not this server's."""
    http, state = client(gpt)  # any Host
    rebound = {"Origin": "http://attacker.example:8000", "Host": "attacker.example:8000"}
    response = http.post("/v1/completions", json=BODY, headers=rebound)
    assert response.status_code == 403 and error(response)["code"] == "origin_not_allowed"
    assert state.runner.stats.started == 0
    own = {"Origin": "http://192.168.1.5:8000", "Host": "192.168.1.5:8000"}  # an address is never rebound
    assert http.post("/v1/completions", json=BODY, headers=own).status_code == 200


def test_with_a_key_a_same_origin_page_needs_the_key(gpt):
    http, _ = client(gpt, api_key="s3cret")  # any Host: the key is the guard
    page = {"Origin": "https://kogpt.example.com", "Host": "kogpt.example.com"}
    response = http.post("/v1/completions", json=BODY, headers=page)
    assert response.status_code == 401 and error(response)["code"] == "invalid_api_key"
    keyed = {**page, "Authorization": "Bearer s3cret"}
    assert http.post("/v1/completions", json=BODY, headers=keyed).status_code == 200
