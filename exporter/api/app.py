"""The FastAPI application mounted at ``/api``: routers, token check, body cap, error shape."""

from __future__ import annotations

from fastapi import Depends, FastAPI, Request
from starlette.routing import BaseRoute, Mount

from exporter.api import exports, formats, passports, projects, uploads
from exporter.api.app_state import workspace
from exporter.api.auth import require_token
from exporter.api.errors import error_response, install_error_handlers
from exporter.errors import ExportError
from exporter.version import __version__

MAX_BODY_BYTES = 1 << 20


async def cap_body(request: Request, call_next):
    """Refuse a declared body over the limit before reading it (uploads may be checkpoint-sized)."""
    from exporter.checkpoint import max_checkpoint_bytes

    upload = request.method == "POST" and request.url.path.endswith(("/experiments", "/uploads"))
    limit = max_checkpoint_bytes() + MAX_BODY_BYTES if upload else MAX_BODY_BYTES
    length = request.headers.get("content-length")
    if length and (not length.isdigit() or int(length) > limit):
        return error_response(413, "PayloadTooLarge", f"Request body over {limit} bytes.")
    return await call_next(request)


def create_api() -> FastAPI:
    """The FastAPI application mounted at ``/api``."""
    api = FastAPI(title="AI Studio Export API", version=__version__, docs_url="/docs",
                  openapi_url="/openapi.json", redoc_url=None, dependencies=[Depends(require_token)])
    install_error_handlers(api)
    api.middleware("http")(cap_body)
    for module in (formats, projects, uploads, exports, passports):
        api.include_router(module.router)
    return api


def api_routes() -> list[BaseRoute]:
    """Routes for ``st.App``: the API mounted at ``/api`` (recovering interrupted exports first)."""
    from exporter.jobs import recover_interrupted

    try:
        recover_interrupted(workspace())
    except ExportError:
        pass
    return [Mount("/api", app=create_api())]
