"""A runtime-only server for one exported model, written by AI Studio Export into a deploy bundle.

It speaks the Open Inference Protocol (KServe v2) — the protocol of Triton, OpenVINO Model Server, KServe and
MLServer, so their clients work against it unchanged (Triton's binary-tensor extension included):

    GET  /v2/health/live, /v2/health/ready, /v2          server liveness, readiness, metadata
    GET  /v2/models/<name>, /v2/models/<name>/ready      the model's inputs and outputs
    POST /v2/models/<name>/infer                         tensors in, tensors out

and ``POST /predict`` with an image (a raw body or a multipart ``file``): the model's own preprocessing (resize,
scale to [0, 1], mean/std from ``model.json``), the file run in its runtime (``runtime.py``), and the task's result
as plain JSON in the image's pixels. Bad requests get a 4xx naming what is wrong; the server stays up.

    python server.py [--port 8000] [--host 127.0.0.1] [--workers 1]

Needs only ``requirements.txt`` (numpy, Pillow, Starlette, uvicorn and the file's runtime). ``serve_ray.py`` serves
the same routes through Ray Serve, with request batching and replicas.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import threading
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
MAX_BODY_BYTES = int(os.environ.get("MAX_BODY_BYTES", 64 << 20))
MAX_IMAGE_PIXELS = int(os.environ.get("MAX_IMAGE_PIXELS", 40_000_000))
V2_TYPES = {"FP32": "float32", "FP16": "float16", "FP64": "float64", "INT64": "int64", "INT32": "int32",
            "INT16": "int16", "INT8": "int8", "UINT8": "uint8", "BOOL": "bool"}
NUMPY_TO_V2 = {v: k for k, v in V2_TYPES.items()}
TOP_K = 5


class BadRequest(Exception):
    """A request the server refuses: the HTTP status and the reason, in words."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


class Model:
    """The exported file in its runtime, with its preprocessing and its task's decoding (``model.json``)."""

    def __init__(self, folder: Path = HERE) -> None:
        import sys

        sys.path.insert(0, str(folder))
        import runtime  # written with the bundle: run(x) -> the file's outputs, in order

        self.meta = json.loads((folder / "model.json").read_text())
        self.name = self.meta["name"]
        self.input = self.meta["inputs"][0]
        self.outputs = self.meta["outputs"]
        self.max_batch = int(self.meta["max_batch_size"])  # 0: the file's batch is fixed
        self._run, self._lock = runtime.run, threading.Lock()

    def run(self, x: np.ndarray) -> list[np.ndarray]:
        """The file's outputs for a batch, in the file's output order (one call at a time)."""
        with self._lock:
            return [np.asarray(o) for o in self._run(np.ascontiguousarray(x))]

    def check_input(self, array: np.ndarray) -> None:
        """Refuse an input tensor whose dtype or shape the file cannot take."""
        want = self.input["shape"]
        if array.dtype != np.dtype(self.input["dtype"]):
            raise BadRequest(400, f"input {self.input['name']!r} must be {NUMPY_TO_V2[self.input['dtype']]}, "
                                  f"got {NUMPY_TO_V2.get(str(array.dtype), str(array.dtype))}")
        fixed = [d if isinstance(d, int) else -1 for d in want]
        if array.ndim != len(fixed) or any(f not in (-1, s) for f, s in zip(fixed[1:], array.shape[1:], strict=True)):
            raise BadRequest(400, f"input {self.input['name']!r} must have shape {want}, got {list(array.shape)}")
        if self.max_batch and not 1 <= array.shape[0] <= self.max_batch:
            raise BadRequest(400, f"batch {array.shape[0]} is outside 1..{self.max_batch}")
        if not self.max_batch and array.shape[0] != fixed[0]:
            raise BadRequest(400, f"this file's batch is fixed at {fixed[0]}, got {array.shape[0]}")

    def metadata(self) -> dict[str, Any]:
        def tensor(t: dict[str, Any]) -> dict[str, Any]:
            return {"name": t["name"], "datatype": NUMPY_TO_V2[t["dtype"]],
                    "shape": [d if isinstance(d, int) else -1 for d in t["shape"]]}

        return {"name": self.name, "versions": ["1"], "platform": self.meta["platform"],
                "inputs": [tensor(self.input)], "outputs": [tensor(o) for o in self.outputs]}


# -- the Open Inference Protocol ----------------------------------------------------------------------------------

def parse_infer(body: bytes, header_length: str | None, model: Model) -> tuple[np.ndarray, dict[str, Any]]:
    """The input tensor of a v2 infer request (JSON, or JSON + binary tensors) and the request itself."""
    size = len(body) if header_length is None else _int(header_length, "Inference-Header-Content-Length")
    if not 0 < size <= len(body):
        raise BadRequest(400, "Inference-Header-Content-Length is larger than the body")
    try:
        request = json.loads(body[:size])
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(400, f"the body is not JSON: {exc}") from None
    inputs = request.get("inputs") if isinstance(request, dict) else None
    if not isinstance(inputs, list) or len(inputs) != 1 or not isinstance(inputs[0], dict):
        raise BadRequest(400, f"the request must carry one input, {model.input['name']!r}")
    tensor = inputs[0]
    if tensor.get("name") != model.input["name"]:
        raise BadRequest(400, f"unknown input {tensor.get('name')!r}; this model takes {model.input['name']!r}")
    dtype = V2_TYPES.get(str(tensor.get("datatype")))
    shape = tensor.get("shape")
    if dtype is None:
        raise BadRequest(400, f"datatype {tensor.get('datatype')!r} is not one of {', '.join(V2_TYPES)}")
    if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
        raise BadRequest(400, "shape must be a list of non-negative integers")
    count = int(np.prod(shape)) if shape else 1
    binary = (tensor.get("parameters") or {}).get("binary_data_size")
    if binary is not None:
        raw = body[size:size + int(binary)]
        if len(raw) != count * np.dtype(dtype).itemsize or int(binary) != len(body) - size:
            raise BadRequest(400, f"binary data of {len(raw)} bytes does not hold shape {shape} of {dtype}")
        array = np.frombuffer(raw, dtype=dtype).reshape(shape)
    else:
        array = _from_json(tensor.get("data"), dtype, shape, count)
    model.check_input(array)
    return array, request


def _from_json(data: Any, dtype: str, shape: list[int], count: int) -> np.ndarray:
    try:
        array = np.asarray(data, dtype=dtype)
    except (TypeError, ValueError) as exc:
        raise BadRequest(400, f"data is not a list of {dtype} values: {exc}") from None
    if array.size != count:
        raise BadRequest(400, f"data holds {array.size} values; shape {shape} needs {count}")
    return array.reshape(shape)


def _float(text: str, what: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise BadRequest(400, f"{what} must be a number") from None


def _int(text: str, what: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise BadRequest(400, f"{what} must be an integer") from None


def infer_response(model: Model, outputs: list[np.ndarray], request: dict[str, Any]) -> tuple[bytes, dict[str, str]]:
    """A v2 infer response: JSON, or JSON + binary tensors where the request asked for them (Triton's extension)."""
    asked = {o.get("name"): (o.get("parameters") or {}) for o in request.get("outputs") or [] if isinstance(o, dict)}
    unknown = set(asked) - {o["name"] for o in model.outputs}
    if unknown:
        raise BadRequest(400, f"unknown output {sorted(unknown)[0]!r}")
    binary_default = bool((request.get("parameters") or {}).get("binary_data_output", False))
    tensors, blobs = [], []
    for spec, value in zip(model.outputs, outputs, strict=True):
        if asked and spec["name"] not in asked:
            continue
        value = np.ascontiguousarray(value)
        entry = {"name": spec["name"], "datatype": NUMPY_TO_V2.get(str(value.dtype), "FP32"),
                 "shape": list(value.shape)}
        if asked.get(spec["name"], {}).get("binary_data", binary_default):
            blobs.append(value.tobytes())
            entry["parameters"] = {"binary_data_size": len(blobs[-1])}
        else:
            entry["data"] = value.ravel().tolist()
        tensors.append(entry)
    header = json.dumps({"model_name": model.name, "model_version": "1", "id": request.get("id", ""),
                         "outputs": tensors}).encode()
    extra = {"Inference-Header-Content-Length": str(len(header))} if blobs else {}
    return header + b"".join(blobs), extra


# -- /predict: an image in, the task's answer out -----------------------------------------------------------------

def read_image(data: bytes, meta: dict[str, Any]) -> tuple[np.ndarray, tuple[int, int]]:
    """``(x [1, C, H, W] float32, (width, height))``: the image resized, scaled to [0, 1] and normalised exactly
    as the model was validated."""
    from PIL import Image, UnidentifiedImageError

    channels, height, width = meta["input_size"]
    Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS  # Pillow refuses larger ones as decompression bombs, from the header
    try:
        image = Image.open(io.BytesIO(data))
        if image.width * image.height > MAX_IMAGE_PIXELS:
            raise BadRequest(413, f"the image is {image.width}×{image.height}; at most {MAX_IMAGE_PIXELS} pixels")
        image = image.convert("RGB" if channels == 3 else "L")
    except Image.DecompressionBombError as exc:
        raise BadRequest(413, f"the image is too large: {exc}") from None
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise BadRequest(400, f"the body is not an image this server can read: {exc}") from None
    size = image.size
    x = np.asarray(image.resize((width, height), Image.BILINEAR), dtype=np.float32)
    x = x.reshape(height, width, channels).transpose(2, 0, 1) / 255.0
    mean = np.array(meta["normalization"]["mean"], dtype=np.float32).reshape(-1, 1, 1)
    std = np.array(meta["normalization"]["std"], dtype=np.float32).reshape(-1, 1, 1)
    return np.ascontiguousarray(((x - mean) / std)[None], dtype=np.float32), size


def fit_batch(x: np.ndarray, meta: dict[str, Any]) -> np.ndarray:
    """One image as the file takes it: repeated to the file's fixed batch (answers are read from the first)."""
    fixed = meta["inputs"][0]["shape"][0]
    return np.repeat(x, fixed, axis=0) if not meta["max_batch_size"] and isinstance(fixed, int) and fixed > 1 else x


def decode(meta: dict[str, Any], outputs: dict[str, np.ndarray], size: tuple[int, int]) -> dict[str, Any]:
    """The task's answer for the first image, in the original image's pixels."""
    task, names = meta["task"], meta.get("class_names") or []
    _, height, width = meta["input_size"]
    sx, sy = size[0] / width, size[1] / height
    if task == "classification":
        logits = outputs[meta["outputs"][0]["name"]][0].astype(np.float64)
        probs = np.exp(logits - logits.max())
        probs /= probs.sum()
        top = np.argsort(-probs)[:TOP_K]
        return {"classes": [{"index": int(i), "label": _name(names, i), "probability": float(probs[i])}
                            for i in top]}
    if task == "regression":
        return {"values": outputs[meta["outputs"][0]["name"]][0].astype(float).ravel().tolist()}
    if task == "segmentation":
        mask = outputs[meta["outputs"][0]["name"]][0].argmax(0).astype(np.uint8)
        return {"mask": _png(mask, size), "classes": {_name(names, c): int((mask == c).sum())
                                                      for c in np.unique(mask)}}
    if task == "anomaly_detection":
        anomaly_map = outputs["anomaly_map"][0].reshape(height, width)
        return {"score": float(np.ravel(outputs["score"])[0]), "map_max": float(anomaly_map.max()),
                "anomaly_map": _png(_to_byte(anomaly_map), size)}
    return _detections(meta, outputs, (sx, sy), size)


def _detections(meta: dict[str, Any], outputs: dict[str, np.ndarray], scale: tuple[float, float],
                size: tuple[int, int]) -> dict[str, Any]:
    names, rotated = meta.get("class_names") or [], meta["task"] == "oriented_object_detection"
    n = int(np.ravel(outputs["num_detections"])[0])
    found = []
    for i in range(n):
        box = outputs["boxes"][0][i].astype(float)
        box = (box * [scale[0], scale[1], scale[0], scale[1], 1.0]) if rotated else box * [*scale, *scale]
        item = {"label": _name(names, int(outputs["labels"][0][i])), "index": int(outputs["labels"][0][i]),
                "score": float(outputs["scores"][0][i]), "box": [round(float(v), 2) for v in box]}
        if "masks" in outputs:
            item["mask"] = _png((outputs["masks"][0][i].reshape(outputs["masks"].shape[-2:]) > 0.5)
                                .astype(np.uint8), size)
        found.append(item)
    return {"detections": found, "box_format": "cx, cy, w, h, angle (radians)" if rotated else "x1, y1, x2, y2"}


def _name(names: list[str], index: Any) -> str:
    return names[int(index)] if 0 <= int(index) < len(names) else str(int(index))


def _to_byte(values: np.ndarray) -> np.ndarray:
    low, high = float(values.min()), float(values.max())
    return np.zeros(values.shape, np.uint8) if high <= low else ((values - low) / (high - low) * 255).astype(np.uint8)


def _png(mask: np.ndarray, size: tuple[int, int]) -> str:
    """A mask or map as a base64 PNG at the image's size (nearest neighbour: class indices stay indices)."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(mask).resize(size, Image.NEAREST).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


# -- the HTTP app (Starlette; uvicorn serves it here, Ray Serve in serve_ray.py) -----------------------------------

class Service:
    """Every route of the server over one ``Model``; ``run`` may be replaced by a batching one (Ray Serve)."""

    def __init__(self, model: Model, run: Any = None) -> None:
        self.model = model
        self.run = run or self._run_here

    async def _run_here(self, x: np.ndarray) -> list[np.ndarray]:
        from starlette.concurrency import run_in_threadpool

        return await run_in_threadpool(self.model.run, x)

    async def handle(self, request: Any) -> Any:
        from starlette.responses import JSONResponse

        try:
            return await self._route(request)
        except BadRequest as exc:
            return JSONResponse({"error": exc.message}, status_code=exc.status)

    async def _route(self, request: Any) -> Any:
        from starlette.responses import JSONResponse, Response

        path, method, model = request.url.path.rstrip("/"), request.method, self.model
        if method == "GET" and path in ("/v2/health/live", "/v2/health/ready", f"/v2/models/{model.name}/ready"):
            return Response(status_code=200)
        if method == "GET" and path == "/v2":
            return JSONResponse({"name": "aistudio-export-server", "version": "1",
                                 "extensions": ["binary_tensor_data"]})
        if path.startswith("/v2/models/"):
            parts = path.split("/")[3:]
            if parts[0] != model.name:
                raise BadRequest(404, f"unknown model {parts[0]!r}; this server serves {model.name!r}")
            if method == "GET" and len(parts) in (1, 3) and parts[1:2] in ([], ["versions"]):
                return JSONResponse(model.metadata())
            if method == "POST" and parts[-1] == "infer":
                return await self._infer(request)
        if method == "POST" and path == "/predict":
            return await self._predict(request)
        raise BadRequest(404, f"no route {method} {path}; see /v2/models/{model.name} and POST /predict")

    async def _infer(self, request: Any) -> Any:
        from starlette.responses import Response

        body = await read_body(request)
        x, parsed = parse_infer(body, request.headers.get("inference-header-content-length"), self.model)
        content, headers = infer_response(self.model, await self.run(x), parsed)
        return Response(content, media_type="application/json" if not headers else "application/octet-stream",
                        headers=headers)

    async def _predict(self, request: Any) -> Any:
        from starlette.responses import JSONResponse

        if request.headers.get("content-type", "").startswith("multipart/form-data"):
            await read_body(request)  # bounded before the form parser buffers it
            form = await request.form()
            upload = form.get("file")
            if upload is None or isinstance(upload, str):
                raise BadRequest(400, "send the image as the form field 'file' (curl -F file=@image.png)")
            data = await upload.read()
        else:
            data = await read_body(request)
        x, size = read_image(data, self.model.meta)
        outputs = await self.run(fit_batch(x, self.model.meta))
        named = {spec["name"]: value for spec, value in zip(self.model.outputs, outputs, strict=True)}
        answer = decode(self.model.meta, named, size)
        if "detections" in answer:  # ?min_score=0.5 keeps the confident ones (default: every one the file gives)
            min_score = _float(request.query_params.get("min_score", "0"), "min_score")
            answer["detections"] = [d for d in answer["detections"] if d["score"] >= min_score]
        return JSONResponse({"model_name": self.model.name, "task": self.model.meta["task"],
                             "image_size": list(size), **answer})


async def read_body(request: Any) -> bytes:
    """The body, refused past ``MAX_BODY_BYTES`` (by its declared length first, then as it streams)."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise BadRequest(413, f"the body is {int(declared)} bytes; at most {MAX_BODY_BYTES}")
    if (cached := getattr(request, "_body", None)) is not None:
        return cached
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise BadRequest(413, f"the body is over {MAX_BODY_BYTES} bytes")
        chunks.append(chunk)
    request._body = b"".join(chunks)
    return request._body


def build_app() -> Any:
    """The Starlette app: every path goes to one ``Service``."""
    from starlette.applications import Starlette
    from starlette.routing import Route

    service = Service(Model())
    return Starlette(routes=[Route("/{path:path}", service.handle, methods=["GET", "POST"])])


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description="Serve the exported model (Open Inference Protocol + /predict).")
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", 8000)))
    parser.add_argument("--host", default="127.0.0.1", help="127.0.0.1 (default) or 0.0.0.0 to open it")
    parser.add_argument("--workers", type=int, default=1, help="server processes, each with its own copy")
    parser.add_argument("--exit-with", type=int, metavar="PID", help="stop when process PID ends (a dashboard)")
    args = parser.parse_args()
    if args.exit_with:
        threading.Thread(target=_exit_with, args=(args.exit_with,), daemon=True).start()
    uvicorn.run("server:build_app", factory=True, host=args.host, port=args.port, workers=args.workers,
                log_level="warning", app_dir=str(HERE))


def _exit_with(pid: int) -> None:
    import time

    while True:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            os._exit(0)
        except PermissionError:
            pass
        time.sleep(1.0)


if __name__ == "__main__":
    main()
