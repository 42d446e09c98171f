"""Jobs: what runs in the background on an export, and where.

- ``kinds``: the typed jobs (``Export``, ``Evaluate``, ``Diagnose``, ``Benchmark``) — what each fills in the record,
  what a worker does, and the worker command line (written and read back only there);
- ``api``: start, wait for, cancel and recover them (what the dashboard, CLI and API call), and the ``Runner``
  protocol with ``get_runner``;
- ``local``: the local runner — each job a worker process of this machine;
- ``cluster``: the Ray runner (``AISTUDIO_RUNNER=ray``) — the only module that imports Ray;
- ``slots``: how many jobs run at once (file locks under the workspace), whether a worker lives, which runner.
"""

from exporter.jobs.api import (
    ACTIVE,
    Runner,
    cancel_benchmark,
    cancel_export,
    delete_export,
    export_and_wait,
    get_runner,
    recover_interrupted,
    refresh,
    start_benchmark,
    start_diagnosis,
    start_evaluation,
    start_export,
    start_export_all,
)
from exporter.jobs.kinds import Benchmark, Diagnose, Evaluate, Export, Job

__all__ = ["ACTIVE", "Benchmark", "Diagnose", "Evaluate", "Export", "Job", "Runner", "cancel_benchmark",
           "cancel_export", "delete_export", "export_and_wait", "get_runner", "recover_interrupted", "refresh",
           "start_benchmark", "start_diagnosis", "start_evaluation", "start_export", "start_export_all"]
