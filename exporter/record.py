"""The export record (``export.json``) as a typed model: read and written only through the store.

``ExportRecord`` forbids unknown top-level fields, so a misspelled key fails where it is written
instead of silently adding a field. Nested parts (model, validation) declare what every record
has and allow more: formats and tasks add their own facts (TensorRT's GPU, an ONNX op count).
Records written before the typed record (no ``schema_version``) are migrated on read.
"""

from __future__ import annotations

from typing import Any, Literal, TypedDict

from pydantic import BaseModel, ConfigDict, Field

SCHEMA_VERSION = 2  # 1: records written before this model existed (no schema_version field)
ACTIVE = ("pending", "running")
Status = Literal["pending", "running", "completed", "failed", "cancelled"]
Verdict = Literal["passed", "failed", "inconclusive", "unverified"]


class _Part(BaseModel):
    """A nested part: declared fields are checked, extra facts are kept."""

    model_config = ConfigDict(extra="allow")


class Progress(BaseModel):
    stage: str | None = "load"
    fraction: float = 0.0


class FileEntry(BaseModel):
    name: str
    size_bytes: int
    sha256: str


class ErrorInfo(BaseModel):
    type: str
    message: str
    stage: str | None = None


class TensorInfo(_Part):
    name: str
    shape: list[int | str] = Field(default_factory=list)
    dtype: str = "float32"


class ModelInfo(_Part):
    """What the file holds: the model's task and I/O, plus what its format says about the graph."""

    task: str | None = None
    architecture: str | None = None
    num_classes: int | None = None
    input_size: list[int] | None = None
    input_shape: list[int] | None = None
    class_names: list[str] = Field(default_factory=list)
    normalization: dict[str, list[float]] | None = None
    inputs: list[TensorInfo] = Field(default_factory=list)
    outputs: list[TensorInfo] = Field(default_factory=list)
    exporter: str | None = None
    opset: int | None = None
    ir_version: int | None = None
    node_count: int | None = None
    op_types: dict[str, int] = Field(default_factory=dict)
    requires: list[str] = Field(default_factory=list)
    code_sha256: str | None = None  # the user's own model code the file was made from (code/<Class> models)


class Referee(_Part):
    """One output against the PyTorch model run in float64 (``validation.referee``): the file passes when its
    error is no more than ``multiple`` × PyTorch float32's own (or within the tolerance)."""

    torch_float32_error: float
    file_error: float
    allowed: float
    multiple: float
    passed: bool


class OutputCheck(_Part):
    """How one output of the file compares with PyTorch (``validation.OutputComparison``)."""

    name: str
    shape: list[int] = Field(default_factory=list)
    max_abs_diff: float
    mean_abs_diff: float
    max_rel_diff: float | None = None
    allowed_abs_diff: float
    reference_min: float | None = None
    reference_max: float | None = None
    passed: bool
    histogram: dict[str, list[int | float]] = Field(default_factory=dict)
    problem: str | None = None
    degenerate: bool = False
    note: str | None = None
    referee: Referee | None = None


class Validation(_Part):
    """The file against PyTorch on the same inputs (``validation.ValidationReport``)."""

    passed: bool
    verdict: Verdict
    max_diff: float | None  # None when unverified: the file could not run here
    tolerance: float
    batch_sizes: list[int]
    inputs: str
    outputs: list[OutputCheck] = Field(default_factory=list)
    task_metrics: dict[str, float] = Field(default_factory=dict)
    messages: list[str] = Field(default_factory=list)
    referee: str | None = None  # the float64 referee's finding, when it was called
    broken: bool = False  # the file failed to run, clashed in shape or answered NaN/Inf


class Outcome(_Part):
    """The export's one verdict (``exporter.verdict``): the gate that decided it (``validation``, ``evaluation``,
    ``validation and evaluation``), why in words, the other gate's figures as evidence, and the tab showing it."""

    verdict: str
    gate: str | None = None
    reason: str = ""
    evidence: str | None = None
    tab: str | None = None


class Evaluation(_Part):
    """Accuracy on the project's labelled set: PyTorch and the file scored alike, the gate's verdict
    (``exporter.evaluation``). While an evaluation job runs, ``status`` is ``running``."""

    status: Literal["running", "completed", "failed"] = "completed"
    verdict: Verdict | None = None
    reason: str | None = None
    dataset: dict[str, Any] = Field(default_factory=dict)
    primary_metric: str | None = None
    higher_is_better: bool = True
    pytorch: dict[str, float] = Field(default_factory=dict)
    file: dict[str, float] = Field(default_factory=dict)
    delta: dict[str, float] = Field(default_factory=dict)
    drop: float | None = None
    max_metric_drop: float | None = None
    disagreements: list[dict[str, Any]] = Field(default_factory=list)
    duration_s: float | None = None
    error: ErrorInfo | None = None
    worker: Worker | None = None


class Worker(_Part):
    """Where the job ran: a local process (pid and start time guard against pid reuse)."""

    pid: int | None = None
    create_time: float | None = None


class Benchmark(_Part):
    """One benchmark of the file and of PyTorch eager on one machine (``exporter.benchmark``).

    ``queued`` behind its export, ``running`` (``progress``), then ``completed`` with ``results``
    (per runtime: settings, load time, first inference, per batch size latency percentiles and
    throughput, peak memory growth) and the ``machine`` stamp, or ``failed`` with ``error``.
    """

    id: str
    status: Literal["queued", "running", "completed", "failed"] = "queued"
    requested: dict[str, Any] = Field(default_factory=dict)
    progress: Progress = Field(default_factory=Progress)
    started_at: str | None = None
    finished_at: str | None = None
    duration_s: float | None = None
    batch_sizes: list[int] = Field(default_factory=list)
    threads: int | None = None
    machine: dict[str, Any] = Field(default_factory=dict)
    results: dict[str, dict[str, Any]] = Field(default_factory=dict)
    speedup_vs_pytorch: dict[str, float] = Field(default_factory=dict)
    deploy_check: dict[str, Any] | None = None
    error: ErrorInfo | None = None
    worker: Worker | None = None

    def figure(self, runtime: str, batch: int | None, key: str) -> float | None:
        """One figure of a completed run: ``key`` of ``runtime`` at ``batch`` (None: the largest batch)."""
        rows = (self.results.get(runtime) or {}).get("batches") or []
        row = rows[-1] if rows and batch is None else next((r for r in rows if r["batch"] == batch), None)
        return row.get(key) if row else None

    def headline(self) -> dict[str, Any]:
        """The file's figures a table shows: p50 and × eager at the smallest batch, throughput at the largest,
        peak memory, precision, machine id."""
        small = self.batch_sizes[0] if self.batch_sizes else None
        file = self.results.get("file") or {}
        return {"batch": small, "p50_ms": self.figure("file", small, "p50_ms"),
                "speedup": self.speedup_vs_pytorch.get(str(small)),
                "throughput_batch": self.batch_sizes[-1] if self.batch_sizes else None,
                "throughput_ips": self.figure("file", None, "throughput_ips"),
                "peak_mb": file.get("peak_rss_growth_mb"), "precision": (file.get("settings") or {}).get("precision"),
                "machine_id": self.machine.get("id")}


class Serving(_Part):
    """The export served by its deploy bundle's server on this machine and loaded (``exporter.deploy.live``):
    per concurrency level the requests, errors, p50/p99 latency and requests/s; ``batching`` says how requests were
    run (one process, no batching), ``bare_p50_ms`` is the benchmark's p50 of the file alone at batch 1, for the
    serving overhead."""

    measured_at: str
    seconds: float
    levels: list[dict[str, Any]] = Field(default_factory=list)
    batching: dict[str, Any] = Field(default_factory=dict)
    bare_p50_ms: float | None = None
    machine: dict[str, Any] = Field(default_factory=dict)


class Diagnosis(_Part):
    """Where the file diverges from its reference, layer by layer (``exporter.diagnosis``): ``layers`` in
    graph order with their error and the error each adds, ``first_above`` the tolerance, the ``top`` adders,
    a one-line ``reading``; ``available`` is False (with the reason) for a format that exposes no tensors."""

    status: Literal["running", "completed", "failed"] = "completed"
    available: bool = True
    reading: str | None = None
    reference: str | None = None
    comparison: str | None = None
    tolerance: float | None = None
    layers: list[dict[str, Any]] = Field(default_factory=list)
    top: list[dict[str, Any]] = Field(default_factory=list)
    first_above: dict[str, Any] | None = None
    mapping: dict[str, int] | None = None
    duration_s: float | None = None
    error: ErrorInfo | None = None
    worker: Worker | None = None


class Yardstick(_Part):
    """The library's own exporter beside this file (``exporter.families.yardstick``: anomalib's ``Engine.export``
    for an anomalib model in ONNX or OpenVINO): per file (``rows``: ``exporter``, ``file``, ``size_mb``,
    ``max_diff_score`` and ``max_diff_map`` from the library's torch module on the same ``images``, ``ms_batch1`` —
    or the ``error`` that kept it from running them)."""

    status: Literal["completed", "failed"] = "completed"
    exporter: str
    images: int = 0
    rows: list[dict[str, Any]] = Field(default_factory=list)
    error: ErrorInfo | None = None


class AccuracySearch(_Part):
    """accuracy=auto's rounds: what stayed in float each round and the gate's figures; ``chosen`` is the
    round the file is from (the first that ``met`` the gate, else the best one)."""

    met: bool
    chosen: int
    max_rounds: int
    gate: str
    rounds: list[dict[str, Any]] = Field(default_factory=list)
    float_size_mb: float | None = None  # the fp32 graph it was converted from
    duration_s: float | None = None


class ExportRecord(BaseModel):
    """One export: request, state, the files it made and how they compare with PyTorch."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    schema_version: int = SCHEMA_VERSION
    id: str
    project_id: str
    experiment_id: str
    checkpoint: str
    format: str
    options: dict[str, Any] = Field(default_factory=dict)
    status: Status = "pending"
    progress: Progress = Field(default_factory=Progress)
    created_at: str
    started_at: str | None = None
    finished_at: str | None = None
    output_file: str | None = None
    files: list[FileEntry] = Field(default_factory=list)
    output_size_mb: float | None = None
    model: ModelInfo = Field(default_factory=ModelInfo)
    validation: Validation | None = None
    evaluation: Evaluation | None = None
    benchmarks: list[Benchmark] = Field(default_factory=list)
    accuracy_search: AccuracySearch | None = None
    diagnosis: Diagnosis | None = None
    yardstick: Yardstick | None = None
    serving: Serving | None = None
    timings_s: dict[str, float] = Field(default_factory=dict)
    warnings: list[str] = Field(default_factory=list)
    error: ErrorInfo | None = None
    checkpoint_path: str | None = None
    checkpoint_sha256: str | None = None
    worker: Worker | None = None
    environment: dict[str, Any] = Field(default_factory=dict)
    outcome: Outcome | None = None  # written by the store from the parts above (``exporter.verdict``)

    @property
    def active(self) -> bool:
        """Pending or running: its job has not ended."""
        return self.status in ACTIVE

    @property
    def verdict(self) -> str:
        """One word for the record: pending, running, failed, cancelled, or — once completed — the one verdict
        every gate that applies gives (passed, failed, inconclusive, unverified; unvalidated without validation)."""
        return self.decide().verdict

    def decide(self) -> Outcome:
        """The one verdict with the gate that decided it (``exporter.verdict``)."""
        from exporter.verdict import decide

        return Outcome(**decide(self))

    @property
    def gate_failed(self) -> bool:
        """True when an evaluation on labelled data found a metric drop over ``max_metric_drop``."""
        return self.evaluation is not None and self.evaluation.verdict == "failed"

    @property
    def benchmark(self) -> Benchmark | None:
        """The latest completed benchmark, preferring one taken on this machine."""
        from exporter.machine import this_machine_id

        done = [b for b in self.benchmarks if b.status == "completed"]
        here = [b for b in done if b.machine.get("id") == this_machine_id()]
        return (here or done or [None])[-1]

    @property
    def stage(self) -> str | None:
        """The stage the job is in (or ended in)."""
        return self.progress.stage

    def to_json(self) -> dict[str, Any]:
        """The ``export.json`` form (what the API returns and ``--json`` prints)."""
        return self.model_dump(mode="json")

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ExportRecord:
        """A record read from disk, migrated from older schema versions first, its one verdict (``outcome``) as the
        rule decides it now."""
        record = cls.model_validate(migrate(data))
        return record.model_copy(update={"outcome": record.decide()})

    @classmethod
    def fields(cls) -> frozenset[str]:
        """Top-level field names (what ``ExportStore.update`` accepts)."""
        return frozenset(cls.model_fields)


class RecordChanges(TypedDict, total=False):
    """What a job may change in a record (``ExportStore.update``): each part as its model or its JSON form. The
    request's fields (ids, checkpoint, format, options, created_at) are fixed once the record is created."""

    status: Status
    progress: Progress | dict[str, Any]
    started_at: str | None
    finished_at: str | None
    output_file: str | None
    files: list[FileEntry] | list[dict[str, Any]]
    output_size_mb: float | None
    model: ModelInfo | dict[str, Any]
    validation: Validation | dict[str, Any] | None
    evaluation: Evaluation | dict[str, Any] | None
    benchmarks: list[Benchmark] | list[dict[str, Any]]
    accuracy_search: AccuracySearch | dict[str, Any] | None
    diagnosis: Diagnosis | dict[str, Any] | None
    yardstick: Yardstick | dict[str, Any] | None
    serving: Serving | dict[str, Any] | None
    timings_s: dict[str, float]
    warnings: list[str]
    error: ErrorInfo | dict[str, Any] | None
    checkpoint_path: str | None
    checkpoint_sha256: str | None
    worker: Worker | dict[str, Any] | None
    environment: dict[str, Any]


class ValidationSummary(_Part):
    passed: bool | None = None
    verdict: str | None = None


class EvaluationSummary(_Part):
    status: str | None = None
    verdict: str | None = None
    primary_metric: str | None = None
    delta: float | None = None


class BenchmarkSummary(_Part):
    status: str | None = None
    batch: int | None = None
    p50_ms: float | None = None
    speedup: float | None = None
    machine_id: str | None = None
    precision: str | None = None


class ExportSummary(_Part):
    """One export's entry in ``exports_index.json`` (``store.summarize``): what lists and filters read without
    opening every record — its one verdict included."""

    id: str
    project_id: str
    experiment_id: str
    checkpoint: str
    format: str
    status: Status
    created_at: str
    finished_at: str | None = None
    output_size_mb: float | None = None
    task: str | None = None
    architecture: str | None = None
    checkpoint_sha256: str | None = None
    checkpoint_path: str | None = None
    validation: ValidationSummary = Field(default_factory=ValidationSummary)
    evaluation: EvaluationSummary | None = None
    benchmark: BenchmarkSummary | None = None
    verdict: str | None = None  # None in entries written before the one verdict: read from validation then
    gate: str | None = None
    reason: str | None = None

    @property
    def active(self) -> bool:
        return self.status in ACTIVE

    @property
    def busy(self) -> bool:
        """The export or its latest benchmark is still going."""
        return self.active or (self.benchmark is not None and self.benchmark.status in ("queued", "running"))


def migrate(data: dict[str, Any]) -> dict[str, Any]:
    """Bring a record of any earlier schema version to ``SCHEMA_VERSION``.

    Version 1 (no ``schema_version``) had the same fields, some of them absent or ``null`` where
    this model has defaults; null collections become empty ones.
    """
    data = dict(data)
    if data.get("schema_version", 1) == 1:
        for key in ("files", "warnings"):
            data[key] = data.get(key) or []
        for key in ("options", "timings_s", "environment"):
            data[key] = data.get(key) or {}
        data["model"] = data.get("model") or {}
        data["progress"] = data.get("progress") or {}
        data["schema_version"] = SCHEMA_VERSION
    return data
