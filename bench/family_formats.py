"""Every model family × every format (``python -m bench.run --only family-formats``; part of ``make bench``).

The small transformers, smp and anomalib models the tests import (``testkit.families``: a ViT, a DETR and a
Conditional DETR, a SegFormer, a Mask2Former — as semantic and as instance segmentation — an smp Unet, a PaDiM
fitted by anomalib's ``Engine``), each imported as a user would and exported at fp32 to every format of this
machine: the verdict, the batch sizes validated and the max difference from PyTorch, or the reason a format
refused it before anything ran.
"""

from __future__ import annotations

from pathlib import Path

# (label, folder under the saved models, import task, export options): detections kept above 0.2 so random weights
# still find some, as the tests do
MODELS = (("transformers ViT", "vit", None, {}), ("transformers DETR", "detr", None, {"score_threshold": 0.2}),
          ("transformers Conditional DETR", "cond-detr", None, {"score_threshold": 0.2}),
          ("transformers SegFormer", "segformer", None, {}), ("transformers Mask2Former", "mask2former", None, {}),
          ("transformers Mask2Former", "mask2former", "instance_segmentation", {"score_threshold": 0.02}),
          ("smp Unet", "unet", None, {}), ("anomalib PaDiM", None, None, {}))


def bench_family_formats(root: Path) -> list[dict]:
    from exporter import ExportRequest, Workspace
    from exporter.dataset_attach import attach_dataset
    from exporter.formats import get_available_formats
    from exporter.importer import ImportRequest, import_checkpoint
    from testkit.families import SIZE, fit_anomalib, save_family_models

    saved, ws, rows = save_family_models(root / "models"), Workspace(root / "ws"), []
    for i, (label, folder, task, options) in enumerate(MODELS):
        source = saved / folder if folder else fit_anomalib(root / "padim")
        project = f"family-{i}"
        experiment = import_checkpoint(ws, ImportRequest(project, task=task, create_project=True,
                                                         input_size=(3, SIZE, SIZE) if folder == "unet" else None),
                                       source)
        if not folder:  # PaDiM validated on its set's images (on noise its normalised score saturates)
            attach_dataset(ws, project, source.parent / "val")
        task = ws.project(project).task
        for fmt in get_available_formats():  # what this model needs decides, at export (capabilities, not tasks)
            row = {"model": label, "task": task, "format": fmt["name"]}
            if not fmt["available"]:  # not installed here
                rows.append({**row, "verdict": "refused", "reason": fmt["reason"]})
                continue
            rows.append({**row, **_exported(ws, ExportRequest(project, experiment["id"], format=fmt["name"],
                                                               options=options), experiment["model"])})
    return rows


def _exported(ws, request, model: dict) -> dict:
    """One export's verdict, max difference and batches — or why it was refused before anything ran (an operator
    the format lacks). A format that carries the model only with a fixed batch is asked for one."""
    import dataclasses

    from exporter import export_checkpoint
    from exporter.errors import UsageError
    from exporter.families import needs
    from exporter.formats import get_format

    if why := get_format(request.format).fixed_batch_only(model["task"], needs(model["task"], model)):
        request = dataclasses.replace(request, options={**request.options, "dynamic_batch": False})
    try:
        record = export_checkpoint(ws, request)
    except UsageError as exc:
        return {"verdict": "refused", "reason": str(exc)}
    v = record.validation
    reason = record.error.message if record.error else (None if v.verdict == "passed" else "; ".join(v.messages))
    fixed = f"refused with a dynamic batch ({why}): exported with dynamic_batch off" if why else None
    return {"verdict": v.verdict if v else record.status, "max_diff": v.max_diff if v else None,
            "batch_sizes": v.batch_sizes if v else [], "reason": "; ".join(filter(None, (fixed, reason))) or None}


def family_formats_markdown(rows: list[dict]) -> list[str]:
    formats = list(dict.fromkeys(r["format"] for r in rows))
    lines = ["## Every model family × every format (fp32; verdict, max |Δ| from PyTorch, batches validated)", "",
             f"| model | task | {' | '.join(formats)} |", "|---|---|" + "---|" * len(formats)]
    cells: dict[tuple[str, str], dict[str, str]] = {}
    for r in rows:
        if r["verdict"] == "refused":
            text = "refused"
        elif r.get("max_diff") is not None and r["verdict"] in ("passed", "failed", "inconclusive"):
            text = f"{r['verdict']} {r['max_diff']:.1e} (b{','.join(map(str, r['batch_sizes']))})"
        else:
            text = r["verdict"]
        cells.setdefault((r["model"], r["task"]), {})[r["format"]] = text
    for (model, task), by_format in cells.items():
        lines.append(f"| {model} | {task} | {' | '.join(by_format.get(f, '') for f in formats)} |")
    reasons = [f"- {r['model']} ({r['task']}) × {r['format']}: {' '.join(str(r['reason']).split())[:240]}"
               for r in rows if r.get("reason")]
    return [*lines, "", "Why, where a format refused or a file did not pass:", "", *reasons]
