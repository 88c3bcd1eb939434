"""The ASGI app: OpenAI's `/v1/completions` and `/v1/models`, vLLM's `/tokenize` and `/detokenize`,
Prometheus' `/metrics`, `/health`, and the playground page at `/` (`page.py`), on Starlette.

The app answers as soon as it starts; `ServerState.ready(gpt)` hands it the loaded model. Until then
`/health` and the API answer 503, so a supervisor can start the server and wait for it.
`ServerState.shutdown()` (called when SIGTERM arrives, see `listener`) ends what is in flight with
OpenAI-style errors instead of cutting it.
"""

from __future__ import annotations

import asyncio
import logging
import time

import anyio
from sse_starlette import EventSourceResponse
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from kogpt.server.completions import Completion
from kogpt.server.errors import APIError, shutting_down
from kogpt.server.guard import Guard
from kogpt.server.metrics import Metrics
from kogpt.server.page import routes as page_routes
from kogpt.server.plan import plan
from kogpt.server.request import MAX_BODY_BYTES, check_content_type, parse_completion, parse_json, read_body
from kogpt.server.runner import MAX_QUEUE, Runner
from kogpt.server.tokens import detokenize, parse_detokenize, parse_tokenize, tokenize, vocabulary
from kogpt.messages import shown
from kogpt.settings import SamplingSettings
from kogpt.transcript import Transcript

log = logging.getLogger(__name__)

PING_SECONDS = 15  # an SSE comment line keeps proxies from closing a stream during a long prefill
SHUTDOWN_SECONDS = 30.0
STREAM_GRACE_SECONDS = 5.0  # sse-starlette waits this long for a stream's last events at shutdown


class ServerState:
    """What the app serves: the model (once loaded), its name, the defaults, who may call, the limits."""

    def __init__(
        self,
        served_name: str,
        defaults: SamplingSettings | None = None,
        api_key: str | None = None,
        transcript: Transcript | None = None,
        max_body: int = MAX_BODY_BYTES,
        allowed_hosts: list[str] | None = None,
        allowed_origins: list[str] | None = None,
        max_queue: int = MAX_QUEUE,
        shutdown_timeout: float = SHUTDOWN_SECONDS,
        max_batch: int | None = None,
        prefix_cache: int | None = None,
    ) -> None:
        self.served_name = served_name
        self.defaults = defaults or SamplingSettings(max_new_tokens=16)
        self.api_key = api_key
        self.transcript = transcript
        self.max_body = max_body
        self.allowed_hosts = allowed_hosts  # None: any Host
        self.allowed_origins = allowed_origins or []
        self.max_queue = max_queue
        self.max_batch = max_batch  # None: the engine's default
        self.prefix_cache = prefix_cache  # bytes; None: the engine's default
        self.shutdown_timeout = shutdown_timeout
        self.runner: Runner | None = None
        self.stopping = False
        self.created = int(time.time())
        self.metrics = Metrics(lambda: self.runner)  # its own registry: several apps never collide

    def ready(self, gpt) -> Runner:
        if self.max_batch is not None:
            gpt.engine.max_batch = self.max_batch
        if self.prefix_cache is not None:
            gpt.engine.prefix_budget = self.prefix_cache
        self.runner = Runner(gpt, self.max_queue, gpt.engine.max_batch)
        self.metrics.follow(self.runner)
        return self.runner

    def shutdown(self) -> None:
        """Stop taking requests and end those in flight (on the event loop's thread)."""
        self.stopping = True
        if self.runner is not None:
            self.runner.shutdown(self.shutdown_timeout)


def create_app(state: ServerState) -> Starlette:
    """The Starlette app serving `state`; errors of every kind are OpenAI error objects."""

    def guarded(handler):
        async def endpoint(request: Request) -> Response:
            try:
                return await handler(request)
            except APIError as exc:
                log.debug("%s %s -> %d %s", request.method, request.url.path, exc.status, exc.message)
                return exc.response()

        return endpoint

    def runner() -> Runner:
        if state.runner is None:
            raise APIError(503, "the model is still loading; GET /health answers 200 when it is ready", code="loading")
        return state.runner

    async def health(request: Request) -> Response:
        if state.runner is None:
            raise APIError(503, "the model is loading", code="loading")
        return JSONResponse({"status": "ok"})

    async def models(request: Request) -> Response:
        context = runner().context_length
        model = {"id": state.served_name, "object": "model", "created": state.created, "owned_by": "kogpt"}
        return JSONResponse({"object": "list", "data": [{**model, "max_model_len": context}]})

    async def body(request: Request) -> dict:
        check_content_type(request)
        return parse_json(await read_body(request, state.max_body))

    def check_model(model: str | None) -> None:
        if model is not None and model != state.served_name:
            raise APIError(
                404,
                f"model {shown(model)} is not served here; this server serves {shown(state.served_name)}",
                param="model",
                code="model_not_found",
            )

    async def completions(request: Request) -> Response:
        serving = runner()
        checked = parse_completion(await body(request), state.defaults, vocabulary(serving.gpt))
        check_model(checked.model)
        ticket = serving.admit()
        try:
            jobs = await plan(checked, serving)
        except BaseException:
            ticket.release()
            raise
        completion = Completion(checked, jobs, serving, state.served_name, state.transcript, ticket)
        if checked.stream:
            return EventSourceResponse(
                completion.events(),
                sep="\n",
                ping=PING_SECONDS,
                shutdown_event=anyio.Event(),  # our own shutdown ends the stream; this only delays sse-starlette's cut
                shutdown_grace_period=STREAM_GRACE_SECONDS,
            )
        result = await _unless_disconnected(request, completion.run())
        return JSONResponse(result) if result is not None else Response(status_code=499)

    def serving_now() -> Runner:
        if state.stopping:
            raise shutting_down()
        return runner()

    async def tokenize_route(request: Request) -> Response:
        serving = serving_now()
        asked = parse_tokenize(await body(request))
        check_model(asked.model)
        return JSONResponse(await tokenize(asked, serving))

    async def detokenize_route(request: Request) -> Response:
        serving = serving_now()
        given = parse_detokenize(await body(request), vocabulary(serving.gpt))
        check_model(given.model)
        return JSONResponse({"prompt": await detokenize(given.tokens, serving)})

    async def metrics_route(request: Request) -> Response:
        text, content_type = state.metrics.exposition(request.headers.get("accept"))
        return Response(text, headers={"Content-Type": content_type})

    async def chat(request: Request) -> Response:
        raise APIError(
            404,
            "KoGPT is a base model, not a chat model: it continues text. Use POST /v1/completions with a prompt",
            code="model_not_supported",
        )

    async def http_error(request: Request, exc: HTTPException) -> Response:
        message = {
            404: f"no route {shown(request.url.path)}; kogpt serves POST /v1/completions, GET /v1/models, "
            "POST /tokenize, POST /detokenize, GET /metrics, GET /health and the playground at GET /",
            405: f"{shown(request.method, quote=False)} is not allowed on {shown(request.url.path)}",
        }
        error = APIError(exc.status_code, message.get(exc.status_code, str(exc.detail)), headers=exc.headers)
        return error.response()

    async def server_error(request: Request, exc: Exception) -> Response:
        log.exception("unexpected error serving %s", request.url.path)
        return APIError(500, f"internal error: {type(exc).__name__}").response()

    routes = [
        Route("/health", guarded(health)),
        Route("/v1/models", guarded(models)),
        Route("/v1/completions", guarded(completions), methods=["POST"]),
        Route("/v1/chat/completions", guarded(chat), methods=["POST"]),
        Route("/tokenize", guarded(tokenize_route), methods=["POST"]),
        Route("/detokenize", guarded(detokenize_route), methods=["POST"]),
        Route("/metrics", guarded(metrics_route)),
        *page_routes(state),
    ]
    guard = Middleware(
        Guard, hosts=state.allowed_hosts, origins=state.allowed_origins, api_key=state.api_key
    )
    app = Starlette(
        routes=routes, middleware=[guard], exception_handlers={HTTPException: http_error, Exception: server_error}
    )
    app.state.kogpt = state
    return app


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
