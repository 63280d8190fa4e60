"""Every error leaves as `{"error": {"message", "type", "param", "code"}}`, the shape the SDK parses."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import InterfaceError, OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger("darkroom.api")


class APIError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        type: str = "invalid_request_error",
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.type = type
        self.headers = headers or {}


class RefusedBody(StarletteHTTPException):
    """An `APIError` raised while a request's body is read (api/request_body.py). An HTTPException,
    because FastAPI turns any other exception raised while it reads a body into its own generic
    400; this one it lets through, and `install_error_handlers` answers with the error inside."""

    def __init__(self, error: APIError) -> None:
        super().__init__(error.status, error.message, error.headers)
        self.error = error


def bad_request(message: str, *, param: str | None, code: str = "invalid_value") -> APIError:
    return APIError(400, message, param=param, code=code)


def not_found(what: str, ident: str, *, param: str | None = None) -> APIError:
    return APIError(404, f"No {what} found with id '{ident}'.", param=param, code="not_found")


def error_response(error: APIError) -> JSONResponse:
    body = {
        "error": {
            "message": error.message,
            "type": error.type,
            "param": error.param,
            "code": error.code,
        }
    }
    return JSONResponse(body, status_code=error.status, headers=error.headers)


def _param_of(location: tuple) -> str | None:
    # ("body", "size") -> "size"; ("body", "lora", 0, "scale") -> "lora[0].scale"; ("body",) -> None
    param = ""
    for part in location[1:]:
        param += f"[{part}]" if isinstance(part, int) else f".{part}" if param else str(part)
    return param or None


def _validation_message(error: dict) -> str:
    param = _param_of(tuple(error.get("loc", ())))
    if error.get("type") == "extra_forbidden":
        return f"Unknown parameter: '{param}'."
    if error.get("type") == "missing":
        return f"Missing required parameter: '{param}'."
    return f"Invalid value for '{param}': {error.get('msg', 'invalid')}."


def validation_error(errors: list[dict]) -> APIError:
    first = errors[0]
    code = {"extra_forbidden": "unknown_parameter", "missing": "missing_required_parameter"}.get(
        first.get("type"), "invalid_value"
    )
    return bad_request(_validation_message(first), param=_param_of(tuple(first["loc"])), code=code)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(APIError)
    async def _api_error(_request: Request, error: APIError) -> JSONResponse:
        return error_response(error)

    @app.exception_handler(RefusedBody)
    async def _refused_body(_request: Request, refused: RefusedBody) -> JSONResponse:
        return error_response(refused.error)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, error: RequestValidationError) -> JSONResponse:
        return error_response(validation_error(list(error.errors())))

    @app.exception_handler(StarletteHTTPException)
    async def _http(_request: Request, error: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(error.status_code)
        return error_response(APIError(error.status_code, str(error.detail), code=code))

    @app.exception_handler(OperationalError)
    @app.exception_handler(InterfaceError)
    async def _database_unavailable(request: Request, error: Exception) -> JSONResponse:
        # Postgres restarting or unreachable: a clear, retryable answer (the SDK retries 503s).
        log.warning("database unavailable on %s %s: %s", request.method, request.url.path, error)
        return error_response(
            APIError(
                503,
                "The database is unavailable. Try again shortly.",
                code="database_unavailable",
                type="server_error",
                headers={"Retry-After": "2"},
            )
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, error: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(
            APIError(500, "The server had an error processing the request.", type="server_error")
        )
