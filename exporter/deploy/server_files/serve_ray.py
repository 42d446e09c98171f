"""Serve the bundle's model through Ray Serve: the same routes as ``server.py``, with request batching
(``@serve.batch``) and replicas. ``pip install -r requirements-ray.txt`` first.

    python serve_ray.py [--port 8000] [--host 127.0.0.1] [--replicas 1] [--max-batch N] [--wait-ms 5]
    serve run serve_ray:app        # or on a running Ray cluster / KubeRay, with Ray's own tooling

Requests that arrive together are run as one batch of at most ``--max-batch`` images (the file's largest batch;
a file with a fixed batch is served one request at a time).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np
from ray import serve

sys.path.insert(0, str(Path(__file__).resolve().parent))
import server  # noqa: E402

DEFAULT_WAIT_S = 0.005


@serve.deployment
class ModelServer:
    """One replica: the model, and a batcher that concatenates concurrent requests along the batch axis."""

    def __init__(self, max_batch: int | None = None, wait_s: float = DEFAULT_WAIT_S) -> None:
        model = server.Model()
        self.limit = max(1, min(max_batch or model.max_batch or 1, model.max_batch or 1))
        self.batched.set_max_batch_size(self.limit)
        self.batched.set_batch_wait_timeout_s(wait_s)
        self.service = server.Service(model, run=self.batched if self.limit > 1 else None)

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=DEFAULT_WAIT_S)
    async def batched(self, xs: list[np.ndarray]) -> list[list[np.ndarray]]:
        from starlette.concurrency import run_in_threadpool

        sizes, rows = [len(x) for x in xs], np.concatenate(xs)
        parts = [await run_in_threadpool(self.service.model.run, rows[i:i + self.limit])
                 for i in range(0, len(rows), self.limit)]
        outputs = [np.concatenate([p[k] for p in parts]) for k in range(len(parts[0]))]
        bounds = np.cumsum([0, *sizes])
        return [[o[bounds[i]:bounds[i + 1]] for o in outputs] for i in range(len(xs))]

    async def __call__(self, request):
        return await self.service.handle(request)


app = ModelServer.bind()


def main() -> None:
    parser = argparse.ArgumentParser(description="Serve the exported model through Ray Serve.")
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", 8000)))
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--replicas", type=int, default=1)
    parser.add_argument("--max-batch", type=int, default=None, help="largest batch run at once (default: the file's)")
    parser.add_argument("--wait-ms", type=float, default=DEFAULT_WAIT_S * 1000, help="how long a batch waits to fill")
    parser.add_argument("--address", help="a running Ray cluster (default: start Ray here)")
    parser.add_argument("--cpus-per-replica", type=float, default=1.0)
    parser.add_argument("--proxy", choices=("EveryNode", "HeadOnly"), default="EveryNode",
                        help="where Serve's HTTP proxies run (HeadOnly when the nodes share one machine)")
    args = parser.parse_args()
    if args.address:  # the replicas, wherever they run, import this folder's modules
        import ray

        ray.init(address=args.address, runtime_env={"working_dir": str(Path(__file__).resolve().parent)})
    serve.start(http_options={"host": args.host, "port": args.port}, proxy_location=args.proxy)
    deployment = ModelServer.options(num_replicas=args.replicas, ray_actor_options={"num_cpus": args.cpus_per_replica})
    serve.run(deployment.bind(args.max_batch, args.wait_ms / 1000), name="model", route_prefix="/", blocking=True)


if __name__ == "__main__":
    main()
