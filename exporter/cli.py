"""``python -m exporter``: formats, demo, list, export (docs/contracts.md: CLI).

Exit codes: 0 success; 1 the export failed or its validation did not pass; 2 bad arguments.
Errors print one line on stderr; ``--json`` keeps stdout pure JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, Any

from exporter.errors import ExportError, UsageError

if TYPE_CHECKING:
    from exporter.record import ExportRecord


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line on stderr, exit 2
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (kept separate so ``--help`` imports nothing heavy)."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--workspace", help="workspace root (default: $AISTUDIO_WORKSPACE or ./workspace)")
    common.add_argument("--json", action="store_true", help="print JSON on stdout")
    parser = _Parser(prog="python -m exporter",
                     description="AI Studio Export: checkpoints → validated deployable files.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    formats = sub.add_parser("formats", parents=[common], help="list export formats and their availability")
    formats.add_argument("--task", help="also say which formats cannot carry this task's models, and why")
    demo = sub.add_parser("demo", parents=[common], help="build the demo workspace (trains small models)")
    demo.add_argument("--force", action="store_true", help="rebuild projects that already exist")
    demo.add_argument("--project", action="append", dest="projects", metavar="ID",
                      help="build only this demo project (repeatable; default: all)")
    demo.add_argument("--seed", type=int, default=0,
                      help="seed of the weights and scenes (default 0: the demo the docs' figures come from)")
    demo.add_argument("--threads", type=int, default=None,
                      help="train on this many threads (trained weights differ with it, as between CPUs)")
    listing = sub.add_parser("list", parents=[common], help="list projects, experiments or exports")
    listing.add_argument("what", choices=("projects", "experiments", "exports"))
    listing.add_argument("--project", help="only this project")
    _export_parser(sub, common)
    _import_parser(sub, common)
    evaluate = sub.add_parser("evaluate", parents=[common],
                              help="evaluate an export on its project's labelled set (data/val) against PyTorch")
    evaluate.add_argument("export_id")
    evaluate.add_argument("--max-images", type=int, help="labelled images used at most (default: the export's, 500)")
    evaluate.add_argument("--max-metric-drop", type=float,
                          help="largest allowed drop of the primary metric (default: the export's, 0.01)")
    diagnose = sub.add_parser("diagnose", parents=[common],
                              help="where an export diverges from its reference, layer by layer")
    diagnose.add_argument("export_id")
    bench = sub.add_parser("benchmark", parents=[common],
                           help="time an export in its runtime beside PyTorch eager (latency, throughput, memory)")
    bench.add_argument("export_id")
    _benchmark_flags(bench)
    every = sub.add_parser("export-all", parents=[common],
                           help="export an experiment to every format × precision its task can take, then compare")
    every.add_argument("--project", required=True)
    every.add_argument("--experiment", required=True)
    every.add_argument("--checkpoint", default="best", choices=("best", "last"))
    every.add_argument("--no-benchmark", action="store_true", help="export, validate and evaluate only")
    every.add_argument("--formats", help="only these formats, e.g. onnx,pt2,litert (default: every format)")
    _benchmark_flags(every)
    _deploy_parsers(sub, common)
    _passport_parsers(sub, common)
    data = sub.add_parser("data", help="labelled validation sets (data/val) of a project")
    data_sub = data.add_subparsers(dest="data_command", required=True, parser_class=_Parser)
    add = data_sub.add_parser("add", parents=[common],
                              help="check a folder or .zip in the task's layout and make it the project's data/val")
    add.add_argument("path", help="a folder or a .zip in the project's task layout (docs/evaluation.md)")
    add.add_argument("--project", required=True)
    from exporter.jobs.kinds import add_worker_arguments

    add_worker_arguments(sub.add_parser("worker", parents=[common], help=argparse.SUPPRESS))
    return parser


def _export_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    from exporter.formats import DEFAULT_FORMAT
    from exporter.verdict import RULE

    export = sub.add_parser("export", parents=[common], help="export a checkpoint and validate it",
                            description=f"Export a checkpoint, validate it against PyTorch and evaluate it on the "
                                        f"project's labelled set. {RULE} Exit 0 passed, 1 not passed, 2 bad input.")
    export.add_argument("--project", required=True)
    export.add_argument("--experiment", required=True)
    export.add_argument("--checkpoint", default="best", choices=("best", "last"))
    export.add_argument("--format", default=DEFAULT_FORMAT)
    export.add_argument("--opset", dest="opset_version", help="ONNX opset (default 17)")
    export.add_argument("--input-shape", help="N,C,H,W (default: 1 and the checkpoint's input_size)")
    export.add_argument("--no-dynamic-batch", action="store_true", help="fix the batch axis")
    export.add_argument("--no-simplify", action="store_true", help="skip onnxsim")
    export.add_argument("--tolerance",
                        help="allowed diff, scaled by max(1, |output|) (default: 1e-4 fp32, 1e-2 fp16, 5e-2 int8)")
    export.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                        help="any format/task option, e.g. exporter=dynamo (repeatable)")


def _deploy_parsers(sub: Any, common: argparse.ArgumentParser) -> None:
    deploy = sub.add_parser("deploy", parents=[common], help="write a deploy bundle: Triton, OpenVINO Model Server, "
                            "KServe, a server of its own", description="Write a deploy bundle for a completed export, "
                            "one folder per target. A target the format cannot take is refused with the reason. "
                            "Exit 0 written, 2 bad input or a refused target.")
    deploy.add_argument("export_id")
    deploy.add_argument("--target", default="all", help="triton, ovms, kserve, server, or all (default; refused "
                        "targets are listed), comma-separated")
    deploy.add_argument("--out", help="a new folder (default: ./deploy-EXPORT_ID)")
    serve = sub.add_parser("serve", parents=[common], help="serve an export here: Open Inference Protocol + /predict",
                           description="Start the export's bundle server on this machine until Ctrl-C.")
    serve.add_argument("export_id")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--host", default="127.0.0.1", help="127.0.0.1 (default) or 0.0.0.0 to open it")


def _passport_parsers(sub: Any, common: argparse.ArgumentParser) -> None:
    verify = sub.add_parser("verify", parents=[common], help="check a signed export: signature, every file, the "
                            "passport; --rerun the golden samples", description="Verify an export folder, a download "
                            "with its passport (.zip) or a deploy bundle. Exit 0 valid, 1 not (the file or field that "
                            "differs is named), 2 bad input.")
    verify.add_argument("path", help="an export folder, a downloaded .zip or a deploy bundle (folder or .zip)")
    verify.add_argument("--public-key", help="the signer's public key (PEM); default: this workspace's")
    verify.add_argument("--rerun", action="store_true", help="also run the golden inputs through the file in its "
                        "own runtime and compare with the golden outputs")
    reproduce = sub.add_parser("reproduce", parents=[common], help="export again from a passport and say whether it "
                               "reproduces", description="Re-export from the passport's checkpoint and options; "
                               "exit 0 reproduced (byte-identical, or the same graph and outputs within tolerance), "
                               "1 not (the first difference named), 2 bad input (checkpoint gone or changed).")
    reproduce.add_argument("path", help="an export folder or a download with its passport")
    sub.add_parser("signing-key", parents=[common], help="print the public key this workspace signs exports with")


def _benchmark_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--batch", dest="batch_sizes", help="batch sizes to time, e.g. 1,8 (default: 1 and 8 when the "
                        "batch is dynamic, else the file's batch)")
    parser.add_argument("--threads", type=int, help="CPU threads for both runtimes (default: physical cores)")
    parser.add_argument("--seconds", type=float, help="timed seconds per runtime and batch size (default 2)")


def _benchmark_settings(args: argparse.Namespace) -> dict[str, Any]:
    return {"batch_sizes": args.batch_sizes, "threads": args.threads, "seconds": args.seconds}


def _import_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    imp = sub.add_parser("import", parents=[common], help="import a checkpoint as a new experiment")
    imp.add_argument("file", help="a .ckpt / .pt / .pth file (Lightning, state dict, or {'model': ...}); a "
                     "transformers / segmentation_models_pytorch save_pretrained folder or zip; or a program without "
                     "code: a .pt2 (torch.export.save) or a TorchScript file (torch.jit.save)")
    imp.add_argument("--project", required=True)
    imp.add_argument("--task", help="default: from the file, else the project's, else classification")
    imp.add_argument("--architecture", help="torchvision name, timm/<name> or smp/<Arch>; default: detected from "
                     "the weights or named by config.json")
    imp.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                     help="build option of an smp/<Arch> state dict: encoder=<name>, encoder_depth=<n>")
    imp.add_argument("--model-code", metavar="FILE.py:Class|package.module:Class",
                     help="your own model class: the file (or the package, from --code-root) is copied into the "
                     "project and the checkpoint, and imported by every job that builds the model")
    imp.add_argument("--model-kwargs", metavar="JSON", help="keyword arguments of the class (default: a Lightning "
                     "checkpoint's saved hyper-parameters that its __init__ takes)")
    imp.add_argument("--code-root", help="the folder --model-code's path or package is found in (default: here)")
    imp.add_argument("--num-classes", type=int, help="default: from the file or the head's shape")
    imp.add_argument("--class-names", help="comma-separated class names (default: from the file)")
    imp.add_argument("--normalization", help="imagenet, none (the model normalises itself) or JSON "
                     "{\"mean\": [...], \"std\": [...]} (default: from the file, else imagenet)")
    imp.add_argument("--input-size", help="C,H,W (default: from the file, else 3,224,224)")
    imp.add_argument("--name", help="experiment name (default: the file's name)")
    imp.add_argument("--create-project", action="store_true", help="create the project if it does not exist")
    imp.add_argument("--project-name", help="display name of a created project")


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the process exit code."""
    args = build_parser().parse_args(argv)
    try:
        if args.command in ("list", "export", "evaluate", "diagnose", "benchmark", "export-all"):
            from exporter.jobs import recover_interrupted

            recover_interrupted(_workspace(args))
        return COMMANDS[args.command](args)
    except ExportError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130


def _workspace(args: argparse.Namespace):
    from exporter.workspace import Workspace

    return Workspace(args.workspace)


def _emit(args: argparse.Namespace, data: Any, lines: list[str]) -> None:
    if args.json:
        print(json.dumps(data, indent=2, default=str))
    else:
        print("\n".join(lines) if lines else "(none)")


def cmd_formats(args: argparse.Namespace) -> int:
    from exporter.formats import get_available_formats

    rows = get_available_formats(args.task)
    _emit(args, rows, [f"{r['name']:<12} {r['display_name']:<17} "
                       f"{'available' if r['available'] else 'unavailable: ' + r['reason']}" for r in rows])
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from demo import build_demo

    ws = _workspace(args)
    built = build_demo(ws.root, force=args.force, projects=args.projects, seed=args.seed, threads=args.threads,
                       progress=lambda msg, frac: print(f"[{frac:4.0%}] {msg}", file=sys.stderr))
    _emit(args, {"workspace": str(ws.root), "built": built},
          [f"Demo workspace at {ws.root}: built {', '.join(built) or 'nothing (already there; use --force)'}"])
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from exporter import queries

    ws = _workspace(args)
    projects = [ws.project(args.project)] if args.project else ws.projects()
    if args.what == "projects":
        rows = [p.describe() for p in projects]
        lines = [f"{r['id']:<28} {str(r.get('task')):<20} {len(r['experiments'])} experiment(s)  {r.get('name', '')}"
                 for r in rows]
    elif args.what == "experiments":
        rows = [e.describe() for p in projects for e in p.experiments()]
        lines = [f"{r['project_id']:<24} {r['id']:<26} {str(r['architecture']):<18} "
                 f"checkpoints: {', '.join(c['name'] for c in r['checkpoints'])}  metrics: {r['metrics']}"
                 for r in rows]
    else:
        summaries = queries.exports(ws, args.project)
        rows = [s.model_dump(mode="json") for s in summaries]
        lines = [f"{s.id}  {s.created_at}  {s.project_id}/{s.experiment_id}:{s.checkpoint}  {s.format}  {s.status}  "
                 f"verdict={s.verdict or s.validation.verdict}" for s in summaries]
    _emit(args, rows, lines)
    return 0


def export_options(args: argparse.Namespace) -> dict[str, Any]:
    """The ``options`` dict from the export flags plus ``--option KEY=VALUE`` pairs."""
    from exporter.options import parse_key_values

    options: dict[str, Any] = parse_key_values(args.option)
    flags = {"opset_version": args.opset_version, "input_shape": args.input_shape,
             "tolerance": args.tolerance,
             "dynamic_batch": False if args.no_dynamic_batch else None,
             "simplify": False if args.no_simplify else None}
    for key, value in flags.items():
        if value is not None:
            if key in options:
                raise UsageError(f"{key} is given both as a flag and as --option.")
            options[key] = value
    return options


def cmd_export(args: argparse.Namespace) -> int:
    from exporter.jobs import export_and_wait
    from exporter.service import ExportRequest

    request = ExportRequest(args.project, args.experiment, args.checkpoint, args.format, export_options(args))
    record = export_and_wait(_workspace(args), request)
    ok = record.verdict == "passed"
    if args.json:
        print(json.dumps(record.to_json(), indent=2))
    else:
        print(summary_line(record))
        if record.validation and record.validation.referee:
            print(f"float64 referee: {record.validation.referee}")
        if record.evaluation and record.evaluation.status == "completed":
            print(evaluation_line(record))
        if record.accuracy_search:
            print("\n".join(search_lines(record.accuracy_search)))
        if record.diagnosis:
            print("\n".join(diagnosis_lines(record.diagnosis)))
    if not ok:  # an unverified file was written: it is only not proven
        print(f"{'note' if record.verdict == 'unverified' else 'error'}: {failure_reason(record)}", file=sys.stderr)
    return 0 if ok else 1


def cmd_evaluate(args: argparse.Namespace) -> int:
    from exporter.service import evaluate_export

    record = evaluate_export(_workspace(args), args.export_id,
                             {"max_images": args.max_images, "max_metric_drop": args.max_metric_drop})
    if args.json:
        print(json.dumps(record.to_json(), indent=2))
    else:
        print(evaluation_line(record))
    if record.evaluation.verdict != "passed":
        print(f"error: evaluation {record.evaluation.verdict}: {record.evaluation.reason}", file=sys.stderr)
    return 1 if record.verdict == "failed" else 0


def cmd_diagnose(args: argparse.Namespace) -> int:
    from exporter.service import diagnose_export

    record = diagnose_export(_workspace(args), args.export_id)
    _emit(args, record.to_json(), diagnosis_lines(record.diagnosis))
    return 0


def diagnosis_lines(diagnosis: Any) -> list[str]:
    """A diagnosis as its reading and its top layers (op, module path, error, error added)."""
    if diagnosis.status == "failed":
        return [f"🔍 diagnosis failed: {diagnosis.error.message}"]
    lines = [f"🔍 {diagnosis.reading}"]
    if diagnosis.available:
        mapping = diagnosis.mapping
        mapped = (f"; {mapping['mapped']} of {mapping['nodes']} nodes mapped to modules "
                  f"({mapping['conv_mapped']} of {mapping['conv']} Conv)" if mapping else "")
        lines.append(f"   {diagnosis.comparison}: {len(diagnosis.layers)} layers compared{mapped}")
        lines += [f"   {row['error']:9.2e} (+{row['added']:.2e})  {row['op_type']:<14} {row['node']}"
                  + (f"  ← {row['module']}" if row.get("module") else "") for row in diagnosis.top]
    return lines


def search_lines(search: Any) -> list[str]:
    """accuracy=auto's rounds, one line each."""
    lines = [f"🎯 accuracy=auto {'met' if search.met else 'did not meet'} the gate ({search.gate}) in "
             f"{search.duration_s:.1f}s; the file is round {search.chosen} (fp32 graph: {search.float_size_mb:.2f} MB)"]
    for row in search.rounds:
        metric = f"drop {row['drop']:+.4f}" if row.get("drop") is not None else f"agreement {row.get('agreement')}"
        lines.append(f"   round {row['round']}: {row['kept_count']:3d} nodes in float · validation {row['verdict']} · "
                     f"{metric} · {row['size_mb']:.2f} MB{'  ✓' if row['holds'] else ''}")
    return lines


def evaluation_line(record: ExportRecord) -> str:
    """One human line for an evaluation: primary metric of PyTorch and of the file, the verdict."""
    e = record.evaluation
    from exporter.tasks import metric_label

    mark = {"passed": "✅", "failed": "❌"}.get(str(e.verdict), "⚠️")
    name = e.primary_metric
    return (f"{mark} {record.id} on {e.dataset.get('images')} labelled images: {metric_label(record.model.task, name)} "
            f"PyTorch {e.pytorch.get(name, float('nan')):.4f} → {record.format} {e.file.get(name, float('nan')):.4f} "
            f"(drop {e.drop:+.4f}, allowed {e.max_metric_drop:g}) — {e.verdict} in {e.duration_s:.1f}s"
            + (" (PyTorch from cache)" if getattr(e, "pytorch_cached", False) else ""))


def summary_line(record: ExportRecord) -> str:
    """One human line for a finished export (✅ / ❌ / ⚠️)."""
    seconds = sum(record.timings_s.values())
    if record.status != "completed" or record.validation is None:
        return f"❌ {record.id} failed after {seconds:.1f}s: {failure_reason(record)}"
    v, outcome = record.validation, record.decide()
    mark = {"passed": "✅", "failed": "❌"}.get(outcome.verdict, "⚠️")
    checked = (f"max diff {v.max_diff:.2e} at batch sizes {v.batch_sizes}" if v.max_diff is not None
               else v.messages[0] if v.messages else "not run")
    decided = f" — {outcome.verdict}, decided by {outcome.gate}" if outcome.gate not in (None, "validation") else ""
    return (f"{mark} {record.id} exported in {seconds:.1f}s: {record.output_file} "
            f"({record.output_size_mb:.1f} MB); validation {v.verdict} ({checked}){decided}")


def failure_reason(record: ExportRecord) -> str:
    """Why an export did not succeed, in one line."""
    if record.error:
        return f"{record.error.type} at {record.error.stage}: {record.error.message}"
    outcome = record.decide()
    if outcome.gate and outcome.gate.startswith("evaluation"):
        return f"{outcome.verdict} by the evaluation gate: {outcome.reason}" + (
            f" (evidence: {outcome.evidence})" if outcome.evidence else "")
    return outcome.reason


def cmd_benchmark(args: argparse.Namespace) -> int:
    from exporter.service import benchmark_export

    record = benchmark_export(_workspace(args), args.export_id, _benchmark_settings(args))
    entry = record.benchmarks[-1]
    if args.json:
        print(json.dumps(record.to_json(), indent=2))
    else:
        print("\n".join(benchmark_lines(record.id, entry)))
    if entry.status != "completed":
        print(f"error: benchmark failed: {entry.error.type}: {entry.error.message}", file=sys.stderr)
        return 1
    return 0


def benchmark_lines(export_id: str, entry: Any) -> list[str]:
    """A benchmark as a small table: per runtime load, first run, memory, and per batch p50/p90/p99 and img/s."""
    if entry.status != "completed":
        return [f"❌ benchmark of {export_id} {entry.status}"]
    machine = entry.machine
    lines = [f"⏱ {export_id} on {machine.get('cpu')} ({machine.get('physical_cores')} cores, {entry.threads} threads"
             f"{', ' + machine['gpu'] if machine.get('gpu') else ''}) in {entry.duration_s:.1f}s"]
    for runtime, result in entry.results.items():
        settings = result.get("settings") or {}
        lines.append(f"  {runtime:<8} {settings.get('runtime')} at {settings.get('precision')}: load "
                     f"{result['load_s']:.2f}s, first run {result['first_inference_s'] * 1e3:.1f} ms, peak memory "
                     f"+{result['peak_rss_growth_mb']:.0f} MB")
        for row in result["batches"]:
            lines.append(f"           batch {row['batch']:>3}: p50 {row['p50_ms']:.2f} · p90 {row['p90_ms']:.2f} · "
                         f"p99 {row['p99_ms']:.2f} ms · {row['throughput_ips']:.1f} img/s ({row['runs']} runs)")
    lines.append("  file vs PyTorch eager (p50): " + ", ".join(
        f"{x:.2f}× at batch {b}" for b, x in entry.speedup_vs_pytorch.items()))
    if entry.deploy_check:
        check = entry.deploy_check
        evaluation = check.get("evaluation") or {}
        lines.append(f"  deployed at {check['precision']} (validated at another precision): validation "
                     f"{check['validation']['verdict']} (max diff {check['validation']['max_diff']:.2e})"
                     + (f", {evaluation.get('primary_metric')} drop {evaluation['drop']:+.4f}"
                        if evaluation.get("drop") is not None else ""))
    return lines


def cmd_export_all(args: argparse.Namespace) -> int:
    import time

    from exporter.jobs import refresh, start_export_all
    from exporter.tradeoffs import compare_rows

    ws = _workspace(args)
    formats = [name.strip() for name in args.formats.split(",") if name.strip()] if args.formats else None
    started = start_export_all(ws, args.project, args.experiment, args.checkpoint,
                               None if args.no_benchmark else _benchmark_settings(args), formats)
    for skip in started["skipped"]:
        print(f"skipped {skip['format']} {skip['variant']}: {skip['reason']}", file=sys.stderr)
    pending = {r.id for r in started["started"]}
    print(f"started {len(pending)} exports: {', '.join(sorted(pending))}", file=sys.stderr)
    records = {}
    while pending:
        time.sleep(1.0)
        for export_id in sorted(pending):
            record = refresh(ws, export_id)
            if not record.active and not any(b.status in ("queued", "running") for b in record.benchmarks):
                pending.discard(export_id)
                records[export_id] = record
                print(f"{record.format} {record.options.get('precision') or ''}: {summary_line(record)}",
                      file=sys.stderr)
    rows = compare_rows([records[r.id] for r in started["started"]])
    _emit(args, {"exports": rows, "skipped": started["skipped"]}, [compare_line(r) for r in rows])
    return 0 if all(r.status == "completed" for r in records.values()) else 1


def compare_line(row: dict[str, Any]) -> str:
    """One export as a line of the comparison table."""
    def num(value: Any, form: str) -> str:
        width = int("".join(c for c in form.split(".")[0] if c.isdigit()) or 0)
        return f"{'—':>{width}}" if value is None else format(value, form)

    from exporter.verdict import change_text

    return (f"{row['id']}  {row['display_format']:<12} {row['variant']:<13} {row['verdicts']:<12} "
            f"{num(row['size_mb'], '8.1f')} MB  Δ {change_text(row['delta']):>9}  p50 {num(row['p50_ms'], '8.2f')} ms  "
            f"{num(row['throughput_ips'], '8.1f')} img/s  ×{num(row['speedup'], '.2f')} vs eager"
)


def cmd_import(args: argparse.Namespace) -> int:
    from pathlib import Path

    from exporter.importer import (
        ImportRequest,
        import_checkpoint,
        parse_class_names,
        parse_input_size,
        parse_json_object,
        parse_normalization,
    )
    from exporter.options import parse_key_values

    request = ImportRequest(args.project, task=args.task, architecture=args.architecture,
                            num_classes=args.num_classes, input_size=parse_input_size(args.input_size),
                            name=args.name, create_project=args.create_project, project_name=args.project_name,
                            options=parse_key_values(args.option), class_names=parse_class_names(args.class_names),
                            normalization=parse_normalization(args.normalization), model_code=args.model_code,
                            model_kwargs=parse_json_object(args.model_kwargs, "--model-kwargs"),
                            code_root=args.code_root, allow_code=True)  # from the CLI, running your code is yours
    source = Path(args.file)
    if not source.exists():
        from exporter.errors import UsageError

        raise UsageError(f"No such file: {source}")
    experiment = import_checkpoint(_workspace(args), request, source, filename=source.name)
    model = experiment["model"]
    classes = f" · {model['num_classes']} classes" if model.get("num_classes") else ""
    _emit(args, experiment, [f"Imported {source.name} into {args.project}/{experiment['id']}: {model['task']} · "
                             f"{model['architecture']}{classes} · input {model.get('input_size')}"])
    return 0


def cmd_data(args: argparse.Namespace) -> int:
    from pathlib import Path

    from exporter.dataset_attach import attach_dataset

    info = attach_dataset(_workspace(args), args.project, Path(args.path))
    _emit(args, info, [f"{'Replaced' if info['replaced'] else 'Attached'} {args.project}/{info['path']}: "
                       f"{info['images']} images ({info['layout']}) · {info['digest']}"])
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    from exporter.jobs.kinds import from_args

    job = from_args(args)
    return job.exit_code(job.handle(_workspace(args)))


def cmd_deploy(args: argparse.Namespace) -> int:
    from pathlib import Path

    from exporter.deploy import parse_targets, write_bundle

    targets = parse_targets(args.target)
    out = Path(args.out or f"deploy-{args.export_id}")
    result = write_bundle(_workspace(args), args.export_id, targets, out, strict="all" not in args.target)
    lines = [f"📦 {args.export_id} as {result['model_name']} in {out}"]
    for target, written in result["targets"].items():
        lines.append(f"  {target:<7} refused: {written['refused']}" if "refused" in written else
                     f"  {target:<7} {written['path']} ({len(written['files'])} files)")
    _emit(args, result, lines)
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    import signal

    from exporter.deploy import live

    def interrupted(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    # Ctrl-C and SIGTERM (docker stop, systemd) stop it, even where the parent started it with SIGINT ignored
    # (Python then installs no KeyboardInterrupt handler of its own).
    signal.signal(signal.SIGINT, interrupted)
    signal.signal(signal.SIGTERM, interrupted)
    server = live.start(_workspace(args), args.export_id, args.port, args.host)
    print(f"Serving {args.export_id} as {server.model_name} on {server.url} — POST /predict, /v2/models/"
          f"{server.model_name}/infer (Ctrl-C stops)", flush=True)
    try:
        server.process.wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from pathlib import Path

    from exporter.errors import UsageError
    from exporter.verify import verify

    key = None
    if args.public_key:
        try:
            key = Path(args.public_key).read_bytes()
        except OSError as exc:
            raise UsageError(f"Cannot read the public key {args.public_key}: {exc.strerror}") from None
    result = verify(Path(args.path), key, args.rerun, _workspace(args).root)
    lines = [f"{'✅ valid' if result['valid'] else '❌ NOT valid'}: {args.path} (key {result['key_fingerprint']})"]
    for folder in result["folders"]:
        lines.append(f"  {folder['folder']}")
        lines += [f"    {'✓' if c['passed'] else '✗'} {c['check']}: {c['detail']}" for c in folder["checks"]]
    _emit(args, result, lines)
    return 0 if result["valid"] else 1


def cmd_reproduce(args: argparse.Namespace) -> int:
    from pathlib import Path

    from exporter.reproduce import reproduce

    result = reproduce(_workspace(args), Path(args.path))
    _emit(args, result, [f"{'✅' if result['reproduced'] else '❌'} {result['verdict']}: {result['reason']}",
                         f"  again as {result['export_id']}"])
    return 0 if result["reproduced"] else 1


def cmd_signing_key(args: argparse.Namespace) -> int:
    from exporter.passport import fingerprint, signing_key, workspace_public_key

    pem = workspace_public_key(_workspace(args).root)
    if args.json:
        print(json.dumps({"public_key": pem.decode(), "fingerprint": fingerprint(signing_key(_workspace(args).root))}))
    else:
        print(pem.decode(), end="")
    return 0


COMMANDS = {"formats": cmd_formats, "demo": cmd_demo, "list": cmd_list, "export": cmd_export, "import": cmd_import,
            "evaluate": cmd_evaluate, "diagnose": cmd_diagnose, "benchmark": cmd_benchmark,
            "export-all": cmd_export_all, "data": cmd_data, "deploy": cmd_deploy, "serve": cmd_serve,
            "verify": cmd_verify, "reproduce": cmd_reproduce, "signing-key": cmd_signing_key,
            "worker": cmd_worker}
