"""Deploy bundles: one completed export made ready for a serving engine, per target the format allows.

    triton  — a Triton Inference Server model repository (``config.pbtxt`` written from the record)
    ovms    — an OpenVINO Model Server repository and ``config.json`` (ONNX, OpenVINO IR)
    kserve  — ``InferenceService`` manifests for the server's container and the Triton repository
    server  — a runtime-only server of ours (Open Inference Protocol + ``/predict``; Ray Serve for batching)

A target the format cannot take is refused with the reason before anything is written; the bundle is written into a
scratch folder beside ``out`` and renamed into place whole, so a failure never leaves half a bundle.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from exporter.deploy import kserve, ovms, server_target, triton
from exporter.deploy.bundle import Bundle, load
from exporter.errors import UsageError

if TYPE_CHECKING:
    from exporter.formats.registry import ExportFormat
    from exporter.workspace import Workspace

TARGETS = ("triton", "ovms", "kserve", "server")


def parse_targets(text: str) -> list[str]:
    """``"all"`` or a comma-separated list of ``TARGETS``.

    Raises:
        UsageError: an unknown target.
    """
    names = [t.strip() for t in text.split(",") if t.strip()]
    if "all" in names:
        return list(TARGETS)
    unknown = [t for t in names if t not in TARGETS]
    if unknown or not names:
        raise UsageError(f"Unknown deploy target {', '.join(unknown) or text!r}; choose from {', '.join(TARGETS)} "
                         "or all.")
    return list(dict.fromkeys(names))


def refusal(fmt: ExportFormat, target: str) -> str:
    """Why ``target`` cannot serve files of format ``fmt`` ("" when it can)."""
    if target == "triton":
        return "" if fmt.triton else f"{fmt.no_triton}."
    if target == "ovms":
        return "" if fmt.ovms else f"{fmt.no_ovms}."
    if fmt.no_server:
        return f"{fmt.no_server}."
    if target == "server" and (why := fmt.runs_here()):
        return f"{fmt.display_name} files cannot run on this machine ({why}), so its server cannot be proven here."
    return ""


def write_bundle(workspace: Workspace, export_id: str, targets: list[str], out: Path,
                 *, strict: bool = True) -> dict[str, Any]:
    """Write the export's bundle for ``targets`` into ``out`` (a new folder): ``out/<target>/`` each.

    ``strict``: a refused target is an error (a target asked for by name); otherwise it is listed as refused.

    Raises:
        UsageError: ``out`` exists and is not empty, or (strict) a target is refused; NotFoundError: no such export.
    """
    bundle = load(workspace, export_id)
    refused = {t: why for t in targets if (why := refusal(bundle.fmt, t))}
    if strict and refused:
        raise UsageError(" ".join(f"{t}: {why}" for t, why in refused.items()))
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UsageError(f"{out} already exists and is not empty; choose another --out.")
    out.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        written = {t: _write(bundle, t, scratch / t, "triton" not in refused) for t in targets if t not in refused}
        if out.exists():
            out.rmdir()
        os.replace(scratch, out)
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise
    return {"export_id": export_id, "model_name": bundle.name, "out": str(out),
            "targets": {t: ({"path": str(out / t), "files": written[t]} if t in written else {"refused": refused[t]})
                        for t in targets}}


def _write(bundle: Bundle, target: str, folder: Path, triton_allowed: bool) -> list[str]:
    if target == "triton":
        triton.write(bundle, folder)
    elif target == "ovms":
        ovms.write(bundle, folder)
    elif target == "kserve":
        kserve.write(bundle, folder, with_triton=triton_allowed)
    else:
        server_target.write(bundle, folder)
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
