"""TorchScript (``.pt``): ``torch.jit.trace`` by default, ``torch.jit.script`` as an option.

Validation loads the file with ``torch.jit.load`` in a separate ``python -I`` process, where
this project's code is not importable: the file must stand on its own.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from exporter.errors import ExporterError, OutputFileError, one_line, resource_error
from exporter.formats.registry import (
    Deployed,
    ExportArtifact,
    ExportFormat,
    ExportJob,
    Progress,
    TorchRunner,
    Usage,
    register_format,
)
from exporter.options import OptionSpec

MODEL_FILE = "model.pt"
TORCHVISION_OPS_WARNING = ("the graph calls torchvision's operators (nms, roi_align): run `import torchvision` before "
                           "torch.jit.load (C++: link libtorchvision) — validated that way in a fresh process")
_CHILD = r"""
import sys, numpy as np, torch
if sys.argv[2:] == ["torchvision"]:
    import torchvision  # registers torchvision::nms / roi_align, which detection graphs call
module = torch.jit.load(sys.argv[1], map_location="cpu").eval()
print("ready", flush=True)
for line in sys.stdin:
    path = line.strip()
    try:
        with torch.no_grad():
            out = module(torch.from_numpy(np.load(path)["input"]))
        out = out if isinstance(out, (tuple, list)) else (out,)
        np.savez(path + ".out.npz", *[o.numpy() for o in out])
        print("ok", flush=True)
    except Exception as exc:
        print("error " + repr(exc).replace("\n", " "), flush=True)
"""


class IsolatedTorchScriptRunner:
    """Runs a ``.pt`` file in a child ``python -I`` process (no project code on its path)."""

    def __init__(self, path: Path, needs_torchvision: bool = False) -> None:
        self.tmp = tempfile.TemporaryDirectory(prefix="ts-run-")
        extra = ["torchvision"] if needs_torchvision else []
        self.proc = subprocess.Popen([sys.executable, "-I", "-c", _CHILD, str(path), *extra], cwd=self.tmp.name,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True)
        ready = self.proc.stdout.readline().strip()
        if ready != "ready":
            raise ExporterError(f"torch.jit.load failed in a fresh process: {self._stderr()}", stage="validate")

    def run(self, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
        path = Path(self.tmp.name) / "batch.npz"
        np.savez(path, input=next(iter(inputs.values())))
        self.proc.stdin.write(f"{path}\n")
        self.proc.stdin.flush()
        answer = self.proc.stdout.readline().strip()
        if answer != "ok":
            raise RuntimeError(answer.removeprefix("error ") or self._stderr())
        with np.load(f"{path}.out.npz") as data:
            return [data[f"arr_{i}"] for i in range(len(data.files))]

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.tmp.cleanup()

    def _stderr(self) -> str:
        self.proc.kill()
        lines = [ln for ln in (self.proc.stderr.read() or "").splitlines() if ln.strip()]
        return lines[-1] if lines else "the process ended"


@register_format("torchscript", display_name="TorchScript", suffix=".pt")
class TorchScriptFormat(ExportFormat):
    """TorchScript via torch.jit; metadata in the file's ``extra_files``."""

    runtime_modules = ("torch", "torchvision")

    format_options = (
        OptionSpec("method", "choice", "trace", "trace (default) or script (keeps data-dependent control flow).",
                   choices=("trace", "script"), label="TorchScript method"),
    )

    @classmethod
    def is_available(cls) -> tuple[bool, str]:
        return True, ""

    def load(self, path: Path, model: dict[str, Any]) -> IsolatedTorchScriptRunner:
        return IsolatedTorchScriptRunner(path, needs_torchvision="torchvision" in (model.get("requires") or ()))

    def deploy(self, path: Path, model: dict[str, Any], options: dict[str, Any], threads: int) -> Deployed:
        """``torch.jit.load`` in this process (the benchmark's own child), ``threads`` intra-op threads."""
        import torch

        if "torchvision" in (model.get("requires") or ()):
            import torchvision  # noqa: F401 - registers the operators the graph calls
        torch.set_num_threads(threads)
        module = torch.jit.load(str(path), map_location="cpu").eval()
        return Deployed(TorchRunner(module), {"runtime": f"torch {torch.__version__} (torch.jit.load)",
                                                   "device": "cpu", "mode": "inference_mode",
                                                   "threads": torch.get_num_threads(), "precision": "fp32"})

    def usage(self, file: str, model: dict[str, Any]) -> Usage:
        imports = ["import torch"]
        if "torchvision" in (model.get("requires") or ()):
            imports.append("import torchvision  # registers the nms / roi_align operators the graph calls")
        return Usage(imports=tuple(imports),
                     load=(f'module = torch.jit.load("{file}", map_location="cpu").eval()',),
                     run=("with torch.no_grad():",
                          "    result = module(torch.from_numpy(x))",
                          "outputs = [t.numpy() for t in (result if isinstance(result, (tuple, list)) else [result])]"))

    def export(self, job: ExportJob, workdir: Path, progress: Progress) -> ExportArtifact:
        import torch

        progress("export")
        n, c, h, w = job.input_shape
        try:
            with warnings.catch_warnings(), torch.no_grad():
                warnings.simplefilter("ignore")
                if job.options["method"] == "script":
                    compiled = torch.jit.script(job.module)
                else:
                    compiled = torch.jit.trace(job.module, torch.rand(n, c, h, w), check_trace=False)
        except Exception as exc:  # noqa: BLE001
            raise resource_error(exc, "export") or ExporterError(
                f"torch.jit.{job.options['method']} failed: {one_line(exc)}", stage="export") from None
        path = workdir / MODEL_FILE
        try:
            torch.jit.save(compiled, str(path), _extra_files={"metadata.json": json.dumps(job.metadata)})
        except OSError as exc:
            raise resource_error(exc, "export") or OutputFileError(str(exc), stage="export") from None
        needs_torchvision = "torchvision::" in str(compiled.inlined_graph)
        warn = [TORCHVISION_OPS_WARNING] if needs_torchvision else []
        info = {"inputs": [{"name": job.input_names[0], "shape": ["batch" if job.dynamic_batch else n, c, h, w],
                            "dtype": "float32"}],
                "outputs": [{"name": name, "shape": [], "dtype": "float32"} for name in job.output_names],
                "exporter": f"torch.jit.{job.options['method']}",
                "requires": ["torchvision"] if needs_torchvision else []}
        return ExportArtifact(files=[path], runner=self.load(path, info), info=info, warnings=warn)
