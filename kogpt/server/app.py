"""The ASGI app: OpenAI's `/v1/completions` and `/v1/models`, and `/health`, on Starlette.

The app answers as soon as it starts; `ServerState.ready(gpt)` hands it the loaded model. Until then
`/health` and the API answer 503, so a supervisor can start the server and wait for it.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time

from sse_starlette import EventSourceResponse
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from kogpt.server.completions import Completion, plan
from kogpt.server.errors import APIError
from kogpt.server.request import MAX_BODY_BYTES, parse_completion, parse_json, read_body
from kogpt.server.runner import Runner
from kogpt.settings import SamplingSettings
from kogpt.transcript import Transcript

log = logging.getLogger(__name__)

PING_SECONDS = 15  # an SSE comment line keeps proxies from closing a stream during a long prefill


class ServerState:
    """What the app serves: the model (once loaded), its name, the defaults, the key and the limits."""

    def __init__(
        self,
        served_name: str,
        defaults: SamplingSettings | None = None,
        api_key: str | None = None,
        transcript: Transcript | None = None,
        max_body: int = MAX_BODY_BYTES,
    ) -> None:
        self.served_name = served_name
        self.defaults = defaults or SamplingSettings(max_new_tokens=16)
        self.api_key = api_key
        self.transcript = transcript
        self.max_body = max_body
        self.runner: Runner | None = None
        self.created = int(time.time())

    def ready(self, gpt) -> Runner:
        self.runner = Runner(gpt)
        return self.runner


def create_app(state: ServerState) -> Starlette:
    """The Starlette app serving `state`; errors of every kind are OpenAI error objects."""

    def guarded(handler, authorise: bool = True):
        async def endpoint(request: Request) -> Response:
            try:
                if authorise:
                    _authorise(state, request)
                return await handler(request)
            except APIError as exc:
                log.debug("%s %s -> %d %s", request.method, request.url.path, exc.status, exc.message)
                return exc.response()

        return endpoint

    async def health(request: Request) -> Response:
        if state.runner is None:
            raise APIError(503, "the model is loading", code="loading")
        return JSONResponse({"status": "ok"})

    async def models(request: Request) -> Response:
        model = {"id": state.served_name, "object": "model", "created": state.created, "owned_by": "kogpt"}
        if state.runner is not None:
            model["max_model_len"] = state.runner.context_length
        return JSONResponse({"object": "list", "data": [model]})

    async def completions(request: Request) -> Response:
        runner = state.runner
        if runner is None:
            raise APIError(503, "the model is still loading; GET /health answers 200 when it is ready", code="loading")
        body = await read_body(request, state.max_body)
        checked = parse_completion(parse_json(body), state.defaults)
        if checked.model is not None and checked.model != state.served_name:
            raise APIError(
                404,
                f"model {checked.model!r} is not served here; this server serves {state.served_name!r}",
                param="model",
                code="model_not_found",
            )
        completion = Completion(checked, plan(checked, runner), runner, state.served_name, state.transcript)
        if checked.stream:
            return EventSourceResponse(completion.events(), sep="\n", ping=PING_SECONDS)
        result = await _unless_disconnected(request, completion.run())
        return JSONResponse(result) if result is not None else Response(status_code=499)

    async def http_error(request: Request, exc: HTTPException) -> Response:
        message = {
            404: f"no route {request.url.path}; the API is under /v1",
            405: f"{request.method} is not allowed on {request.url.path}",
        }
        return APIError(exc.status_code, message.get(exc.status_code, str(exc.detail))).response()

    async def server_error(request: Request, exc: Exception) -> Response:
        log.exception("unexpected error serving %s", request.url.path)
        return APIError(500, f"internal error: {type(exc).__name__}").response()

    routes = [
        Route("/health", guarded(health, authorise=False)),
        Route("/v1/models", guarded(models)),
        Route("/v1/completions", guarded(completions), methods=["POST"]),
    ]
    app = Starlette(routes=routes, exception_handlers={HTTPException: http_error, Exception: server_error})
    app.state.kogpt = state
    return app


def _authorise(state: ServerState, request: Request) -> None:
    if state.api_key is None:
        return
    scheme, _, key = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(key.strip().encode(), state.api_key.encode()):
        raise APIError(
            401, "missing or wrong API key: send the header Authorization: Bearer KEY", code="invalid_api_key"
        )


async def _unless_disconnected(request: Request, work):
    """Await `work`, cancelling it (and so its generation) if the client disconnects first; None then."""
    task = asyncio.ensure_future(work)

    async def disconnected() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    watcher = asyncio.ensure_future(disconnected())
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        if not task.done():  # the client left, or this request itself was cancelled (shutdown)
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        watcher.cancel()
    if task.cancelled():
        log.info("client %s left before its completion was done; cancelled it", request.client and request.client.host)
        return None
    return task.result()
