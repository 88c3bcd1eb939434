"""The playground at `/`: one page that streams completions from this server's own API.

The page, its script and its style are static files (`static/`), read once; the server's sampling
defaults and the served model's name are written into the page as JSON when it is served, so the
page needs nothing beyond `/v1/models` and `/v1/completions` (with the key the user types, when the
server has one). The page is public, as `/health` is: the guard's Host and Origin checks apply to it,
the key only to the API it calls.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from kogpt.settings import SamplingSettings

ASSETS = {"playground.js": "text/javascript; charset=utf-8", "playground.css": "text/css; charset=utf-8"}
DEFAULTS_MARK = "{{defaults}}"
# Everything the page loads is its own: no CDN, no inline script, no frames; fetches go to this server only.
POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
HEADERS = {"Content-Security-Policy": POLICY, "X-Content-Type-Options": "nosniff", "Cache-Control": "no-cache"}


@cache
def static(name: str) -> str:
    return (resources.files("kogpt.server") / "static" / name).read_text(encoding="utf-8")


def page_defaults(served_name: str, defaults: SamplingSettings, key_required: bool) -> dict:
    """What the page starts from, in the API's names: the server's defaults for every field it offers."""
    return {
        "model": served_name,
        "key_required": key_required,
        "temperature": defaults.temperature,
        "top_p": defaults.top_p,
        "top_k": defaults.top_k,
        "repetition_penalty": defaults.repetition_penalty,
        "max_tokens": defaults.max_new_tokens,  # None: the server's --max-length counts the prompt too
        "max_length": defaults.max_length,
        "n": defaults.num_return_sequences,
        "stop": list(defaults.stop),
        "seed": defaults.seed,
    }


def render(served_name: str, defaults: SamplingSettings, key_required: bool) -> str:
    """The page's HTML with the defaults in its JSON data block (`<` escaped: no text ends the block)."""
    data = json.dumps(page_defaults(served_name, defaults, key_required), ensure_ascii=False)
    return static("playground.html").replace(DEFAULTS_MARK, data.replace("<", "\\u003c").replace("&", "\\u0026"))


def routes(state) -> list[Route]:
    """`GET /` and the page's two files; `state` is the app's `ServerState`."""

    async def page(request: Request) -> Response:
        html = render(state.served_name, state.defaults, state.api_key is not None)
        return Response(html, media_type="text/html; charset=utf-8", headers=HEADERS)

    def asset(name: str):
        async def endpoint(request: Request) -> Response:
            return Response(static(name), headers={**HEADERS, "Content-Type": ASSETS[name]})

        return endpoint

    return [Route("/", page), *(Route(f"/static/{name}", asset(name)) for name in ASSETS)]
