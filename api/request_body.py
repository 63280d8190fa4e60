"""Request bodies at the edge: every body is counted while it streams in and refused past its cap
with a 413 `request_too_large`, and a JSON body is parsed here, once and strictly, into the object
the routes read (`json_object`).

- A declared `Content-Length` over the cap is refused before a byte of the body is read; a
  chunked body (no length) when the count passes the cap, whatever the route does with it.
- JSON: the whole body (within the cap) is read, then parsed off the event loop when it is large.
  Anything the API cannot use is a 400 `invalid_json`, never a 500: not UTF-8, not JSON, nested
  too deep, a number too long to read, `NaN` or `Infinity` (or a literal that overflows to it),
  more values than any request of ours holds (each costs memory far beyond its bytes), or a top
  level that is not an object.
- The refusal is raised from `receive`, so it reaches whoever is reading the body: a route reading
  it with `read_body`, or FastAPI's own body parsing (`RefusedBody` is an HTTPException for that).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

from fastapi import Request
from fastapi.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.errors import APIError, RefusedBody, bad_request, error_response

JSON_BODY = "darkroom.json_body"  # scope key: the request's parsed JSON object
# Commas and opening brackets bound the number of values a JSON text holds (each value but the
# first follows one). A Darkroom request holds a few dozen; a prompt full of commas counts too.
MAX_JSON_VALUES = 100_000
MAX_NUMBER_CHARS = 40  # a seed is at most 19 digits; nothing a request sends is longer
_PARSED_ON_THE_LOOP = 64 * 1024  # larger bodies are parsed in a worker thread


def is_json(content_type: str | None) -> bool:
    media_type = (content_type or "").partition(";")[0].strip().lower()
    return media_type == "application/json" or media_type.endswith("+json")


def too_large(limit: int) -> APIError:
    return APIError(
        413,
        f"The request body is over the {limit} byte limit.",
        code="request_too_large",
        # The rest of the body is not read: the connection cannot carry another request.
        headers={"connection": "close"},
    )


class RequestBodyGuard:
    """Pure ASGI middleware: the body cap, and the strict JSON parse. `backstops` names the routes
    that stream large uploads and hold them to caps of their own, with errors that say which cap
    (`POST /v1/files`): their bodies are only counted, against a larger backstop."""

    def __init__(self, app: ASGIApp, *, limit: int, backstops: Mapping[str, int] | None = None) -> None:
        self.app = app
        self.limit = limit
        self.backstops = dict(backstops or {})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        backstop = self.backstops.get(scope["path"])
        limit = backstop or self.limit
        headers = Headers(scope=scope)
        declared = headers.get("content-length", "")
        if backstop is None and declared.isdigit() and int(declared) > limit:
            await error_response(too_large(limit))(scope, receive, send)
            return
        if is_json(headers.get("content-type")):
            receive = _JsonBody(scope, receive, limit)
        else:
            receive = _Counted(receive, limit)
        await self.app(scope, receive, send)


class _Counted:
    def __init__(self, receive: Receive, limit: int) -> None:
        self.receive = receive
        self.limit = limit
        self.received = 0

    async def __call__(self) -> Message:
        message = await self.receive()
        if message["type"] == "http.request":
            self.received += len(message.get("body", b""))
            if self.received > self.limit:
                raise RefusedBody(too_large(self.limit))
        return message


class _JsonBody:
    """The first call reads the whole body, parses it into the scope, and hands it on as one message."""

    def __init__(self, scope: Scope, receive: Receive, limit: int) -> None:
        self.scope = scope
        self.receive = receive
        self.limit = limit
        self.read = False

    async def __call__(self) -> Message:
        if self.read:
            return await self.receive()  # after the body: the disconnect a streaming response waits on
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await self.receive()
            if message["type"] != "http.request":
                return message  # the client went away
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.limit:
                raise RefusedBody(too_large(self.limit))
            chunks.append(chunk)
            more = message.get("more_body", False)
        body = b"".join(chunks)
        del chunks
        if len(body) > _PARSED_ON_THE_LOOP:
            self.scope[JSON_BODY] = await run_in_threadpool(parse_json_object, body)
        elif body:
            self.scope[JSON_BODY] = parse_json_object(body)
        self.read = True
        return {"type": "http.request", "body": body, "more_body": False}


async def json_object(request: Request) -> dict[str, Any]:
    """The request's JSON object, as `RequestBodyGuard` parsed it."""
    await request.body()  # read through the guard, which parses it
    if JSON_BODY not in request.scope:
        raise bad_request("The request body is empty; send a JSON object.", param=None, code="invalid_json")
    return request.scope[JSON_BODY]


class _Unusable(ValueError):
    pass


def _refuse_constant(name: str) -> float:
    raise _Unusable(f"{name} is not a number JSON allows")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _Unusable(f"the number {text[:MAX_NUMBER_CHARS]} is too large")
    return value


def _integer(text: str) -> int:
    if len(text) > MAX_NUMBER_CHARS:
        raise _Unusable(f"a number is longer than {MAX_NUMBER_CHARS} digits")
    return int(text)


def parse_json_object(body: bytes) -> dict[str, Any]:
    """`body` as a JSON object, or a 400 `invalid_json` saying why it is not one we can use."""

    def invalid(why: str) -> RefusedBody:
        return RefusedBody(bad_request(f"The request body is not valid JSON: {why}.", param=None, code="invalid_json"))

    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as error:
        raise invalid(f"it is not UTF-8 (byte {error.start})") from None
    values = 1 + text.count(",") + text.count("[") + text.count("{")
    if values > MAX_JSON_VALUES:
        raise invalid(f"it holds more than {MAX_JSON_VALUES} values")
    try:
        value = json.loads(text, parse_constant=_refuse_constant, parse_float=_finite, parse_int=_integer)
    except json.JSONDecodeError as error:
        raise invalid(f"{error.msg} at line {error.lineno} column {error.colno}") from None
    except RecursionError:
        raise invalid("it is nested too deeply") from None
    except _Unusable as error:
        raise invalid(str(error)) from None
    if not isinstance(value, dict):
        raise RefusedBody(bad_request("The request body must be a JSON object.", param=None, code="invalid_json"))
    return value
