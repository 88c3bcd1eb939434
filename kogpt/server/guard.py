"""Who may talk to the server: the Host header, the Origin of browser pages, and the API key.

A web page on any site can send requests to `127.0.0.1`; after DNS rebinding it can also read the
replies, its requests then carrying the attacker's host name. So, as Ollama does: on a loopback bind
without a key only loopback Host values are accepted (`--allowed-hosts` adds names, for a reverse
proxy), a request from a page (one with an `Origin` header) is refused unless `--allowed-origins`
lists its origin, and only then do preflights get CORS grants (Starlette's `CORSMiddleware`).
The server's own page (the playground at `/`) is the exception: browsers send `Origin` on its
same-origin POSTs, so an `Origin` naming the very host and port of the `Host` header is accepted
where that name cannot be a rebound one: an IP address, `localhost`, a name `--allowed-hosts`
lists, or any name when a key is set (a rebound page never has the key).
Refusals are 403s with OpenAI's error object; with a key, every path under `/v1` needs it (401),
as in vLLM, known route or not, and so do `/tokenize`, `/detokenize` and `/metrics` (which vLLM
leaves open): they read the model's tokenizer and the server's traffic.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import urllib.parse

from starlette.datastructures import Headers
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send

from kogpt.server.errors import APIError
from kogpt.messages import shown

log = logging.getLogger(__name__)

LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1")
KEYED = ("/tokenize", "/detokenize", "/metrics")  # beyond /v1


def split_list(text: str | None) -> list[str]:
    """`a,b c` -> ["a", "b", "c"]: how --allowed-hosts, --allowed-origins and their variables are read."""
    return [item for item in (text or "").replace(",", " ").split() if item]


def host_of(header: str | None) -> str | None:
    """The host name of a Host header (`name:port`, `[::1]:8000`), lowercased; None if malformed."""
    if not header:
        return None
    try:
        parts = urllib.parse.urlsplit("//" + header)
        parts.port  # noqa: B018 - raises ValueError for a port that is not one
    except ValueError:
        return None
    if parts.username is not None or parts.path or parts.query or parts.fragment:
        return None
    return parts.hostname


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Guard:
    """ASGI middleware: checks Host and Origin, then the API key under `/v1`.

    `hosts` None accepts any Host; otherwise loopback names and the listed names (`*.example.com`
    matches subdomains, `*` anything). `origins` lists the page origins allowed (`*`: any).
    """

    def __init__(self, app: ASGIApp, hosts: list[str] | None, origins: list[str], api_key: str | None) -> None:
        self.hosts = None if hosts is None or "*" in hosts else [h.lower().strip("[]") for h in hosts]
        self.origins = [o.rstrip("/").lower() for o in origins]
        self.api_key = api_key
        if origins:
            app = CORSMiddleware(
                app,
                allow_origins=["*"] if "*" in origins else [o.rstrip("/") for o in origins],
                allow_methods=["GET", "POST"],
                allow_headers=["Authorization", "Content-Type"],
            )
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        try:
            self.check(scope)
        except APIError as exc:
            log.info("%s %s refused: %s", scope["method"], scope["path"], exc.message)
            await exc.response()(scope, receive, send)
            return
        await self.app(scope, receive, send)

    def check(self, scope: Scope) -> None:
        headers = Headers(scope=scope)
        if self.hosts is not None:
            host = host_of(headers.get("host"))
            if host is None or not (is_loopback(host) or any(_matches(host, h) for h in self.hosts)):
                raise APIError(
                    403,
                    f"Host {shown(headers.get('host', ''))} is not allowed: this server answers to "
                    "localhost and 127.0.0.1; add names with --allowed-hosts (KOGPT_ALLOWED_HOSTS)",
                    code="host_not_allowed",
                )
        origin = headers.get("origin")
        if origin is not None and not self.allows_origin(origin, headers.get("host")):
            raise APIError(
                403,
                f"requests from web pages of {shown(origin)} are not allowed; allow an origin with "
                "--allowed-origins (KOGPT_ALLOWED_ORIGINS)",
                code="origin_not_allowed",
            )
        path = scope["path"]
        preflight = scope["method"] == "OPTIONS" and "access-control-request-method" in headers
        keyed = path == "/v1" or path.startswith("/v1/") or path in KEYED
        if self.api_key is not None and keyed and not preflight:
            scheme, _, key = headers.get("authorization", "").partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(key.strip().encode(), self.api_key.encode()):
                raise APIError(
                    401,
                    "missing or wrong API key: send the header Authorization: Bearer KEY",
                    code="invalid_api_key",
                )

    def allows_origin(self, origin: str, host_header: str | None) -> bool:
        """Whether a page of `origin` may call: one `--allowed-origins` lists, or this server's own page."""
        if "*" in self.origins or origin.rstrip("/").lower() in self.origins:
            return True
        name = same_origin(origin, host_header)
        if name is None:
            return False
        # After DNS rebinding an attacker's page is same-origin with its own name too; an IP address,
        # `localhost` or a name the operator listed is never the attacker's.
        return self.api_key is not None or name == "localhost" or _is_address(name) or (
            self.hosts is not None and any(_matches(name, h) for h in self.hosts)
        )


def same_origin(origin: str, host_header: str | None) -> str | None:
    """The host name when `origin` (`http://name:port`) names the host and port of `host_header`
    (a port left out being the scheme's default), else None. The schemes are not compared: Host
    carries none, a TLS proxy in front of the server serves its page as https, and one port is one server."""
    host = host_of(host_header)
    try:
        parts = urllib.parse.urlsplit(origin.strip().lower())
        port = parts.port
    except ValueError:
        return None
    default = {"http": 80, "https": 443}.get(parts.scheme)
    if default is None or host is None or parts.hostname != host or parts.username is not None:
        return None
    if parts.path.strip("/") or parts.query or parts.fragment:
        return None
    given = urllib.parse.urlsplit("//" + (host_header or "").strip()).port
    return host if (port or default) == (given or default) else None


def _is_address(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def _matches(host: str, pattern: str) -> bool:
    if pattern.startswith("*."):
        return host.endswith(pattern[1:])
    return host == pattern
