"""``/api/exports`` and ``/api/export``: start, read, download and delete exports."""

from __future__ import annotations

import io
import shutil
import tempfile
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.responses import FileResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.background import BackgroundTask

from exporter import queries
from exporter.api.app_state import workspace
from exporter.api.errors import ApiError
from exporter.errors import NotFoundError
from exporter.formats import DEFAULT_FORMAT
from exporter.jobs import (
    cancel_benchmark,
    delete_export,
    recover_interrupted,
    refresh,
    start_benchmark,
    start_diagnosis,
    start_evaluation,
    start_export,
    start_export_all,
)
from exporter.record import ExportRecord, ExportSummary
from exporter.service import ExportRequest
from exporter.store import find_export

CHUNK = 1 << 20
# Streamlit's gzip middleware would re-encode model files (dropping Content-Length and Range,
# burning CPU on GBs); it leaves responses that already declare an encoding alone.
NO_GZIP = {"Content-Encoding": "identity"}
router = APIRouter()


class BenchmarkBody(BaseModel):
    """Body of ``POST /api/export/{id}/benchmark`` (all optional: batch 1 and 8, physical cores, 2 s)."""

    model_config = ConfigDict(extra="forbid")
    batch_sizes: list[Annotated[int, Field(ge=1, le=256)]] | None = Field(None, min_length=1, max_length=8)
    threads: int | None = Field(None, ge=1, le=1024)
    seconds: float | None = Field(None, gt=0, le=120)


class ExportBody(BaseModel):
    """Body of ``POST /api/export``."""

    model_config = ConfigDict(extra="forbid")
    project_id: str = Field(max_length=128)
    experiment_id: str = Field(max_length=128)
    checkpoint: str = Field("best", max_length=16)
    format: str = Field(DEFAULT_FORMAT, max_length=32)
    options: dict[str, Any] = Field(default_factory=dict)
    benchmark: BenchmarkBody | None = None  # settings of a benchmark to run once the export completes


@router.get("/exports", summary="Export summaries, newest first")
def list_exports(project_id: str | None = Query(None, max_length=128)) -> list[ExportSummary]:
    recover_interrupted(workspace())  # a worker that died shows as Interrupted, not running
    return queries.exports(workspace(), project_id)


@router.post("/export", status_code=202, summary="Start an export in the background")
def start(body: ExportBody) -> ExportRecord:
    return start_export(workspace(), ExportRequest(**body.model_dump()))


@router.get("/export/{export_id}", summary="An export's record")
def read(export_id: str) -> ExportRecord:
    return refresh(workspace(), export_id)


class EvaluateBody(BaseModel):
    """Body of ``POST /api/export/{id}/evaluate`` (both optional: the export's own options otherwise)."""

    model_config = ConfigDict(extra="forbid")
    max_images: int | None = Field(None, ge=1)
    max_metric_drop: float | None = Field(None, ge=-1e6, le=1e6)


@router.post("/export/{export_id}/evaluate", status_code=202,
             summary="Evaluate an export on its project's labelled set in the background")
def evaluate(export_id: str, body: EvaluateBody | None = None) -> ExportRecord:
    return start_evaluation(workspace(), export_id, body.model_dump() if body else {})


@router.post("/export/{export_id}/diagnose", status_code=202,
             summary="Find where an export diverges from its reference, layer by layer, in the background")
def diagnose(export_id: str) -> ExportRecord:
    return start_diagnosis(workspace(), export_id)


@router.post("/export/{export_id}/benchmark", status_code=202,
             summary="Benchmark an export (its runtime and PyTorch eager) in the background")
def benchmark(export_id: str, body: BenchmarkBody | None = None) -> ExportRecord:
    return start_benchmark(workspace(), export_id, body.model_dump() if body else {})


@router.delete("/export/{export_id}/benchmark", summary="Cancel an export's queued or running benchmark")
def cancel_benchmark_route(export_id: str) -> ExportRecord:
    return cancel_benchmark(workspace(), export_id)


class ExportAllBody(BaseModel):
    """Body of ``POST /api/export-all``: ``benchmark`` settings as for /benchmark, or null for none; ``formats``
    the formats to make (null: every format)."""

    model_config = ConfigDict(extra="forbid")
    project_id: str = Field(max_length=128)
    experiment_id: str = Field(max_length=128)
    checkpoint: str = Field("best", max_length=16)
    benchmark: BenchmarkBody | None = Field(default_factory=BenchmarkBody)
    formats: list[str] | None = Field(None, max_length=32)


@router.post("/export-all", status_code=202,
             summary="Start one export per format × precision the task can take (validated, evaluated, benchmarked)")
def export_all(body: ExportAllBody) -> dict[str, Any]:
    started = start_export_all(workspace(), body.project_id, body.experiment_id, body.checkpoint,
                               body.benchmark.model_dump() if body.benchmark else None, body.formats)
    return {"started": [r.to_json() for r in started["started"]], "skipped": started["skipped"]}


@router.get("/export/{export_id}/download", summary="The exported file, streamed (with passport=true: a zip of the "
            "file(s), passport.json, model.sig and the golden samples, as `verify` takes it)")
def download(export_id: str, passport: bool = Query(False)):
    return passport_response(export_id) if passport else download_response(export_id)


TARGET_QUERY = Query("all", max_length=64, description="triton, ovms, kserve, server or all (refused targets left out)")


@router.post("/export/{export_id}/deploy", summary="A deploy bundle, streamed as a zip: Triton, OpenVINO Model Server, "
             "KServe, a server of its own")
def deploy(export_id: str, target: str = TARGET_QUERY):
    return deploy_response(export_id, target)


@router.get("/export/{export_id}/deploy/download", summary="The deploy bundle as a link can fetch it (same zip)")
def deploy_download(export_id: str, target: str = TARGET_QUERY):
    return deploy_response(export_id, target)


class LoadTestBody(BaseModel):
    """Body of ``POST /api/export/{id}/serve/load-test``."""

    model_config = ConfigDict(extra="forbid")
    seconds: float = Field(3.0, gt=0, le=30, description="seconds per concurrency level (1, 4, 16)")


@router.post("/export/{export_id}/serve", summary="Start the export's bundle server on this machine (loopback)")
def serve(export_id: str) -> dict[str, Any]:
    from exporter.deploy import live

    server = live.serve_export(workspace(), export_id)
    return {"export_id": export_id, "model_name": server.model_name, "url": server.url,
            "infer": f"{server.url}/v2/models/{server.model_name}/infer", "predict": f"{server.url}/predict"}


@router.delete("/export/{export_id}/serve", summary="Stop the export's live server")
def stop_serving(export_id: str) -> dict[str, Any]:
    from exporter.deploy import live

    return {"export_id": export_id, "stopped": live.stop_serving(export_id)}


@router.post("/export/{export_id}/serve/load-test", summary="Load-test the live server at concurrency 1, 4 and 16; "
             "the figures are stored in the record (serving)")
def load_test(export_id: str, body: LoadTestBody | None = None) -> ExportRecord:
    from exporter.deploy import live

    return live.measure(workspace(), export_id, (body or LoadTestBody()).seconds)


def deploy_response(export_id: str, target: str):
    """The bundle written to a scratch folder, streamed as a zip, the folder removed once sent."""
    from exporter.deploy import parse_targets, write_bundle

    targets = parse_targets(target)
    scratch = Path(tempfile.mkdtemp(prefix="aistudio-deploy-"))
    try:
        result = write_bundle(workspace(), export_id, targets, scratch / "bundle", strict="all" not in target)
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise
    folder = scratch / "bundle"
    name = f"{result['model_name']}-deploy"
    paths = sorted(p for p in folder.rglob("*") if p.is_file())
    return StreamingResponse(iter_zip(paths, folder, f"{name}/"), media_type="application/zip",
                             background=BackgroundTask(shutil.rmtree, scratch, ignore_errors=True),
                             headers={"Content-Disposition": f'attachment; filename="{name}.zip"', **NO_GZIP})


@router.delete("/export/{export_id}", summary="Delete an export (cancels it first if running)")
def delete(export_id: str) -> dict[str, Any]:
    delete_export(workspace(), export_id)
    return {"deleted": export_id}


def export_files(export_id: str) -> tuple[ExportRecord, list[Path]]:
    """A completed export's record and its files, each checked to lie inside its folder.

    Raises:
        NotFoundError: unknown id or a file that is missing or escapes the folder.
        ApiError: the export is not completed (409).
    """
    store, record = find_export(workspace(), export_id)
    if record.status != "completed":
        raise ApiError(409, "NotReady", f"Export {export_id} is {record.status}; only completed exports download.")
    folder = store.export_dir(export_id).resolve()
    paths = []
    for entry in record.files:
        path = folder / entry.name
        if path.is_symlink() or path.resolve().parent != folder or not path.is_file():
            raise NotFoundError(f"File {entry.name!r} of {export_id} is not available.")
        paths.append(path)
    if not paths:
        raise NotFoundError(f"Export {export_id} has no files.")
    return record, paths


def passport_response(export_id: str):
    """The export's signed set as one streamed zip: its files, ``passport.json``, ``model.sig``, ``golden/``."""
    from exporter import passport

    record, paths = export_files(export_id)
    folder = paths[0].parent
    if not (folder / passport.SIGNATURE_FILE).is_file():
        raise ApiError(409, "NotSigned", f"Export {export_id} has no signature yet (it is sealed once completed).")
    signed = [*paths, folder / passport.PASSPORT_FILE, folder / passport.SIGNATURE_FILE,
              *sorted(p for p in (folder / passport.GOLDEN_DIR).glob("*") if p.is_file() and not p.is_symlink())]
    name = f"{export_id}-{record.format}-signed"
    return StreamingResponse(iter_zip(signed, folder, f"{name}/"), media_type="application/zip",
                             headers={"Content-Disposition": f'attachment; filename="{name}.zip"', **NO_GZIP})


def download_response(export_id: str):
    """A streamed file (with Range and ETag) or, for several files, a streamed zip."""
    record, paths = export_files(export_id)
    if len(paths) == 1:
        response = FileResponse(paths[0], filename=paths[0].name, media_type="application/octet-stream",
                                headers=NO_GZIP)
        response.headers["etag"] = f'"{record.files[0].sha256}"'
        return response
    name = f"{export_id}-{record.format}.zip"
    return StreamingResponse(iter_zip(paths), media_type="application/zip",
                             headers={"Content-Disposition": f'attachment; filename="{name}"', **NO_GZIP})


class _Sink(io.RawIOBase):
    """A write-only, unseekable stream whose written bytes are drained by a generator."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        self.chunks.append(bytes(data))
        return len(data)

    def drain(self) -> Iterator[bytes]:
        chunks, self.chunks = self.chunks, []
        yield from chunks


def iter_zip(paths: list[Path], root: Path | None = None, prefix: str = "") -> Iterator[bytes]:
    """Stream a stored (uncompressed) zip of ``paths`` with bounded memory: each named by its path under ``root``
    (its name alone without one), after ``prefix``, with its permission bits (an executable stays executable)."""
    sink = _Sink()
    with zipfile.ZipFile(sink, "w", compression=zipfile.ZIP_STORED) as archive:
        for path in paths:
            entry = zipfile.ZipInfo(prefix + (path.relative_to(root).as_posix() if root else path.name),
                                    time.localtime(path.stat().st_mtime)[:6])
            entry.external_attr = (path.stat().st_mode & 0o777 | 0o100000) << 16
            with archive.open(entry, "w", force_zip64=True) as dest, open(path, "rb") as src:
                while block := src.read(CHUNK):
                    dest.write(block)
                    yield from sink.drain()
    yield from sink.drain()
