"""Request ids: every HTTP request gets one, every log line logged while handling it carries it, and
every response returns it as `x-request-id` (the openai SDK shows it as `error.request_id` and
`response._request_id`). A client's own id is kept when it is a sane token, so a trace can span
the client and the server."""

from __future__ import annotations

import logging
import re
import secrets
import time

from fastapi import FastAPI
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from darkroom.logs import log_context

HEADER = "x-request-id"
_SANE = re.compile(r"[A-Za-z0-9._-]{1,128}")

access_log = logging.getLogger("darkroom.api.access")


def new_request_id() -> str:
    return "req_" + secrets.token_hex(12)


def accepted_request_id(value: str | None) -> str | None:
    """The client's id if it is safe to echo and to log verbatim (no spaces, quotes, newlines)."""
    if value is not None and _SANE.fullmatch(value):
        return value
    return None


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return value.decode("latin-1")
    return None


class RequestContext:
    """Pure ASGI, not `BaseHTTPMiddleware`: it wraps `send`, so the header is added to whatever
    response leaves, an exception handler's included, and streamed bodies are not buffered."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = accepted_request_id(_header(scope, HEADER.encode())) or new_request_id()
        status: int | None = None

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", [])  # optional in ASGI; MutableHeaders needs it
                MutableHeaders(scope=message)[HEADER] = request_id
            await send(message)

        started = time.perf_counter()
        with log_context(request_id=request_id):
            try:
                await self.app(scope, receive, send_with_id)
            finally:
                duration_ms = round((time.perf_counter() - started) * 1000, 1)
                access_log.info(
                    "%s %s %s %.1f ms",
                    scope["method"],
                    scope["path"],
                    status if status is not None else "-",
                    duration_ms,
                    extra={
                        "method": scope["method"],
                        "path": scope["path"],
                        "status": status,
                        "duration_ms": duration_ms,
                    },
                )


class DarkroomAPI(FastAPI):
    """FastAPI with `RequestContext` outside everything. Starlette always puts its
    ServerErrorMiddleware outermost, and it sends the 500 from the `Exception` handler with the
    server's own `send`: a middleware added with `add_middleware` sits inside it and would never
    see that response, nor have the id bound for its "unhandled error" log line."""

    def build_middleware_stack(self) -> ASGIApp:
        return RequestContext(super().build_middleware_stack())
