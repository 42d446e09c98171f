"""What every deploy target is written from: one completed export's files and facts, and its golden samples.

Golden samples are the validation's own inputs (the project's sample images first, then seeded random images,
normalised as the model expects) and the file's outputs for them in its own runtime here; ``sample.png`` is an
image for ``/predict`` and ``predict.json`` the answer the bundle's server code gives for it here.
"""

from __future__ import annotations

import importlib.util
import io
import json
import re
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from exporter.errors import NotFoundError, UsageError

if TYPE_CHECKING:
    from exporter.formats.registry import ExportFormat
    from exporter.record import ExportRecord
    from exporter.workspace import Workspace

SERVER_FILES = Path(__file__).resolve().parent / "server_files"
DEFAULT_MAX_BATCH = 8  # Triton's max_batch_size and the server's largest batch when the file's batch is dynamic
GOLDEN_IMAGES = 2


@dataclass
class Bundle:
    """One export as the deploy targets need it."""

    record: ExportRecord
    fmt: ExportFormat
    files: list[Path]
    samples: list[Path]  # the project's sample images (the first is /predict's golden sample)

    @property
    def primary(self) -> Path:
        return self.files[0]

    @property
    def model(self) -> dict[str, Any]:
        return self.record.model.model_dump()

    @property
    def task(self) -> str:
        return str(self.record.model.task)

    @property
    def class_names(self) -> list[str]:
        return list(self.record.model.class_names)

    @property
    def inputs(self) -> list[dict[str, Any]]:
        return self.model["inputs"]

    @cached_property
    def outputs(self) -> list[dict[str, Any]]:
        """The file's outputs; shapes an older record left out are read from the golden outputs."""
        outputs = self.model["outputs"]
        if all(o["shape"] for o in outputs) or self.fmt.runs_here():
            return outputs
        return [{**spec, "shape": spec["shape"] or ["batch" if self.max_batch else value.shape[0], *value.shape[1:]],
                 "dtype": str(value.dtype)} for spec, value in zip(outputs, self.golden_outputs, strict=True)]

    @property
    def name(self) -> str:
        """The served model's name: the experiment and format, as Triton, OVMS and KServe (DNS-1035) accept it."""
        name = re.sub(r"[^a-z0-9]+", "-", f"{self.record.experiment_id}-{self.record.format}".lower()).strip("-")
        return (name if name[:1].isalpha() else f"m-{name}")[:52].rstrip("-")

    @property
    def max_batch(self) -> int:
        """The largest batch served at once: 0 when the file's batch is fixed (Triton's convention)."""
        if not self.record.options.get("dynamic_batch"):
            return 0
        return max([DEFAULT_MAX_BATCH, *self.preferred_batches])

    @property
    def preferred_batches(self) -> list[int]:
        """The batch sizes the export's benchmark timed (Triton's preferred batch sizes), if it has one."""
        benchmark = self.record.benchmark
        return sorted(set(benchmark.batch_sizes)) if benchmark else []

    @property
    def tolerance(self) -> float:
        validation = self.record.validation
        return float(validation.tolerance) if validation else self.fmt.default_tolerance(self.record.options)

    @cached_property
    def _golden(self) -> tuple[np.ndarray, list[np.ndarray] | None]:
        """The export's own golden samples (``passport.write_golden``: the validated runner's answers), or — for an
        export sealed before passports existed — the validation's inputs run through the file here."""
        from exporter import passport
        from exporter.validation import input_pool

        if (self.primary.parent / passport.GOLDEN_DIR / passport.GOLDEN_OUTPUTS).is_file():
            return passport.read_golden(self.primary.parent)
        model = self.record.model
        shape = model.input_shape or [1, *(model.input_size or [3, 224, 224])]
        pool, _ = input_pool(self.samples, tuple(shape[1:]), model.normalization or {}, extra_random=GOLDEN_IMAGES)
        x = passport.golden_inputs(pool, None if self.max_batch else int(shape[0]))
        runner = self.fmt.load(self.primary, self.model)
        try:
            return x, [np.asarray(o) for o in runner.run({self.inputs[0]["name"]: x})]
        finally:
            runner.close()

    @property
    def golden_inputs(self) -> np.ndarray:
        """The golden inputs: ``GOLDEN_IMAGES`` validation inputs, or the file's fixed batch."""
        return self._golden[0]

    @property
    def golden_outputs(self) -> list[np.ndarray]:
        """The file's outputs for ``golden_inputs`` in its runtime."""
        return self._golden[1]

    @cached_property
    def sample_image(self) -> bytes:
        """A PNG for ``/predict``: the project's first sample image, else the first golden input as an image."""
        from PIL import Image

        if self.samples:
            with Image.open(self.samples[0]) as image:
                picture = image.convert("RGB")
        else:
            norm = self.record.model.normalization or {"mean": [0.0], "std": [1.0]}
            x = self.golden_inputs[0] * np.reshape(norm["std"], (-1, 1, 1)) + np.reshape(norm["mean"], (-1, 1, 1))
            picture = Image.fromarray((np.clip(x, 0, 1) * 255).astype(np.uint8).transpose(1, 2, 0).squeeze())
        buffer = io.BytesIO()
        picture.save(buffer, format="PNG")
        return buffer.getvalue()

    def copy_passport(self, folder: Path) -> None:
        """The export's passport, signature and golden samples beside its files (when it has been sealed)."""
        import shutil

        from exporter import passport

        source = self.primary.parent
        if not (source / passport.SIGNATURE_FILE).is_file():
            return
        for name in (passport.PASSPORT_FILE, passport.SIGNATURE_FILE):
            shutil.copy2(source / name, folder / name)
        if (source / passport.GOLDEN_DIR).is_dir():
            shutil.copytree(source / passport.GOLDEN_DIR, folder / passport.GOLDEN_DIR)

    def server_meta(self) -> dict[str, Any]:
        """``model.json`` of the bundle's server: what it serves and how it preprocesses and decodes."""
        model = self.record.model
        channels = (model.input_size or [3])[0]
        return {"name": self.name, "export_id": self.record.id, "format": self.fmt.display_name,
                "platform": self.fmt.triton[1] if self.fmt.triton else self.fmt.name, "task": self.task,
                "file": self.primary.name, "input_size": list(model.input_size or []),
                "normalization": model.normalization or {"mean": [0.0] * channels, "std": [1.0] * channels},
                "class_names": self.class_names, "inputs": self.inputs, "outputs": self.outputs,
                "max_batch_size": self.max_batch, "tolerance": self.tolerance,
                "verdict": self.record.outcome.verdict if self.record.outcome else None}

    def predicted(self) -> dict[str, Any]:
        """What the bundle's ``/predict`` answers for ``sample_image``: its own code, run on the file here."""
        server = server_module()
        meta = self.server_meta()
        x, size = server.read_image(self.sample_image, meta)
        runner = self.fmt.load(self.primary, self.model)
        try:
            outputs = runner.run({self.inputs[0]["name"]: server.fit_batch(x, meta)})
        finally:
            runner.close()
        named = {spec["name"]: np.asarray(value) for spec, value in zip(self.outputs, outputs, strict=True)}
        return json.loads(json.dumps({"model_name": self.name, "task": self.task, "image_size": list(size),
                                      **server.decode(meta, named, size)}))


def server_module() -> Any:
    """The bundle's ``server.py`` as a module (numpy-only at import), to compute what it answers."""
    spec = importlib.util.spec_from_file_location("aistudio_bundle_server", SERVER_FILES / "server.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load(workspace: Workspace, export_id: str) -> Bundle:
    """A completed export as a ``Bundle``.

    Raises:
        NotFoundError: unknown export, or its files are gone.
        UsageError: the export is not completed.
    """
    from exporter.formats import get_format
    from exporter.store import find_export

    store, record = find_export(workspace, export_id)
    if record.status != "completed":
        raise UsageError(f"Export {export_id} is {record.status}; only completed exports can be deployed.")
    folder = store.export_dir(export_id)
    files = [folder / entry.name for entry in record.files]
    if not files or not all(path.is_file() for path in files):
        raise NotFoundError(f"The files of export {export_id} are gone; export the checkpoint again.")
    return Bundle(record, get_format(record.format, require_available=False), files, store.project.sample_images())
