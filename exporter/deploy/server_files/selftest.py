"""Replay the bundle's golden samples against a running server: ``python selftest.py [URL]``.

Sends ``golden/inputs.npy`` through ``/v2/models/<name>/infer`` and checks every output against
``golden/outputs.npz`` within the export's tolerance (scaled by max(1, |value|), as validation does), then posts
``golden/sample.png`` to ``/predict`` and checks the answer against ``golden/predict.json``.
Exit 0: every check passed; 1: an answer differs (named); 2: no server answered at URL.
Needs only numpy and Pillow (both in requirements.txt) and the standard library.
"""

from __future__ import annotations

import base64
import io
import json
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
MIN_SAME_PIXELS = 0.99  # masks and maps may differ on a few edge pixels across CPUs


def call(url: str, body: bytes | None = None, content_type: str = "application/json") -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=body, headers={"Content-Type": content_type} if body else {})
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def wait_ready(url: str, seconds: float = 120.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if call(f"{url}/v2/health/ready")[0] == 200:
                return True
        except OSError:
            pass
        time.sleep(0.5)
    return False


def check_infer(url: str, meta: dict, golden: Path) -> list[str]:
    x = np.load(golden / "inputs.npy")
    expected = np.load(golden / "outputs.npz")
    body = {"inputs": [{"name": meta["inputs"][0]["name"], "shape": list(x.shape), "datatype": "FP32",
                        "data": x.ravel().tolist()}]}
    status, content = call(f"{url}/v2/models/{meta['name']}/infer", json.dumps(body).encode())
    if status != 200:
        return [f"infer answered {status}: {content[:300]!r}"]
    outputs = {o["name"]: np.asarray(o["data"]).reshape(o["shape"]) for o in json.loads(content)["outputs"]}
    problems = []
    for name in expected.files:
        got, want = outputs.get(name), expected[name]
        if got is None or got.shape != want.shape:
            shape = None if got is None else list(got.shape)
            problems.append(f"output {name}: shape {shape}, golden {list(want.shape)}")
            continue
        diff = np.abs(got.astype(np.float64) - want) / np.maximum(1.0, np.abs(want))
        if diff.size and float(diff.max()) > meta["tolerance"]:
            problems.append(f"output {name}: differs by {float(diff.max()):.3g} (tolerance {meta['tolerance']:g})")
    return problems


def same(got, want, where: str = "predict") -> list[str]:
    """Differences between two /predict answers: numbers within 1e-3 (relative), PNGs on 99 % of pixels."""
    if isinstance(want, dict):
        if not isinstance(got, dict) or set(got) != set(want):
            return [f"{where}: keys {sorted(got) if isinstance(got, dict) else got}, golden {sorted(want)}"]
        return [p for key in want for p in same(got[key], want[key], f"{where}.{key}")]
    if isinstance(want, list):
        if not isinstance(got, list) or len(got) != len(want):
            return [f"{where}: {len(got) if isinstance(got, list) else got} items, golden {len(want)}"]
        return [p for i, (g, w) in enumerate(zip(got, want, strict=True)) for p in same(g, w, f"{where}[{i}]")]
    if isinstance(want, float) or isinstance(got, float):
        close = abs(float(got) - float(want)) <= 1e-3 * max(1.0, abs(float(want)))
        return [] if close else [f"{where}: {got} ≠ {want}"]
    if isinstance(want, str) and len(want) > 64 and where.endswith(("mask", "anomaly_map")):
        return _same_png(got, want, where)
    return [] if got == want else [f"{where}: {got!r} ≠ {want!r}"]


def _same_png(got: str, want: str, where: str) -> list[str]:
    from PIL import Image

    a, b = (np.asarray(Image.open(io.BytesIO(base64.b64decode(s)))) for s in (got, want))
    agree = float((a == b).mean()) if a.shape == b.shape else 0.0
    return [] if agree >= MIN_SAME_PIXELS else [f"{where}: {agree:.1%} of pixels agree"]


def check_predict(url: str, golden: Path) -> list[str]:
    status, content = call(f"{url}/predict", (golden / "sample.png").read_bytes(), "image/png")
    if status != 200:
        return [f"/predict answered {status}: {content[:300]!r}"]
    return same(json.loads(content), json.loads((golden / "predict.json").read_text()))


def main() -> int:
    url = (sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:8000").rstrip("/")
    meta = json.loads((HERE / "model.json").read_text())
    if not wait_ready(url):
        print(f"selftest: no server answered at {url}/v2/health/ready — start it with ./start.sh", file=sys.stderr)
        return 2
    problems = check_infer(url, meta, HERE / "golden") + check_predict(url, HERE / "golden")
    for problem in problems:
        print(f"FAIL {problem}")
    print("selftest: passed — golden outputs and /predict match" if not problems else
          f"selftest: {len(problems)} difference(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
