"""OpenAI's error object: every failure of the API is `{"error": {message, type, param, code}}`."""

from __future__ import annotations

from starlette.responses import JSONResponse

from kogpt.messages import shown

TYPES = {
    400: "invalid_request_error",
    401: "invalid_request_error",
    403: "invalid_request_error",
    404: "invalid_request_error",
    405: "invalid_request_error",
    408: "invalid_request_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    429: "requests",  # OpenAI's type for a limit on requests (code rate_limit_exceeded)
    503: "server_error",
}
MAX_MESSAGE = 1000  # characters; messages quote input only through `settings.shown`, this is the backstop


class APIError(Exception):
    """A request that cannot be served; `message` is one line that says what was wrong.

    The message may quote input: it is made safe for any value here (one line, at most
    `MAX_MESSAGE` characters, no lone surrogates), so building the reply never fails.
    """

    def __init__(
        self,
        status: int,
        message: str,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        message = " ".join(message.split())
        if len(message) > MAX_MESSAGE:
            message = message[: MAX_MESSAGE - 3] + "..."
        message = message.encode("utf-8", "backslashreplace").decode("utf-8")
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param if param is None else shown(param, quote=False)
        self.code = code
        self.headers = dict(headers or {})

    def body(self) -> dict:
        kind = TYPES.get(self.status, "server_error" if self.status >= 500 else "invalid_request_error")
        return {"error": {"message": self.message, "type": kind, "param": self.param, "code": self.code}}

    def response(self) -> JSONResponse:
        headers = dict(self.headers)
        if self.status == 401:
            headers["WWW-Authenticate"] = "Bearer"
        return JSONResponse(self.body(), status_code=self.status, headers=headers or None)


def bad_request(message: str, param: str | None = None, code: str | None = None) -> APIError:
    return APIError(400, message, param, code)


def shutting_down() -> APIError:
    """What a request gets when the server stops before its completion is done."""
    return APIError(503, "the server is shutting down; retry later", code="server_shutting_down")
