"""``AISTUDIO_API_TOKEN``: when set, every route requires ``Authorization: Bearer <token>`` — except
the two routes the dashboard's own browser widgets call, which also take the page's ticket
(:func:`page_ticket`): ``POST /api/uploads`` as the ``X-Upload-Ticket`` header,
``GET /api/export/{id}/download`` as ``?ticket=`` (a link cannot send headers)."""

from __future__ import annotations

import hmac
import os
import secrets
import time

from fastapi import Request

from exporter.api.errors import ApiError

TOKEN_ENV = "AISTUDIO_API_TOKEN"
TICKET_TTL_S = 12 * 3600
_TICKETS: dict[str, float] = {}  # page ticket → expiry (this process only: the dashboard serves the API)


def page_ticket() -> str | None:
    """A ticket that lets the dashboard's browser widgets stream a file to ``POST /api/uploads`` and
    download from ``GET /api/export/{id}/download`` when the API requires a token (the token itself
    never reaches the page); ``None`` when none is set."""
    if not os.environ.get(TOKEN_ENV):
        return None
    now = time.time()
    for stale in [t for t, expiry in _TICKETS.items() if expiry < now]:
        _TICKETS.pop(stale, None)
    ticket = secrets.token_urlsafe(24)
    _TICKETS[ticket] = now + TICKET_TTL_S
    return ticket


def require_token(request: Request) -> None:
    """The API's dependency: the bearer token, or a live page ticket on the routes that take one."""
    token = os.environ.get(TOKEN_ENV)
    if not token:
        return
    if _TICKETS.get(_page_ticket_of(request), 0) > time.time():
        return
    given = request.headers.get("authorization", "")
    if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
        raise ApiError(401, "Unauthorized", f"Send 'Authorization: Bearer <token>' (set by {TOKEN_ENV}).")


def _page_ticket_of(request: Request) -> str:
    """The ticket a page widget sent, on the only routes that take one ("" elsewhere)."""
    path = request.url.path
    if request.method == "POST" and path.endswith("/uploads"):
        return request.headers.get("x-upload-ticket", "")
    if request.method == "GET" and path.endswith("/download"):
        return request.query_params.get("ticket", "")
    return ""
