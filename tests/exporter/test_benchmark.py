"""Benchmark arithmetic and bookkeeping on cases worked by hand: settings, timing statistics, the
Pareto front, the machine stamp, and a benchmark having the machine to itself."""

from __future__ import annotations

import threading
import time

import pytest

from exporter.benchmark import parse_request, time_runs
from exporter.errors import UsageError
from exporter.formats import get_format
from exporter.machine import machine_stamp, this_machine_id
from exporter.tradeoffs import fastest_within, pareto_front


def test_settings_are_checked_and_normalised():
    assert parse_request(None) == {}
    assert parse_request({"batch_sizes": "8,1,8", "threads": "2", "seconds": "0.5"}) == {
        "batch_sizes": [1, 8], "threads": 2, "seconds": 0.5}
    assert parse_request({"batch_sizes": [], "threads": None, "seconds": ""}) == {}
    for bad in ({"batch_sizes": "0"}, {"batch_sizes": "1,x"}, {"threads": 0}, {"seconds": 1000}, {"speed": 1}):
        with pytest.raises(UsageError):
            parse_request(bad)


def test_timing_statistics():
    # a clock that each run moves on by its own duration (2 warm-up runs first): the figures are exact,
    # however loaded the machine is
    durations = iter([0.004] * 2 + [0.001, 0.002, 0.003, 0.004, 0.010] + [0.001] * 100)
    now = [100.0]

    def run(_):
        now[0] += next(durations)

    row = time_runs(run, [0, 0, 0], seconds=0.0, clock=lambda: now[0])  # at least MIN_RUNS = 5 timed runs
    assert row["runs"] == 5 and row["batch"] == 3 and len(row["latencies_ms"]) == 5
    assert row["min_ms"] == pytest.approx(1.0) and row["p50_ms"] == pytest.approx(3.0)  # median of 1, 2, 3, 4, 10
    # numpy's linear percentiles of 1, 2, 3, 4, 10: p90 = 4 + 0.6 × 6 = 7.6, p99 = 4 + 0.96 × 6 = 9.76
    assert row["p90_ms"] == pytest.approx(7.6) and row["p99_ms"] == pytest.approx(9.76)
    assert row["mean_ms"] == pytest.approx(4.0) and row["throughput_ips"] == pytest.approx(3 * 5 / 0.020)

    began = now[0]  # with a time budget, runs go on until it is spent: 0.0105 s of 1 ms runs is 11 runs
    assert time_runs(run, [0], seconds=0.0105, clock=lambda: now[0])["runs"] == 11 and now[0] - began > 0.0105


def test_pareto_front_and_the_fastest_within_a_drop():
    rows = [  # latency (lower better), change (higher better)
        {"id": "a", "p50_ms": 10.0, "change": 0.0, "validation": "passed"},    # front: the most accurate
        {"id": "b", "p50_ms": 5.0, "change": -0.005, "validation": "passed"},  # front
        {"id": "c", "p50_ms": 6.0, "change": -0.02, "validation": "passed"},   # beaten by b on both
        {"id": "d", "p50_ms": 2.0, "change": -0.03, "validation": "passed"},   # front: the fastest
        {"id": "e", "p50_ms": 10.0, "change": -0.001, "validation": "passed"},  # beaten by a (same speed)
        {"id": "f", "p50_ms": None, "change": 0.0, "validation": "passed"},    # not benchmarked
        {"id": "g", "p50_ms": 1.0, "change": 0.0, "validation": "failed"},     # fastest, but failed: no choice
    ]
    assert pareto_front(rows) == pareto_front(rows[:6]) == ["d", "b", "a"]
    assert fastest_within(rows, 0.01)["id"] == "b"
    assert fastest_within(rows, 0.05)["id"] == "d"
    assert fastest_within(rows, -1) is None


def test_machine_stamp_names_this_machine():
    stamp = machine_stamp(threads=2)
    assert stamp["id"] == this_machine_id() == machine_stamp()["id"]  # threads do not change the machine
    assert stamp["cpu"] and stamp["logical_cores"] >= stamp["physical_cores"] >= 1 and stamp["threads"] == 2
    assert set(stamp["isa"]) <= {"avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "avx512_fp16",
                                 "amx_tile", "amx_bf16", "amx_int8", "neon", "asimd", "sve"}
    assert stamp["runtimes"]["torch"] and stamp["runtimes"]["onnxruntime"]


def test_each_precision_has_a_name():
    onnx, openvino = get_format("onnx"), get_format("openvino")
    assert onnx.variant_label({"precision": "fp32", "quantization": "dynamic"}) == "fp32"
    assert onnx.variant_label({"precision": "int8", "quantization": "static"}) == "int8 static"
    assert openvino.variant_label({"compress_to_fp16": True}) == "fp16 weights"
    assert get_format("torchscript").variant_label({"method": "script"}) == "fp32"


def test_a_benchmark_has_the_machine_to_itself(tmp_path, monkeypatch):
    """An exclusive slot waits for running jobs to end, and jobs arriving meanwhile wait for it."""
    from exporter.jobs.slots import worker_slot

    monkeypatch.setenv("AISTUDIO_MAX_WORKERS", "2")
    events, export_may_end = [], threading.Event()

    def job(name, exclusive=False, hold=0.0, until=None):
        with worker_slot(tmp_path, poll_s=0.01, exclusive=exclusive):
            events.append(f"{name} start")
            if until is not None:
                until.wait(5)
            time.sleep(hold)
            events.append(f"{name} end")

    export = threading.Thread(target=job, args=("export",), kwargs={"until": export_may_end})
    export.start()
    while "export start" not in events:
        time.sleep(0.01)
    bench = threading.Thread(target=job, args=("bench", True, 0.2))
    bench.start()
    time.sleep(0.1)  # the benchmark now holds the gate and waits for the export's slot
    late = threading.Thread(target=job, args=("late",))
    late.start()
    time.sleep(0.1)
    assert events == ["export start"]  # a free slot exists, but the late job waits behind the benchmark
    export_may_end.set()
    for thread in (export, bench, late):
        thread.join(10)
    assert events == ["export start", "export end", "bench start", "bench end", "late start", "late end"]
