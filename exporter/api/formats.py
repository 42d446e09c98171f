"""``GET /api/formats``: the format registry, with a task's options and refusals."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

router = APIRouter()


@router.get("/formats", summary="Export formats, their availability and options (plus a task's options)")
def list_formats(task: str | None = None) -> list[dict[str, Any]]:
    from exporter.formats import get_available_formats
    from exporter.tasks import task_option_specs

    extra = [spec.describe() for spec in task_option_specs(task)]
    return [{**row, "options": row["options"] + extra} for row in get_available_formats(task)]
