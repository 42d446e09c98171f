"""KServe ``InferenceService`` manifests: the bundle's own server as a custom container, and the Triton repository
with KServe's Triton runtime (both speak the Open Inference Protocol, ``protocolVersion: v2``)."""

from __future__ import annotations

from pathlib import Path

import yaml

from exporter.deploy.bundle import Bundle

CONTAINER_PORT = 8080


def write(bundle: Bundle, out: Path, with_triton: bool) -> Path:
    out.mkdir(parents=True)
    (out / "server.yaml").write_text(yaml.safe_dump(server_service(bundle), sort_keys=False))
    if with_triton:
        (out / "triton.yaml").write_text(yaml.safe_dump(triton_service(bundle), sort_keys=False))
    return out


def _service(bundle: Bundle, predictor: dict) -> dict:
    return {"apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService",
            "metadata": {"name": bundle.name, "annotations": {"aistudio/export-id": bundle.record.id}},
            "spec": {"predictor": predictor}}


def server_service(bundle: Bundle) -> dict:
    """The server bundle's container (``docker build -t REGISTRY/<name>-server server/``, then push)."""
    probe = {"httpGet": {"path": "/v2/health/ready", "port": CONTAINER_PORT}}
    container = {"name": "kserve-container", "image": f"REGISTRY/{bundle.name}-server:latest",
                 "args": ["--host", "0.0.0.0", "--port", str(CONTAINER_PORT)],
                 "ports": [{"containerPort": CONTAINER_PORT, "protocol": "TCP"}],
                 "readinessProbe": probe, "livenessProbe": {"httpGet": {"path": "/v2/health/live",
                                                                        "port": CONTAINER_PORT}}}
    return _service(bundle, {"containers": [container]})


def triton_service(bundle: Bundle) -> dict:
    """The ``triton/`` repository uploaded to object storage (``storageUri``), served by KServe's Triton runtime."""
    model = {"modelFormat": {"name": "triton"}, "protocolVersion": "v2",
             "storageUri": "s3://BUCKET/PATH/triton", "runtime": "kserve-tritonserver"}
    if bundle.fmt.needs_gpu:
        model["resources"] = {"limits": {"nvidia.com/gpu": 1}}
    return _service(bundle, {"model": model})
