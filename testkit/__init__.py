"""What the tests and the benchmarks share: a real dashboard+API server on a free port (``server``), a real two-node
Ray cluster in a private network namespace (``ray_cluster``), and checkpoints written the way training writes them
(``models``). Nothing of the product imports it."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]  # the checkout
