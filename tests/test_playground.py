"""Issue 22: the playground page at `/`. Plain HTTP checks of what is served, then a real browser
(the system's headless chromium, driven by playwright; nothing is downloaded) typing Korean through
an IME, streaming a completion and stopping one, against a server on the tiny checkpoint."""

from __future__ import annotations

import json
import re
import shutil

import pytest

pytest.importorskip("starlette")
httpx = pytest.importorskip("httpx")

from starlette.testclient import TestClient  # noqa: E402

from kogpt.server.app import ServerState, create_app  # noqa: E402
from kogpt.server.guard import LOOPBACK_HOSTS  # noqa: E402
from kogpt.server.page import ASSETS, static  # noqa: E402
from kogpt.settings import SamplingSettings  # noqa: E402
from tests.serving import GatedGPT, running, wait_for  # noqa: E402

NAME = "kakaobrain/kogpt"
PROMPT = "인간처럼 생각하고"
KEY = "s3cret"
DEFAULTS = SamplingSettings(temperature=0.7, top_p=0.9, top_k=40, repetition_penalty=1.1, max_new_tokens=16,
                            stop=["</script>", "\n\n"], num_return_sequences=2)  # fmt: skip


def client(gpt, **state) -> TestClient:
    state = ServerState(NAME, DEFAULTS, **state)
    state.ready(gpt)
    return TestClient(create_app(state), base_url="http://127.0.0.1:8000")


def embedded(html: str) -> dict:
    return json.loads(re.search(r'<script type="application/json" id="defaults">(.*?)</script>', html, re.S).group(1))


def test_the_page_is_html_with_the_servers_defaults(gpt):
    response = client(gpt, allowed_hosts=list(LOOPBACK_HOSTS)).get("/")
    assert response.status_code == 200 and response.headers["content-type"] == "text/html; charset=utf-8"
    assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
    defaults = embedded(response.text)  # the stop sequence "</script>" did not end the data block
    assert defaults == {
        "model": NAME, "key_required": False, "temperature": 0.7, "top_p": 0.9, "top_k": 40,
        "repetition_penalty": 1.1, "max_tokens": 16, "max_length": DEFAULTS.max_length, "n": 2,
        "stop": ["</script>", "\n\n"], "seed": None,
    }  # fmt: skip


def test_the_page_needs_no_key_while_the_api_does(gpt):
    http = client(gpt, api_key=KEY)
    page = http.get("/")
    assert page.status_code == 200 and embedded(page.text)["key_required"] is True
    for name, content_type in ASSETS.items():
        asset = http.get(f"/static/{name}")
        assert asset.status_code == 200 and asset.headers["content-type"] == content_type
    assert http.get("/v1/models").status_code == 401
    assert http.post("/v1/completions", json={"prompt": PROMPT}).status_code == 401
    assert http.get("/v1/models", headers={"Authorization": f"Bearer {KEY}"}).status_code == 200


def test_the_page_keeps_the_host_guard(gpt):
    http = client(gpt, allowed_hosts=list(LOOPBACK_HOSTS))
    assert http.get("/", headers={"Host": "attacker.example:8000"}).status_code == 403
    assert http.get("/static/playground.js", headers={"Host": "attacker.example:8000"}).status_code == 403


def test_the_page_loads_nothing_from_elsewhere():
    for name in ["playground.html", *ASSETS]:
        assert not re.search(r"(?i)https?:|ftp:|wss?:|url\(", static(name)), name
    for link in re.findall(r'(?:src|href)="([^"]*)"', static("playground.html")):
        assert re.match(r"/static/\w|data:", link), link
    script = static("playground.js")
    assert set(re.findall(r'fetch\("([^"]*)"', script)) == {"/v1/models", "/v1/completions"}
    assert "innerHTML" not in script and "insertAdjacentHTML" not in script  # model output is text only


# The browser: the system's chromium, never a download.

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed: pip install '.[test]'")
    if CHROMIUM is None:
        pytest.skip("no chromium on PATH: apt-get install chromium fonts-noto-cjk (.ci/run does)")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM)
        yield browser
        browser.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(locale="ko-KR", viewport={"width": 1100, "height": 760})
    page = context.new_page()
    errors = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    yield page
    context.close()
    assert not errors, errors


def texts(page) -> list[str]:
    return page.eval_on_selector_all(".choice .text", "nodes => nodes.map(node => node.textContent)")


def finishes(page) -> list[str]:
    return page.eval_on_selector_all(".choice", "nodes => nodes.map(node => node.dataset.finish)")


def outcome(page) -> str:
    """The status line once the page's request is over ('Done', 'Stopped' or the error)."""
    page.wait_for_selector("body[data-state=idle]", state="attached")
    return page.text_content("#status")


def type_korean(page, text: str) -> None:
    """`text` typed into the prompt, its last syllable composed by the IME (Chromium's own composition,
    through the DevTools protocol); Ctrl+Enter pressed mid-composition must not submit."""
    page.click("#prompt")
    page.keyboard.type(text[:-1])
    ime = page.context.new_cdp_session(page)
    for partial in ["ㄱ", text[-1]]:
        ime.send("Input.imeSetComposition", {"text": partial, "selectionStart": 1, "selectionEnd": 1})
    page.keyboard.press("Control+Enter")  # the keydown says isComposing: Enter belongs to the IME
    assert page.get_attribute("body", "data-state") == "idle"
    ime.send("Input.insertText", {"text": text[-1]})  # the IME commits the syllable
    ime.detach()
    assert page.input_value("#prompt") == text


def test_the_page_streams_what_the_api_returns_and_stops(gpt, page):
    state = ServerState(NAME, SamplingSettings(max_new_tokens=16), allowed_hosts=list(LOOPBACK_HOSTS))
    gated = GatedGPT(gpt)
    gated.gate.set()
    runner = state.ready(gated)
    with running(create_app(state)) as url:
        page.goto(url + "/")
        assert page.input_value("input[name=max_tokens]") == "16"  # the server's default
        page.wait_for_selector("#model:text('context')")
        page.fill("input[name=seed]", "1234")
        page.fill("input[name=max_tokens]", "12")
        page.fill("input[name=n]", "2")
        type_korean(page, PROMPT)
        assert runner.stats.started == 0
        page.keyboard.press("Control+Enter")  # the browser's POST carries Origin: the server's own
        assert outcome(page) == "Done"
        api = httpx.post(url + "/v1/completions", json={"prompt": PROMPT, "seed": 1234, "max_tokens": 12, "n": 2})
        choices = api.json()["choices"]
        assert texts(page) == [choice["text"] for choice in choices] and any(texts(page))
        assert finishes(page) == [choice["finish_reason"] for choice in choices]
        figures = page.eval_on_selector_all(".figures", "nodes => nodes.map(node => node.textContent)")
        assert all(re.fullmatch(r"~?\d+ tokens · ~?[\d.]+ tok/s", line) for line in figures), figures
        for line, choice in zip(figures, choices):  # a choice that ran to max_tokens made exactly that many
            assert line.startswith("12 tokens ·") or choice["finish_reason"] != "length", line

        finished = runner.stats.finished
        gated.gate.clear()  # the next generation stops after its first chunk until the gate opens
        page.fill("input[name=max_tokens]", "100")
        page.fill("input[name=n]", "1")
        page.click("#generate")
        wait_for(lambda: runner.stats.running == 1, "the long generation to start")
        page.click("#stop")  # aborts the fetch: the server sees its client leave
        assert outcome(page) == "Stopped"
        wait_for(lambda: runner.stats.left == 1, "the server to notice the page left")
        gated.gate.set()
        wait_for(lambda: runner.stats.running == 0, "the generation to stop")
        assert runner.stats.cancelled == 1 and runner.stats.finished == finished
        assert finishes(page) == ["stopped"] and page.is_enabled("#generate") and not page.is_enabled("#stop")


def test_the_key_field_and_the_kept_settings(gpt, page):
    state = ServerState(NAME, SamplingSettings(max_new_tokens=4), api_key=KEY)
    state.ready(gpt)
    with running(create_app(state)) as url:
        page.goto(url + "/")
        page.wait_for_selector("#status:text('needs an API key')")
        page.fill("#prompt", PROMPT)
        page.fill("input[name=seed]", "7")
        page.click("#generate")
        assert outcome(page).startswith("missing or wrong API key") and page.is_visible("#status.error")
        page.fill("#api_key", KEY)
        page.click("#generate")
        assert outcome(page) == "Done"
        assert finishes(page) == ["length"] and texts(page)[0]
        page.reload()
        assert page.input_value("#prompt") == PROMPT and page.input_value("input[name=seed]") == "7"
        assert page.input_value("#api_key") == KEY  # this tab's session
        page.wait_for_selector("#model:text('context')")
        page.click("#reset")
        assert page.input_value("input[name=seed]") == "" and page.input_value("input[name=max_tokens]") == "4"
