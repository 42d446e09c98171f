"""``reproduce``: export again from a passport's checkpoint and options, and say whether the file reproduces —
byte-identical, or else the same graph (operator counts, and for ONNX every initializer's digest and the graph
itself once its metadata is set aside) with outputs on the golden inputs within the recorded tolerance — or not,
naming the first difference. Refused, before anything runs, when the checkpoint is gone or has changed."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from exporter import passport
from exporter.errors import UsageError

if TYPE_CHECKING:
    from exporter.workspace import Workspace


def reproduce(workspace: Workspace, path: Path) -> dict[str, Any]:
    """``{"reproduced", "verdict": byte-identical | equivalent | differs, "reason", "export_id", "differences"}``.

    Raises:
        UsageError: no passport under ``path``; the checkpoint is gone or changed since.
    """
    from exporter import ExportRequest, export_checkpoint
    from exporter.verify import opened

    with opened(Path(path)) as root:
        found = sorted(p.parent for p in root.rglob(passport.PASSPORT_FILE))
        if not found:
            raise UsageError(f"No {passport.PASSPORT_FILE} under {path}.")
        folder = found[0]
        content = json.loads((folder / passport.PASSPORT_FILE).read_text())
        source = content["source"]
        _check_checkpoint(workspace, source)
        record = export_checkpoint(workspace, ExportRequest(source["project_id"], source["experiment_id"],
                                                            source["checkpoint"], content["format"],
                                                            _request_options(content["options"])))
        if record.status != "completed":
            return _result(False, "differs", f"the export failed again: {record.error.message}", record.id)
        again = workspace.project(record.project_id).exports_dir / record.id
        return _compare(folder, again, content, record)


def _request_options(options: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in options.items() if v is not None}


def _check_checkpoint(workspace: Workspace, source: dict[str, Any]) -> None:
    from exporter.checkpoint import file_sha256
    from exporter.errors import NotFoundError

    try:
        experiment = workspace.project(source["project_id"]).experiment(source["experiment_id"])
        checkpoint = experiment.checkpoint(source["checkpoint"]).path
    except NotFoundError as exc:
        raise UsageError(f"Cannot reproduce: the checkpoint is gone ({exc.message})") from None
    if not Path(checkpoint).is_file():
        raise UsageError(f"Cannot reproduce: the checkpoint {checkpoint} is gone.")
    if (now := file_sha256(checkpoint)) != source["checkpoint_sha256"]:
        raise UsageError(f"Cannot reproduce: the checkpoint {checkpoint} has changed since (sha256 "
                         f"{source['checkpoint_sha256'][:12]}… then, {now[:12]}… now).")


def _result(reproduced: bool, verdict: str, reason: str, export_id: str,
            differences: list[str] | None = None) -> dict[str, Any]:
    return {"reproduced": reproduced, "verdict": verdict, "reason": reason, "export_id": export_id,
            "differences": differences or []}


def _compare(folder: Path, again: Path, content: dict[str, Any], record: Any) -> dict[str, Any]:
    then = {f["name"]: f["sha256"] for f in content["files"]}
    now = {f.name: f.sha256 for f in record.files}
    if then == now:
        return _result(True, "byte-identical", f"every file has the same sha256 ({len(now)} files)", record.id)
    differences = []
    if sorted(then) != sorted(now):
        differences.append(f"other files: {sorted(then)} then, {sorted(now)} now")
    else:
        differences += [f"{name}: sha256 {then[name][:12]}… then, {now[name][:12]}… now"
                        for name in then if then[name] != now[name]]
    structure = _structure(folder, again, content, record)
    outputs = _outputs(folder, again, content)
    if structure["differs"] or outputs["differs"]:
        first = (structure["differs"] or outputs["differs"])[0]
        return _result(False, "differs", first, record.id, differences + structure["differs"] + outputs["differs"])
    return _result(True, "equivalent", f"not byte-identical ({differences[0]}), but {structure['same']} and "
                                       f"{outputs['same']}", record.id, differences)


def _structure(folder: Path, again: Path, content: dict[str, Any], record: Any) -> dict[str, Any]:
    """Operator counts from the records; for ONNX, the initializers' digests and the graph without metadata."""
    signed_model = json.loads((folder / "passport.json").read_text())["model"]
    differs = []
    primary = content["files"][0]["name"]
    from exporter.formats import GRAPH_DIAGNOSIS, get_format

    if get_format(content["format"], require_available=False).diagnosis == GRAPH_DIAGNOSIS:  # an ONNX graph
        then, now = _onnx_digests(folder / primary), _onnx_digests(again / primary)
        for key in ("graph", *sorted(set(then["initializers"]) | set(now["initializers"]))):
            a = then["graph"] if key == "graph" else then["initializers"].get(key)
            b = now["graph"] if key == "graph" else now["initializers"].get(key)
            if a != b:
                differs.append("the graph differs (nodes or attributes)" if key == "graph" else
                               f"initializer {key} differs")
        changed = [k for k in sorted(set(then["metadata"]) | set(now["metadata"]))
                   if then["metadata"].get(k) != now["metadata"].get(k)]
        same = (f"the same ONNX graph: {len(now['initializers'])} initializers with the same digests, the graph "
                f"identical once its metadata is set aside (it differs in {', '.join(changed) or 'nothing'})")
    else:
        ops = record.model.op_types
        same = f"the same operator counts ({sum(ops.values())} ops)" if ops else "the same graph interface"
        if ops and signed_model.get("op_types") and signed_model["op_types"] != ops:
            differs.append("operator counts differ")
    return {"differs": differs, "same": same}


def _onnx_digests(path: Path) -> dict[str, Any]:
    import onnx

    model = onnx.load(str(path))
    initializers = {t.name: hashlib.sha256(t.SerializeToString()).hexdigest() for t in model.graph.initializer}
    metadata = {p.key: p.value for p in model.metadata_props}
    del model.metadata_props[:]
    del model.graph.initializer[:]
    return {"initializers": initializers, "metadata": metadata,
            "graph": hashlib.sha256(model.SerializeToString()).hexdigest()}


def _outputs(folder: Path, again: Path, content: dict[str, Any]) -> dict[str, Any]:
    """The new file on the golden inputs against the golden outputs."""
    import numpy as np

    from exporter.formats import get_format

    x, golden = passport.read_golden(folder)
    fmt = get_format(content["format"], require_available=False)
    if golden is None or fmt.runs_here():
        return {"differs": [], "same": "outputs not compared (the file does not run here)"}
    runner = fmt.load(again / content["files"][0]["name"], content["model"])
    try:
        outputs = runner.run({content["model"]["inputs"][0]["name"]: x})
    finally:
        runner.close()
    tolerance = float(content["golden"]["tolerance"] or fmt.tolerance)
    worst = 0.0
    for name, got, want in zip(content["golden"]["outputs"], outputs, golden, strict=True):
        diff = float((np.abs(np.asarray(got, np.float64) - want) / np.maximum(1.0, np.abs(want))).max(initial=0))
        if diff > tolerance:
            return {"differs": [f"output {name} differs by {diff:.3g} on the golden inputs (tolerance "
                                f"{tolerance:g})"], "same": ""}
        worst = max(worst, diff)
    return {"differs": [], "same": f"outputs on the golden inputs within {tolerance:g} (worst {worst:.2g})"}
