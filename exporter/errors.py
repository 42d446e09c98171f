"""Every user-facing failure of the exporter, as one tree rooted at ``ExportError``.

    ExportError                      exit 1 unless stated
    ├── UsageError                   exit 2: a bad argument or option
    │   ├── InvalidOptionError
    │   ├── UnknownFormatError
    │   └── FormatUnavailableError
    ├── NotFoundError                exit 2: unknown project / experiment / checkpoint / export
    ├── DatasetError                 exit 2: a labelled set missing, or not in the task's layout
    ├── CheckpointError              the file is not a loadable, safe checkpoint
    ├── ArchitectureError            no builder for (task, architecture)
    ├── StateDictMismatchError       the weights do not fit the built model
    ├── ExporterError                torch.onnx (or another exporter) could not write the file
    ├── OutputFileError              the exported file could not be written or read back
    ├── ResourceLimitError           the worker ran out of memory
    └── Interrupted / Cancelled      the job ended before it finished

Each error carries the pipeline ``stage`` it happened in (when known) and a message that
says what to do. ``to_dict()`` is what ``export.json["error"]`` and the API return.
"""

from __future__ import annotations

from typing import Any


class ExportError(Exception):
    """Base of every error the exporter reports to a user."""

    exit_code = 1
    http_status = 422

    def __init__(self, message: str, *, stage: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.stage = stage

    def to_dict(self) -> dict[str, Any]:
        """The JSON form stored in ``export.json["error"]``."""
        return {"type": type(self).__name__, "message": self.message, "stage": self.stage}


class UsageError(ExportError):
    """A bad argument: the request itself is wrong, nothing was started."""

    exit_code = 2
    http_status = 400


class InvalidOptionError(UsageError):
    """An export option is unknown or has a value that cannot work."""


class UnknownFormatError(UsageError):
    """The format name is not registered."""


class FormatUnavailableError(UsageError):
    """The format is registered but cannot run here (missing package, no GPU, ...)."""

    http_status = 409


class NotFoundError(UsageError):
    """A project, experiment, checkpoint or export id does not exist."""

    http_status = 404


class ModelCodeNotAllowedError(UsageError):
    """A source that runs the user's own Python code, where this server does not allow it."""

    http_status = 403


class DatasetError(ExportError):
    """A labelled validation set is missing, or its layout or files are not what the task reads."""

    exit_code = 2


class CheckpointError(ExportError):
    """The checkpoint file is missing, empty, corrupt, or would execute code."""


class ArchitectureError(ExportError):
    """No model builder matches the checkpoint's task and architecture."""


class StateDictMismatchError(ExportError):
    """The checkpoint's weights do not fit the model built for it."""


class ExporterError(ExportError):
    """The exporter could not convert the model (unsupported op, tracing failure, ...)."""


class OutputFileError(ExportError):
    """The export folder could not be written (disk full, permissions) or read back."""


class ResourceLimitError(ExportError):
    """The export needed more memory than its worker may use, or an upload is over the size limit."""

    http_status = 413


class NonFiniteOutputError(ExportError):
    """The exported file answers NaN or Inf on labelled images where PyTorch's answer is finite."""


class Interrupted(ExportError):
    """The worker running an export died before it finished."""


class Cancelled(ExportError):
    """A user cancelled the export."""


def one_line(exc: BaseException, limit: int = 400) -> str:
    """Condense an arbitrary exception into one readable line for a user.

    Args:
        exc: any exception, typically raised by a third-party library.
        limit: maximum length of the returned text.

    Returns:
        ``"<Type>: <first meaningful line>"`` without tracebacks or blank lines.
    """
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    # Exporter messages often start with a generic banner; the last line is the cause.
    text = lines[-1] if lines else ""
    if len(lines) > 1 and len(lines[0]) < 160 and not lines[0].lower().startswith("traceback"):
        text = f"{lines[0]} — {text}" if lines[0] != text else text
    text = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return text if len(text) <= limit else text[: limit - 1] + "…"


def resource_error(exc: BaseException, stage: str | None = None) -> ExportError | None:
    """Map out-of-memory and disk/permission failures to typed errors (``None`` for others)."""
    text = str(exc)
    if isinstance(exc, MemoryError) or "can't allocate memory" in text or "std::bad_alloc" in text:
        return ResourceLimitError(
            "Ran out of memory (the worker's limit or the machine's); try a smaller input_shape "
            "or raise AISTUDIO_WORKER_MEMORY_MB.", stage=stage)
    if isinstance(exc, OSError) and exc.errno is not None:
        import errno
        import os

        reason = {errno.ENOSPC: "the disk is full", errno.EFBIG: "the file is larger than allowed",
                  errno.EACCES: "permission denied", errno.EROFS: "the file system is read-only",
                  errno.EDQUOT: "the disk quota is exceeded"}.get(exc.errno, os.strerror(exc.errno))
        return OutputFileError(f"Could not write the export: {reason} ({exc.filename or 'export folder'}).",
                               stage=stage)
    return None
