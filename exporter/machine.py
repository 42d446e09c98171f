"""The machine a benchmark ran on: CPU model, cores, ISA flags, memory, GPU and runtime versions, with an
``id`` that is the same on every run of one machine (to mark figures taken on another)."""

from __future__ import annotations

import functools
import hashlib
import json
import platform
import socket
from pathlib import Path
from typing import Any

ISA_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16",
             "amx_int8", "neon", "asimd", "sve")


def machine_stamp(threads: int | None = None, gpu: str | None = None) -> dict[str, Any]:
    """What a benchmark ran on: CPU model, cores, ISA flags, memory, GPU, runtime versions; ``id`` is
    the same on every run of this machine and differs between machines."""
    import psutil

    cpu, flags = _cpuinfo()
    from exporter.formats import RUNTIME_PACKAGES

    runtimes = {name: _version(name) for name in ("torch", *RUNTIME_PACKAGES)}
    stamp = {
        "host": socket.gethostname(), "cpu": cpu, "physical_cores": psutil.cpu_count(logical=False),
        "logical_cores": psutil.cpu_count(), "isa": [f for f in ISA_FLAGS if f in flags],
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1), "os": platform.platform(terse=True),
        "python": platform.python_version(), "gpu": gpu,
        "runtimes": {k: v for k, v in runtimes.items() if v}, "threads": threads,
    }
    key = json.dumps([stamp["host"], cpu, stamp["logical_cores"], stamp["memory_gb"]])
    return {"id": hashlib.sha256(key.encode()).hexdigest()[:12], **stamp}


@functools.cache
def this_machine_id() -> str:
    """The ``id`` of this machine's stamp (to mark benchmarks taken elsewhere)."""
    return machine_stamp()["id"]


def _cpuinfo() -> tuple[str, set[str]]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or platform.machine(), set()
    model = next((ln.split(":", 1)[1].strip() for ln in text.splitlines() if ln.startswith("model name")), "")
    flags = next((ln.split(":", 1)[1].split() for ln in text.splitlines() if ln.startswith(("flags", "Features"))),
                 [])
    return model or platform.processor() or platform.machine(), set(flags)


def _version(package: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None
