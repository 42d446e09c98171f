"""anomalib's own exporter as the yardstick (``python -m bench.run --only families``; part of ``make bench``).

Each anomalib model we export — PaDiM, PatchCore, STFPM, FastFlow, Reverse Distillation, EfficientAD — is fitted by
anomalib's ``Engine`` (one epoch on generated textures, resnet18; EfficientAD-S with its random teacher standing in
for the one it downloads), imported with its labelled set and exported to ONNX and
OpenVINO by this product (validated on the set's images and evaluated on it, as every export with a set is); each
export's record holds anomalib's own file of the same model beside it (``yardstick``: ``to_onnx`` / ``to_openvino``,
what ``Engine.export`` calls), both run on the same images (four of the set's, at 256 px) and compared with
anomalib's torch module: size, max |Δ| of the image score and of the anomaly map, latency at batch 1 (the mean of
10 runs), or why the file cannot run them.
"""

from __future__ import annotations

from pathlib import Path

MODELS = ("Padim", "Patchcore", "Stfpm", "Fastflow", "ReverseDistillation", "EfficientAd")


def bench_families(root: Path, models: tuple[str, ...] = MODELS) -> list[dict]:
    from exporter import ExportRequest, Workspace, export_checkpoint
    from exporter.dataset_attach import attach_dataset
    from exporter.importer import ImportRequest, import_checkpoint
    from testkit.families import fit_anomalib

    ws, rows = Workspace(root / "ws"), []
    for name in models:
        checkpoint, project = fit_anomalib(root / name, model=name), f"anomalib-{name.lower()}"
        experiment = import_checkpoint(ws, ImportRequest(project, create_project=True), checkpoint)
        attach_dataset(ws, project, checkpoint.parent / "val")  # validation on its images, not on noise
        for fmt in ("onnx", "openvino"):
            record = export_checkpoint(ws, ExportRequest(project, experiment["id"], format=fmt))
            assert record.status == "completed", record.error
            yardstick = record.yardstick  # anomalib's own file beside ours, on the record
            assert yardstick is not None and yardstick.status == "completed", yardstick
            rows += [{**row, "model": name, "format": fmt,
                      "our_verdict": record.validation.verdict if row["exporter"] != "anomalib" else ""}
                     for row in yardstick.rows]
    return rows


def families_markdown(rows: list[dict]) -> list[str]:
    lines = ["## anomalib's exporter beside ours (resnet18 / EfficientAD-S, 256 px)", "",
             "| model | format | exporter | our validation | size MB | max Δ score | max Δ map | ms, batch 1 |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if r.get("error"):
            figures = f"{r['size_mb']} | cannot run one image: {r['error']} | | |"
        else:
            figures = f"{r['size_mb']} | {r['max_diff_score']:.2e} | {r['max_diff_map']:.2e} | {r['ms_batch1']} |"
        lines.append(f"| {r.get('model', 'Padim')} | {r['format']} | {r['exporter']} | {r.get('our_verdict', '')} | "
                     f"{figures}")
    return lines
