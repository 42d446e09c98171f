"""The whole model zoo through the real export path: ``make matrix`` (not part of ``make test``).

    python -m bench.matrix [--only PATTERN] [--case-timeout SECONDS]

Every torchvision builder of classification (≤ 150 M parameters), object detection, instance and
semantic segmentation, the timm models the importer detects and the model families (``bench.matrix_families``:
every smp architecture over two encoders, the transformers classes we import), each at the task's usual input size
and at a small one, written as a checkpoint with lively random weights (He-normal, like
``testkit.models.lively_init``; Mask2Former as transformers initialises it: ``matrix_families.OWN_INIT``) and
exported to ONNX fp32 by the same ``export_checkpoint`` the CLI runs: validation at batch 1 and 2, the float64
referee when a file misses the tolerance.

Cases run in a worker process, one after another (each export uses both cores); a case that kills its
worker or runs past ``--case-timeout`` is recorded as failed and the next worker carries on. Writes
``bench/results/matrix.json`` and ``matrix.md``; with ``--only`` it writes ``matrix-only.*`` instead, so
a quick run never replaces the full table.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from bench.matrix_families import family_cases, write_family_checkpoint

RESULTS = Path(__file__).resolve().parent / "results"
MAX_PARAMS = 150_000_000
CLASSES = {"classification": 10, "object_detection": 5, "instance_segmentation": 5, "segmentation": 5}
SMALL = {"classification": 64, "object_detection": 320, "instance_segmentation": 320, "segmentation": 128}
DETECTION_USUAL = {"ssd300_vgg16": 300, "ssdlite320_mobilenet_v3_large": 320,
                   "fasterrcnn_mobilenet_v3_large_320_fpn": 320}
CASE_TIMEOUT_S = 900
GAIN = {"object_detection": 0.5, "instance_segmentation": 0.5}  # He-normal at gain 1 through a ResNet-50 with
# frozen BatchNorm reaches features of ~3500: every box delta explodes and nothing is detected
LOW_SCORE = 0.001  # random-weight detectors score every box low: at the default 0.05 they detect nothing


@dataclass(frozen=True)
class Case:
    """One architecture at one input size."""

    task: str
    architecture: str
    size: int
    params_m: float | None

    @property
    def key(self) -> str:
        return f"{self.task}/{self.architecture}@{self.size}"


def cases() -> list[Case]:
    """Every case of the matrix, classification first (by size), then the other tasks."""
    from exporter.models.classification import TIMM_PREFIX
    from exporter.models.recognize import TIMM_CANDIDATES, _timm_has
    from exporter.tasks import get_task

    found = []
    for name in get_task("classification").architectures():
        params = _torchvision_params(name)
        if params is None or params <= MAX_PARAMS:
            usual = 299 if name == "inception_v3" else 224
            found += [Case("classification", name, usual, _m(params)), Case("classification", name, 64, _m(params))]
    for name in TIMM_CANDIDATES:
        if _timm_has(name):
            usual = _timm_size(name)
            found += [Case("classification", TIMM_PREFIX + name, usual, None),
                      Case("classification", TIMM_PREFIX + name, 64, None)]
    for task, usual in (("object_detection", 800), ("instance_segmentation", 800), ("segmentation", 520)):
        for name in get_task(task).architectures():
            size = DETECTION_USUAL.get(name, usual)
            found += [Case(task, name, size, _m(_torchvision_params(name)))]
            if SMALL[task] != size:
                found.append(Case(task, name, SMALL[task], _m(_torchvision_params(name))))
    return found + family_cases(Case)


def _torchvision_params(name: str) -> int | None:
    import torchvision

    try:
        weights = torchvision.models.get_model_weights(name)
    except (ValueError, KeyError):
        return None  # our own compositions (fasterrcnn_resnet18_fpn) have no published weights
    return next(iter(weights)).meta.get("num_params")


def _timm_size(name: str) -> int:
    import timm

    cfg = timm.get_pretrained_cfg(name)
    size = getattr(cfg, "input_size", None) if cfg else None
    return int(size[-1]) if size else 224


def _m(params: int | None) -> float | None:
    return round(params / 1e6, 1) if params else None


def run_case(case: Case, root: Path) -> dict:
    """Write the checkpoint, export it as a user would, and condense the record into one row."""
    from exporter import ExportRequest, Workspace, export_checkpoint
    from exporter.cli import failure_reason

    started = time.perf_counter()
    try:
        params = _write_checkpoint(case, root)
    except Exception as exc:  # noqa: BLE001 - a builder that cannot even be built at this size
        from exporter.errors import one_line

        return _row(case, "refused", started, reason=f"cannot build at {case.size}px: {one_line(exc, 300)}")
    options = {"score_threshold": LOW_SCORE} if case.task in ("object_detection", "instance_segmentation") else {}
    record = export_checkpoint(Workspace(root), ExportRequest("proj", "exp", options=options))
    v = record.validation
    if record.status != "completed":
        refused = record.error.type in ("InvalidOptionError", "ArchitectureError") and record.error.stage == "build"
        return _row(case, "refused" if refused else "failed", started, params=params, reason=failure_reason(record))
    refereed = [o for o in v.outputs if o.referee]
    referee = {o.name: {"torch_float32": o.referee.torch_float32_error, "file": o.referee.file_error}
               for o in refereed}
    return _row(case, v.verdict, started, params=params, max_diff=v.max_diff,
                allowed=min((o.allowed_abs_diff for o in v.outputs), default=None), referee=referee or None,
                referee_note=v.referee, warnings=record.warnings, exporter=record.model.exporter,
                export_s=round(sum(record.timings_s.values()), 1),
                reason=None if v.verdict == "passed" else failure_reason(record))


def _row(case: Case, verdict: str, started: float, **fields) -> dict:
    return {**asdict(case), "key": case.key, "verdict": verdict, "seconds": round(time.perf_counter() - started, 1),
            **fields}


def _write_checkpoint(case: Case, root: Path) -> float:
    """A Lightning checkpoint of ``case`` with lively random weights; returns its parameter count (millions)."""
    from exporter.models import ModelSpec
    from exporter.tasks import get_task
    from testkit.models import lively_init, write_experiment

    if case.architecture.startswith(("smp/", "hf/")):
        return write_family_checkpoint(case.task, case.architecture, case.size, root)
    hparams = {"task": case.task, "architecture": case.architecture, "num_classes": CLASSES[case.task],
               "input_size": [3, case.size, case.size]}
    gain = GAIN.get(case.task, 1.0)
    model = lively_init(get_task(case.task).build(ModelSpec.resolve(hparams, {})), gain=gain)
    state = {f"model.{k}": v for k, v in model.state_dict().items()}
    write_experiment(root, state, hparams=hparams, task=case.task)
    return round(sum(p.numel() for p in model.parameters()) / 1e6, 1)


def worker(cases_file: Path, out_file: Path) -> None:
    """Run the cases of ``cases_file`` in order, appending one JSON row per case to ``out_file``."""
    import shutil
    import warnings

    warnings.simplefilter("ignore")
    for item in json.loads(cases_file.read_text()):
        case = Case(**item)
        root = Path(tempfile.mkdtemp(prefix="aistudio-matrix-"))
        try:
            row = run_case(case, root)
        except Exception as exc:  # noqa: BLE001 - a bug in a case must not end the matrix
            from exporter.errors import one_line

            row = _row(case, "failed", time.perf_counter(), reason=f"matrix error: {one_line(exc, 300)}")
        finally:
            shutil.rmtree(root, ignore_errors=True)
        with out_file.open("a") as fh:
            fh.write(json.dumps(row) + "\n")
        print(f"{row['verdict']:>12}  {row['key']}  {row['seconds']}s", flush=True)


def run_all(selected: list[Case], case_timeout: float) -> list[dict]:
    """Every case through worker processes; a worker that dies or stalls costs only its current case."""
    work = Path(tempfile.mkdtemp(prefix="aistudio-matrix-run-"))
    out = work / "rows.jsonl"
    out.touch()
    pending = list(selected)
    while pending:
        (work / "cases.json").write_text(json.dumps([asdict(c) for c in pending]))
        proc = subprocess.Popen([sys.executable, "-m", "bench.matrix", "--worker", str(work / "cases.json"), str(out)],
                                cwd=Path(__file__).resolve().parent.parent)
        done, last_change = _rows(out), time.monotonic()
        while proc.poll() is None:
            time.sleep(2)
            if len(_rows(out)) != len(done):
                done, last_change = _rows(out), time.monotonic()
            elif time.monotonic() - last_change > case_timeout:
                proc.kill()
                proc.wait()
        finished = {row["key"] for row in _rows(out)}
        pending = [c for c in pending if c.key not in finished]
        if pending and proc.returncode != 0:  # the first pending case killed or stalled its worker
            stalled = pending.pop(0)
            why = (f"ran past {case_timeout:.0f}s" if proc.returncode == -9 else
                   f"the worker process died (exit code {proc.returncode}: out of memory or a native crash)")
            with out.open("a") as fh:
                fh.write(json.dumps(_row(stalled, "failed", time.perf_counter(), reason=why)) + "\n")
    rows = _rows(out)
    out.unlink()
    (work / "cases.json").unlink(missing_ok=True)
    work.rmdir()
    return rows


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def markdown(rows: list[dict], wall_s: float, rerun: list[str] | None = None) -> str:
    """The summary per task and verdict, every case not passed with its reason, then the full table."""
    lines = [f"# Model zoo matrix — ONNX fp32, validated at batch 1 and 2 ({len(rows)} cases, {wall_s / 60:.1f} min "
             "on 2 cores)", ""]
    if rerun:
        lines += [f"Re-run since (`--only … --update`): {', '.join(f'`{k}`' for k in rerun)}.", ""]
    lines += ["| task | passed | failed | refused | inconclusive |", "|---|---|---|---|---|"]
    for task in dict.fromkeys(r["task"] for r in rows):
        counts = {v: sum(1 for r in rows if r["task"] == task and r["verdict"] == v)
                  for v in ("passed", "failed", "refused", "inconclusive")}
        lines.append(f"| {task} | " + " | ".join(str(counts[v]) for v in counts) + " |")
    refereed = [r for r in rows if r.get("referee_note") and r["verdict"] == "passed"]
    lines += ["", f"**Passed on the float64 referee** ({len(refereed)}): "
              + (", ".join(f"{r['architecture']}@{r['size']}" for r in refereed) or "none"), "",
              "## Not passed", ""]
    lines += [f"- `{r['key']}` — **{r['verdict']}**: {r.get('reason') or ''}" for r in rows if r["verdict"] != "passed"]
    lines += ["", "## Every case", "", "| task | architecture | input | params (M) | verdict | max diff | "
              "float64 referee (PyTorch f32 / file) | rewrites | s |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        referee = "; ".join(f"{k}: {v['torch_float32']:.2g} / {v['file']:.2g}"
                            for k, v in (r.get("referee") or {}).items())
        diff = f"{r['max_diff']:.2g}" if r.get("max_diff") is not None else ""
        params = r.get("params") or r.get("params_m") or ""
        lines.append(f"| {r['task']} | {r['architecture']} | {r['size']} | {params} | {r['verdict']} | {diff} | "
                     f"{referee} | {len(r.get('warnings') or [])} | {r['seconds']} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", help="cases whose task/architecture@size matches this glob (or contains it)")
    parser.add_argument("--case-timeout", type=float, default=CASE_TIMEOUT_S)
    parser.add_argument("--update", action="store_true",
                        help="with --only: put the re-run cases into the full matrix.json/md instead")
    parser.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(Path(args.worker[0]), Path(args.worker[1]))
        return 0
    selected = [c for c in cases() if not args.only or fnmatch.fnmatch(c.key, args.only) or args.only in c.key]
    print(f"{len(selected)} cases", flush=True)
    started = time.perf_counter()
    rows = run_all(selected, args.case_timeout)
    order = {c.key: i for i, c in enumerate(selected)}
    rows.sort(key=lambda r: order.get(r["key"], len(order)))
    stem = "matrix-only" if args.only and not args.update else "matrix"
    RESULTS.mkdir(exist_ok=True)
    wall, rerun = time.perf_counter() - started, []
    if args.only and args.update:  # the full table, these cases replaced; its wall time stays the full run's
        full = json.loads((RESULTS / "matrix.json").read_text())
        fresh = {r["key"]: r for r in rows}
        rerun = sorted({*full.get("rerun", []), *fresh})
        rows = [fresh.pop(r["key"], r) for r in full["rows"]] + list(fresh.values())
        wall = full["wall_s"]
    (RESULTS / f"{stem}.json").write_text(json.dumps({"wall_s": round(wall, 1), "rerun": rerun, "rows": rows},
                                                     indent=1))
    (RESULTS / f"{stem}.md").write_text(markdown(rows, wall, rerun))
    print(f"wrote {RESULTS / stem}.md ({wall / 60:.1f} min)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
