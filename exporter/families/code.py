"""Your own model code as a source (``code/<Class>``): ``--model-code path/to/model.py:ClassName`` (that file) or
``package.module:ClassName`` importable from ``--code-root`` (that top-level package's ``.py`` files; paths are
relative to ``--code-root``, by default the current folder).

The code is read once, at import, into the checkpoint's hyper-parameters (``model_code``: entry, files, sha256,
kwargs) — so every job that receives the checkpoint receives the very code that was imported, Ray workers
included — and into the project's ``code/<sha256[:12]>/`` folder for the user to read. A job writes the files to a
private cache folder named by their sha256 and imports them from there. The class is instantiated with
``--model-kwargs`` (JSON), else with the Lightning checkpoint's saved hyper-parameters that its ``__init__`` takes.

Running the user's code is the user's choice: the CLI allows it; the dashboard and the API only when the server
runs with ``AISTUDIO_ALLOW_MODEL_CODE=1`` (``exporter.importer``).
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import os
import sys
import tempfile
import threading
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Any

from exporter.errors import ArchitectureError, CheckpointError, ModelCodeNotAllowedError, UsageError, one_line
from exporter.families.base import Family

if TYPE_CHECKING:
    from torch import nn

    from exporter.models.spec import ModelSpec

CODE_KEY = "model_code"
ALLOW_ENV = "AISTUDIO_ALLOW_MODEL_CODE"
MAX_CODE_BYTES = 4 * 2**20
_IMPORT_LOCK = threading.Lock()


def code_allowed() -> bool:
    """True when this server runs users' model code (``AISTUDIO_ALLOW_MODEL_CODE=1``)."""
    return os.environ.get(ALLOW_ENV, "").strip().lower() in ("1", "true", "yes")


def refuse_code() -> ModelCodeNotAllowedError:
    return ModelCodeNotAllowedError(
        f"This source runs your own Python code, which this server does not allow: start it with {ALLOW_ENV}=1 to "
        "allow it, or import from the CLI (python -m exporter import FILE --model-code …), where running your "
        "code is your choice.")


def read_code(entry: str, code_root: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """``{"entry": "module:Class", "files": {relative path: source}, "sha256"}`` for ``--model-code``.

    Raises:
        UsageError: not ``FILE.py:Class`` / ``package.module:Class``, or the code is not found.
    """
    target, _, name = entry.rpartition(":")
    if not target or not name.isidentifier():
        raise UsageError(f"--model-code takes path/to/model.py:ClassName or package.module:ClassName, not {entry!r}.")
    if target.endswith(".py"):
        path = Path(code_root or ".") / target
        if not path.is_file():
            raise UsageError(f"No such model code file: {path}")
        files, module = {path.name: path}, path.stem
    else:
        root = Path(code_root or ".")
        top = target.split(".")[0]
        if (root / top).is_dir():
            files = {p.relative_to(root).as_posix(): p for p in sorted((root / top).rglob("*.py"))}
        elif (root / f"{top}.py").is_file():
            files = {f"{top}.py": root / f"{top}.py"}
        else:
            raise UsageError(f"{target} is not importable from {root.resolve()}: no {top}/ package or {top}.py "
                             "there (pass --code-root).")
        module = target
    if not module.replace(".", "_").isidentifier() or module.split(".")[0] in sys.stdlib_module_names:
        raise UsageError(f"The model code's module name {module!r} is not a usable one (a Python identifier that "
                         "no standard module has); rename the file.")
    if sum(p.stat().st_size for p in files.values()) > MAX_CODE_BYTES:
        raise UsageError(f"The model code is over {MAX_CODE_BYTES // 2**20} MB of .py files; point at the module "
                         "that defines the model.")
    sources = {rel: p.read_text(encoding="utf-8") for rel, p in files.items()}
    return {"entry": f"{module}:{name}", "files": sources, "sha256": code_sha256(sources)}


def code_sha256(files: dict[str, str]) -> str:
    digest = hashlib.sha256()
    for rel in sorted(files):
        digest.update(rel.encode() + b"\0" + files[rel].encode() + b"\0")
    return digest.hexdigest()


def init_kwargs(cls: type, given: dict[str, Any] | None, saved: dict[str, Any]) -> dict[str, Any]:
    """The kwargs to build ``cls`` with: ``given`` (--model-kwargs), else the saved hyper-parameters (a
    LightningModule's ``save_hyperparameters()``) its ``__init__`` takes."""
    if given is not None:
        return dict(given)
    params = inspect.signature(cls.__init__).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return dict(saved)
    return {k: v for k, v in saved.items() if k in params and k != "self"}


def load_class(code: dict[str, Any]) -> type:
    """The model class from the code's private copy.

    Raises:
        ArchitectureError: the code fails to import (its traceback's last frame), or has no such class.
    """
    root = _materialized(code)
    module_name, _, name = code["entry"].partition(":")
    with _IMPORT_LOCK:
        try:
            module = _import_file(root, module_name, code) if f"{module_name}.py" in code["files"] else (
                _import_package(root, module_name))
        except ArchitectureError:
            raise
        except Exception as exc:  # noqa: BLE001 - the user's code may raise anything
            raise ArchitectureError(f"Your model code failed to import: {last_frame(exc)}", stage="build") from None
    cls = getattr(module, name, None)
    if not isinstance(cls, type):
        raise ArchitectureError(f"{module_name} defines no class {name}.", stage="build")
    return cls


def _import_file(root: Path, module_name: str, code: dict[str, Any]) -> Any:
    """One file, as a module named by its sha256 (no clash with anything imported, nor with other versions)."""
    unique = f"aistudio_model_code_{code['sha256'][:16]}_{module_name}"
    if unique in sys.modules:
        return sys.modules[unique]
    spec = importlib.util.spec_from_file_location(unique, root / f"{module_name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[unique] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[unique]
        raise
    return module


def _import_package(root: Path, module_name: str) -> Any:
    """A module of the user's package, imported by its own name from the private copy (its absolute imports of
    itself must resolve); another version of it imported before is replaced."""
    top = module_name.split(".")[0]
    for loaded in [m for m in sys.modules if m == top or m.startswith(top + ".")]:
        if not (getattr(sys.modules[loaded], "__file__", None) or "").startswith(str(_cache())):
            raise ArchitectureError(f"The model code's package {top!r} clashes with an installed module of that "
                                    "name; rename your package.", stage="build")
        del sys.modules[loaded]
    sys.path.insert(0, str(root))
    try:
        return importlib.import_module(module_name)
    finally:
        sys.path.remove(str(root))


def last_frame(exc: BaseException) -> str:
    """``file:line in function: Error: message`` of where ``exc`` was raised."""
    frames = traceback.extract_tb(exc.__traceback__)
    where = f"{Path(frames[-1].filename).name}:{frames[-1].lineno} in {frames[-1].name}: " if frames else ""
    return f"{where}{type(exc).__name__}: {one_line(exc, 240)}"


def _cache() -> Path:
    return Path(tempfile.gettempdir()) / f"aistudio-model-code-{os.getuid()}"


def _materialized(code: dict[str, Any]) -> Path:
    """The code's files under the private cache, in a folder named by their sha256 (written once, atomically)."""
    files = code.get("files") or {}
    if code_sha256(files) != code.get("sha256"):
        raise CheckpointError("The checkpoint's model code does not match its sha256; import it again.", stage="load")
    root = _cache() / code["sha256"]
    if not root.is_dir():
        staging = Path(tempfile.mkdtemp(prefix=".code-", dir=_ensure(_cache())))
        for rel, text in files.items():
            target = staging.joinpath(*Path(rel).parts)
            if ".." in Path(rel).parts or Path(rel).is_absolute():
                raise CheckpointError(f"The model code holds an unsafe path: {rel!r}.", stage="load")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text, encoding="utf-8")
        try:
            os.replace(staging, root)
        except OSError:  # another process wrote it meanwhile
            import shutil

            shutil.rmtree(staging, ignore_errors=True)
    return root


def _ensure(folder: Path) -> Path:
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    return folder


class UserCode(Family):
    prefix = "code/"

    def build(self, spec: ModelSpec) -> nn.Module:
        from torch import nn

        code = spec.extra.get(CODE_KEY)
        if not isinstance(code, dict):
            raise ArchitectureError(f"{spec.architecture} needs its model code, which this checkpoint does not "
                                    "carry; import it with --model-code.", stage="build")
        cls = load_class(code)
        try:
            model = cls(**(code.get("kwargs") or {}))
        except Exception as exc:  # noqa: BLE001 - the user's code may raise anything
            raise ArchitectureError(f"{code['entry']}(**{code.get('kwargs') or {}}) failed: {last_frame(exc)}",
                                    stage="build") from None
        if not isinstance(model, nn.Module):
            raise ArchitectureError(f"{code['entry']} is not a torch.nn.Module.", stage="build")
        if hasattr(model, "_jit_is_scripting"):  # a LightningModule without a Trainer: as its own to_torchscript()
            model._jit_is_scripting = True  # sets it, `.trainer` answers None instead of raising while traced
        return model

    def wrap(self, model: nn.Module, spec: ModelSpec, options: dict[str, Any]) -> nn.Module:
        from exporter.families.outputs import ContractOutputs

        return ContractOutputs(model, spec.task, options).eval()

    def check_outputs(self, outputs: Any, spec: ModelSpec) -> str:
        from exporter.families.outputs import check_contract

        return check_contract(outputs, spec.task, spec.num_classes, spec.input_size)
