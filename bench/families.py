"""anomalib's own exporter as the yardstick (``python -m bench.run --only families``; part of ``make bench``).

A PaDiM fitted by anomalib's ``Engine`` (generated textures) is imported and exported to ONNX and OpenVINO by this
product, and exported by anomalib itself (``to_onnx`` / ``to_openvino``, what ``Engine.export`` calls); each file
runs the same images and is compared with anomalib's torch module: size, max |Δ| of the image score and of the
anomaly map, latency at batch 1 (the mean of 10 runs).
"""

from __future__ import annotations

from pathlib import Path


def bench_families(root: Path) -> list[dict]:
    from exporter import ExportRequest, Workspace, export_checkpoint
    from exporter.importer import ImportRequest, import_checkpoint
    from testkit.families import anomalib_side_by_side, fit_anomalib

    checkpoint = fit_anomalib(root / "anomalib")
    ws = Workspace(root / "ws")
    experiment = import_checkpoint(ws, ImportRequest("anomalib", create_project=True), checkpoint)
    ours = {}
    for fmt in ("onnx", "openvino"):
        record = export_checkpoint(ws, ExportRequest("anomalib", experiment["id"], format=fmt))
        assert record.status == "completed", record.error
        ours[fmt] = ws.project("anomalib").exports_dir / record.id / record.files[0].name
    return anomalib_side_by_side(checkpoint, ours, root)


def families_markdown(rows: list[dict]) -> list[str]:
    lines = ["## anomalib's exporter beside ours (PaDiM, resnet18, 256 px)", "",
             "| format | exporter | size MB | max Δ score | max Δ map | ms, batch 1 |", "|---|---|---|---|---|---|"]
    lines += [f"| {r['format']} | {r['exporter']} | {r['size_mb']} | {r['max_diff_score']:.2e} | "
              f"{r['max_diff_map']:.2e} | {r['ms_batch1']} |" for r in rows]
    return lines
