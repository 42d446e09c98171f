"""The bundle's own server (``server/``): the file, ``runtime.py`` written from the format's "Run it" code,
``server.py`` (Open Inference Protocol + ``/predict``), ``serve_ray.py`` (Ray Serve: batching, replicas),
``selftest.py`` and ``golden/``, pinned ``requirements.txt`` (the file's runtime only), ``start.sh``, a
``Dockerfile`` and a ``README.md``."""

from __future__ import annotations

import importlib.metadata
import json
import shutil
from pathlib import Path

import numpy as np

from exporter.deploy.bundle import SERVER_FILES, Bundle

SERVER_PACKAGES = ("numpy", "pillow", "starlette", "uvicorn", "python-multipart")
RAY_PACKAGE = "ray[serve]"
DIR_TOKEN = "@@MODEL_DIR@@"
PORT = 8000


def write(bundle: Bundle, out: Path) -> Path:
    """The server bundle in ``out``; returns it."""
    out.mkdir(parents=True)
    model_dir = out / "model"
    model_dir.mkdir()
    for path in bundle.files:
        shutil.copy2(path, model_dir / path.name)
    bundle.copy_passport(model_dir)  # model/ is the signed set: `verify` checks it where it is deployed
    for name in ("server.py", "serve_ray.py", "selftest.py"):
        shutil.copy2(SERVER_FILES / name, out / name)
    (out / "runtime.py").write_text(runtime_source(bundle))
    (out / "model.json").write_text(json.dumps(bundle.server_meta(), indent=2))
    requirements = pinned(bundle)
    (out / "requirements.txt").write_text(
        "# The file's runtime and the server's own needs, pinned — nothing else.\n" + "\n".join(requirements) + "\n")
    (out / "requirements-ray.txt").write_text(f"-r requirements.txt\n{_pin(RAY_PACKAGE)}\n")
    start = out / "start.sh"
    start.write_text((SERVER_FILES / "start.sh").read_text())
    start.chmod(0o755)
    shutil.copy2(SERVER_FILES / "Dockerfile", out / "Dockerfile")
    golden = out / "golden"
    golden.mkdir()
    np.save(golden / "inputs.npy", bundle.golden_inputs)
    outputs = zip(bundle.outputs, bundle.golden_outputs, strict=True)
    np.savez(golden / "outputs.npz", **{spec["name"]: value for spec, value in outputs})
    (golden / "sample.png").write_bytes(bundle.sample_image)
    (golden / "predict.json").write_text(json.dumps(bundle.predicted(), indent=2))
    (out / "README.md").write_text(readme(bundle, requirements))
    return out


def runtime_source(bundle: Bundle) -> str:
    """``runtime.py``: the format's own "Run it" code, as a ``run(x)`` function over the bundled file."""
    usage = bundle.fmt.serving_usage(f"{DIR_TOKEN}/{bundle.primary.name}", bundle.model)

    def located(line: str) -> str:
        return line.replace(f'"{DIR_TOKEN}', 'MODEL_DIR + "').replace(f"'{DIR_TOKEN}", "MODEL_DIR + '")

    return "\n".join([
        f'"""The exported {bundle.fmt.display_name} file in its runtime: ``run(x)`` → its outputs in order '
        '(written by AI Studio Export from the format\'s "Run it" code)."""', "",
        "from pathlib import Path", "", "import numpy as np", *usage.imports, "",
        'MODEL_DIR = str(Path(__file__).resolve().parent / "model")',
        *map(located, usage.load), "", "",
        "def run(x: np.ndarray) -> list:", *(f"    {located(line)}" for line in usage.run),
        "    return outputs", ""])


def pinned(bundle: Bundle) -> list[str]:
    """``package==version`` for the file's runtime (as this machine has it) and the server's packages."""
    distributions = importlib.metadata.packages_distributions()
    runtime = [distributions.get(module, [module])[0] for module in bundle.fmt.serving_modules(bundle.model)]
    return [_pin(name) for name in dict.fromkeys([*runtime, *SERVER_PACKAGES])]


def _pin(requirement: str) -> str:
    name = requirement.split("[")[0]
    return f"{requirement}=={importlib.metadata.version(name)}"


def readme(bundle: Bundle, requirements: list[str]) -> str:
    """The bundle's README: how to start, call (curl, Python, Triton's client), test and containerise it."""
    text = (SERVER_FILES / "README.template.md").read_text()
    return text.format(name=bundle.name, export_id=bundle.record.id, format=bundle.fmt.display_name,
                       task=bundle.task, port=PORT, input=bundle.inputs[0]["name"],
                       shape=json.dumps([1, *bundle.inputs[0]["shape"][1:]]),
                       requirements="\n".join(requirements), tolerance=f"{bundle.tolerance:g}")
