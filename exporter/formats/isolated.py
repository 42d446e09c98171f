"""Run an exported file where this project's code cannot help it: a child ``python -I`` process in a scratch
folder, which loads the file with its own runtime's loader and answers batches sent as ``.npz`` files.

A file that validates this way stands on its own (TorchScript, ``.pt2`` programs and AOTInductor packages).
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from exporter.errors import ExporterError

TORCHVISION_OPS_WARNING = ("the graph calls torchvision's operators (nms, roi_align): run `import torchvision` "
                           "before loading it (C++: link libtorchvision) — validated that way in a fresh process")
_CHILD = r"""
import sys, numpy as np, torch
if sys.argv[2] == "torchvision":
    import torchvision  # registers torchvision::nms / roi_align, which detection graphs call
path = sys.argv[1]
{load}
print("ready", flush=True)
for line in sys.stdin:
    batch = line.strip()
    try:
        with torch.no_grad():
            out = module(torch.from_numpy(np.load(batch)["input"]))
        out = out if isinstance(out, (tuple, list)) else (out,)
        np.savez(batch + ".out.npz", *[o.numpy() for o in out])
        print("ok", flush=True)
    except Exception as exc:
        print("error " + repr(exc).replace("\n", " "), flush=True)
"""


def requires_torchvision(model: dict) -> bool:
    """Whether the graph described by a record's ``model`` section calls torchvision's operators."""
    return "torchvision" in (model.get("requires") or ())


class IsolatedRunner:
    """Runs ``path`` in a child ``python -I`` process; ``load`` is the Python that turns ``path`` into a callable
    ``module`` (e.g. ``module = torch.jit.load(path)``), ``loader`` names it in errors."""

    def __init__(self, path: Path, load: str, loader: str, needs_torchvision: bool = False) -> None:
        self.tmp = tempfile.TemporaryDirectory(prefix="isolated-run-")
        child = _CHILD.replace("{load}", load)
        self.proc = subprocess.Popen(
            [sys.executable, "-I", "-c", child, str(path), "torchvision" if needs_torchvision else "-"],
            cwd=self.tmp.name, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        if self.proc.stdout.readline().strip() != "ready":
            message = self._stderr()
            self.close()
            raise ExporterError(f"{loader} failed in a fresh process: {message}", stage="validate")

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
