"""Warm workers: a process that has imported torch and the exporter once and forks each local job from itself, so a
job starts at once instead of importing them again (5–7 s of a 2-core machine's time per job).

The local runner (``exporter.jobs.local``) starts one on its first job, which waits for its imports as a spawned
worker would have; whenever it cannot serve (another environment, a zygote that died), a job is spawned as
``python -m exporter worker`` as before. A forked job is what a spawned one is: the same worker command, its own
session and process group, its stdout and stderr in its log, its own environment and memory limit; it outlives the
server. The zygote reaps its jobs and ends when its owner closes the pipe. ``AISTUDIO_WARM_WORKERS=0`` turns it off.

Protocol (one JSON line each way): the owner writes ``{"argv", "env", "log", "memory", "cwd"}``; the zygote answers
``{"pid"}``. Its first line, once the imports are done, is ``{"ready": true}``.
"""

from __future__ import annotations

import importlib
import json
import os
import signal
import sys
from typing import Any

# What nearly every job imports; a module that is not installed is skipped.
PRELOAD = ("numpy", "PIL.Image", "torch", "torch.onnx", "torchvision", "onnx.helper", "onnxsim", "onnxruntime",
           "exporter.cli", "exporter.pipeline", "exporter.validation", "exporter.evaluation", "exporter.benchmark",
           "exporter.jobs.kinds", "exporter.formats")


def serve() -> dict[str, Any] | None:
    """The zygote's loop; returns only in a forked child, with its job (``None`` when the owner has gone)."""
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # the kernel reaps the jobs: none lingers as a zombie
    for name in PRELOAD:
        try:
            importlib.import_module(name)
        except ImportError:
            pass
    _reply({"ready": True})
    while line := sys.stdin.readline():
        job = json.loads(line)
        started, done = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(started)
            os.setsid()  # its own session and process group before anyone learns its pid: cancel kills the group
            os.write(done, b"1")
            os.close(done)
            return job
        os.close(done)
        os.read(started, 1)
        os.close(started)
        _reply({"pid": pid})
    return None


def _reply(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def become_worker(job: dict[str, Any]) -> int:
    """In the forked child: turn into the job's worker process and run it; its exit code."""
    from exporter.jobs.slots import limit_memory

    for number in (signal.SIGCHLD, signal.SIGTERM):
        signal.signal(number, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    limit_memory(job["memory"])()
    log = os.open(job["log"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    null = os.open(os.devnull, os.O_RDONLY)
    for source, target in ((null, 0), (log, 1), (log, 2)):
        os.dup2(source, target)
    os.close(log)
    os.close(null)
    sys.stdin = open(os.devnull)  # noqa: SIM115 - the process's for its lifetime
    os.environ.clear()
    os.environ.update(job["env"])
    os.chdir(job["cwd"])
    if "numpy" in sys.modules:  # a spawned worker would have drawn its own seed
        sys.modules["numpy"].random.seed()
    from exporter.cli import main

    sys.argv = [sys.executable, "-m", "exporter", *job["argv"]]
    return main(job["argv"])


def finish(code: int) -> None:
    """End a forked worker as the interpreter would end it — non-daemon threads joined, atexit handlers run,
    output flushed — but without the C++ destructors of libraries the zygote loaded: ONNX Runtime's joins a thread
    that lived in the zygote and was never forked, and would wait for it forever."""
    import atexit
    import threading

    threading._shutdown()  # noqa: SLF001 - what Py_FinalizeEx does first (concurrent.futures joins its workers)
    atexit._run_exitfuncs()  # noqa: SLF001
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    os._exit(code)


if __name__ == "__main__":
    forked = serve()
    if forked is None:
        sys.exit(0)
    try:
        status = become_worker(forked)
    except SystemExit as exc:
        status = exc.code if isinstance(exc.code, int) else 1 if exc.code else 0
    except BaseException:  # noqa: BLE001 - reported in the worker's log, as an uncaught error would be
        import traceback

        traceback.print_exc()
        status = 1
    finish(status)
