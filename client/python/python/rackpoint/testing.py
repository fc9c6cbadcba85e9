"""Test and benchmark helpers: ``LocalCluster``, real ``rackpoint-store`` processes on 127.0.0.1.

The node binary is ``store_bin``, else ``$RACKPOINT_STORE_BIN``, else
``$CARGO_TARGET_DIR/release/rackpoint-store``. Dropping the cluster (or ``close()``, or leaving
its ``with`` block) kills and reaps every node.
"""

from __future__ import annotations

import os
from pathlib import Path

from ._native import LocalCluster as _NativeLocalCluster

__all__ = ["LocalCluster", "store_binary"]


def store_binary() -> Path:
    """The ``rackpoint-store`` binary the tests run."""
    explicit = os.environ.get("RACKPOINT_STORE_BIN")
    if explicit:
        return Path(explicit)
    target = os.environ.get("CARGO_TARGET_DIR", str(Path.home() / ".cache" / "rackpoint-target"))
    return Path(target) / "release" / "rackpoint-store"


def LocalCluster(dir: str | os.PathLike, nodes: int = 6, racks: int = 3, k: int = 4, m: int = 2,
                 shard_size_bytes: int = 1 << 20, store_bin: str | os.PathLike | None = None):
    """Starts ``nodes`` real node processes in ``dir`` (code k + m) and returns once all listen.

    The result has ``cluster_file``, ``node_ids``, ``kill(id)`` (SIGKILL), ``restart(id)``,
    ``is_running(id)``, ``node_dir(id)``, ``corrupt_on_disk(id, needles)`` and ``close()``.
    """
    binary = Path(store_bin) if store_bin is not None else store_binary()
    if not binary.is_file():
        raise FileNotFoundError(f"no rackpoint-store at {binary}: build it (cargo build --release) or set RACKPOINT_STORE_BIN")
    return _NativeLocalCluster(os.fspath(dir), nodes, racks, k, m, shard_size_bytes, os.fspath(binary))
