"""Folder trees through the ``rackpoint`` CLI: a checkpoint folder written by DCP's own
``FileSystemWriter`` (``.distcp`` files plus ``.metadata``) is saved with ``rackpoint put JOB
STEP DIR``, restored with ``rackpoint get`` byte for byte, and loads back into the same
tensors with DCP's ``FileSystemReader``."""

from __future__ import annotations

import filecmp
import subprocess
from pathlib import Path

import torch
import torch.distributed.checkpoint as dcp

from rackpoint.testing import store_binary


def cli() -> Path:
    """The ``rackpoint`` binary built beside the node binary the tests run."""
    return store_binary().parent / "rackpoint"


def tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_a_dcp_folder_round_trips_byte_identical(cluster, tmp_path):
    state = {"w": torch.arange(5000, dtype=torch.float32).reshape(50, 100), "b": torch.ones(7), "step": torch.tensor(3)}
    src = tmp_path / "dcp"
    dcp.save(state, storage_writer=dcp.FileSystemWriter(str(src)))
    assert (src / ".metadata").is_file() and any(src.glob("*.distcp"))

    run = lambda *args: subprocess.run([str(cli()), "--cluster", str(cluster.cluster_file), *args],
                                       capture_output=True, text=True, check=False)
    put = run("put", "dcpfolder", "7", str(src))
    assert put.returncode == 0, put.stderr
    back = tmp_path / "back"
    got = run("get", "dcpfolder", "--out", str(back))
    assert got.returncode == 0, got.stderr
    assert tree(back) == tree(src)
    assert not filecmp.dircmp(src, back).diff_files

    loaded = {"w": torch.zeros(50, 100), "b": torch.zeros(7), "step": torch.tensor(0)}
    dcp.load(loaded, storage_reader=dcp.FileSystemReader(str(back)))
    for key, value in state.items():
        assert torch.equal(loaded[key], value), key
