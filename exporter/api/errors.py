"""Every API error as ``{"error": {"type", "message"}}`` with a 4xx status (5xx without a traceback)."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from exporter.errors import ExportError, one_line


class ApiError(Exception):
    """An HTTP-level refusal that is not an ``ExportError`` (auth, a record not ready)."""

    def __init__(self, status: int, kind: str, message: str) -> None:
        super().__init__(message)
        self.status, self.kind, self.message = status, kind, message


def error_response(status: int, kind: str, message: str) -> JSONResponse:
    """The API's one error shape."""
    return JSONResponse({"error": {"type": kind, "message": message}}, status_code=status)


async def _export_error(_: Request, exc: ExportError) -> JSONResponse:
    return error_response(exc.http_status, type(exc).__name__, exc.message)


async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
    return error_response(exc.status, exc.kind, exc.message)


async def _bad_body(_: Request, exc: RequestValidationError) -> JSONResponse:
    problems = "; ".join(f"{'.'.join(map(str, e.get('loc', ())[1:])) or 'body'}: {e.get('msg')}"
                         for e in exc.errors()[:5])
    return error_response(422, "InvalidRequest", problems or "The request body is not valid JSON.")


async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
    return error_response(exc.status_code, "HTTPError", str(exc.detail))


async def _internal(_: Request, exc: Exception) -> JSONResponse:
    return error_response(500, "InternalError", one_line(exc, 200))


def install_error_handlers(api: FastAPI) -> None:
    """Map every exception to the API's error shape."""
    for kind, handler in ((ExportError, _export_error), (ApiError, _api_error), (RequestValidationError, _bad_body),
                          (StarletteHTTPException, _http_error), (Exception, _internal)):
        api.add_exception_handler(kind, handler)
