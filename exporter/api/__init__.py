"""HTTP API under ``/api``, served by the dashboard's own process (docs/contracts.md: HTTP API).

One module per resource (``formats``, ``projects``, ``uploads``, ``exports``), each a FastAPI
router of plain functions; ``app`` assembles them with authentication and error handling.
Every error answers ``{"error": {"type", "message"}}`` with a 4xx status (a 500 never carries
a traceback).
"""

from exporter.api.app import api_routes, create_api
from exporter.api.auth import TICKET_TTL_S, page_ticket

__all__ = ["TICKET_TTL_S", "api_routes", "create_api", "page_ticket"]
