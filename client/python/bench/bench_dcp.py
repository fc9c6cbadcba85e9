"""DCP through rackpoint.dcp against DCP's FileSystemWriter/Reader, in one run.

Saves and loads the same ~1 GiB state dict (16 fp32 tensors of 64 MiB, incompressible) through
``rackpoint.dcp`` into a local cluster of real node processes (6 nodes in 3 racks, code 4 + 2,
every shard fsync'd by its node) and through ``FileSystemWriter(sync_files=True)`` into a local
folder on the same disk, and measures ``dcp.async_save``'s blocking time against a plain copy
of the state dict. Prints medians of ``--reps`` runs, their ratios, and CPU seconds per GiB
(this process from ``os.times``, the nodes from ``/proc/PID/stat``).

    python client/python/bench/bench_dcp.py [--gib 1.0] [--reps 3] [--dir /tmp]

Needs ``RACKPOINT_STORE_BIN`` (or ``CARGO_TARGET_DIR``) for the node binary. The load figures
read what was just written, so both sides read partly from the page cache.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp

from rackpoint.dcp import Reader, Writer
from rackpoint.testing import LocalCluster

TENSOR_BYTES = 64 << 20
CLK_TCK = os.sysconf("SC_CLK_TCK")


def state_dict(gib: float) -> dict[str, torch.Tensor]:
    n = max(1, round(gib * (1 << 30) / TENSOR_BYTES))
    g = torch.Generator().manual_seed(1)
    return {f"layer{i}.weight": torch.randn(TENSOR_BYTES // 4, generator=g) for i in range(n)}


def node_pids(cluster_dir: Path) -> list[int]:
    """The node processes of the cluster in ``cluster_dir`` (their command line names it)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmd = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if b"rackpoint-store" in cmd and str(cluster_dir).encode() in cmd:
                pids.append(int(entry.name))
    return pids


def cpu_seconds(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime
    return total


def timed(fn, pids: list[int]) -> tuple[float, float, float]:
    """Wall seconds, this process's CPU seconds, the nodes' CPU seconds."""
    c0, n0, t0 = os.times(), cpu_seconds(pids), time.perf_counter()
    fn()
    t1, c1, n1 = time.perf_counter(), os.times(), cpu_seconds(pids)
    own = (c1.user + c1.system) - (c0.user + c0.system)
    return t1 - t0, own, n1 - n0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--gib", type=float, default=1.0)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--dir", default=tempfile.gettempdir())
    args = ap.parse_args()

    root = Path(tempfile.mkdtemp(prefix="rackpoint-bench-", dir=args.dir))
    store = dist.TCPStore("127.0.0.1", 0, is_master=True, wait_for_workers=False)
    dist.init_process_group("gloo", store=store, rank=0, world_size=1)
    sd = state_dict(args.gib)
    gib = sum(t.numel() * t.element_size() for t in sd.values()) / (1 << 30)
    rows: dict[str, list[tuple[float, float, float]]] = {}
    try:
        with LocalCluster(root / "cluster", nodes=6, racks=3, k=4, m=2) as cluster:
            cf = str(cluster.cluster_file)
            pids = node_pids(root / "cluster")
            assert len(pids) == 6, pids
            for rep in range(args.reps):
                step = rep + 1
                fs_dir = root / f"fs-{rep}"
                rows.setdefault("save rackpoint.dcp", []).append(timed(
                    lambda: dcp.save(sd, checkpoint_id=f"rackpoint://bench/{step}", storage_writer=Writer(cf)), pids))
                rows.setdefault("save FileSystemWriter+fsync", []).append(timed(
                    lambda: dcp.save(sd, storage_writer=dcp.FileSystemWriter(fs_dir, sync_files=True)), []))
                into = {k: torch.empty_like(v) for k, v in sd.items()}
                rows.setdefault("load rackpoint.dcp", []).append(timed(
                    lambda: dcp.load(into, checkpoint_id=f"rackpoint://bench/{step}", storage_reader=Reader(cf)), pids))
                assert all(torch.equal(into[k], sd[k]) for k in sd)
                into = {k: torch.empty_like(v) for k, v in sd.items()}
                rows.setdefault("load FileSystemReader", []).append(timed(
                    lambda: dcp.load(into, storage_reader=dcp.FileSystemReader(fs_dir)), []))
                assert all(torch.equal(into[k], sd[k]) for k in sd)
                shutil.rmtree(fs_dir)

                future = None

                def start_async():
                    nonlocal future
                    future = dcp.async_save(sd, checkpoint_id=f"rackpoint://bench/{100 + step}",
                                            storage_writer=Writer(cf))

                rows.setdefault("async_save blocking", []).append(timed(start_async, pids))
                future.result()
                rows.setdefault("plain copy of the state dict", []).append(timed(
                    lambda: {k: v.clone() for k, v in sd.items()}, []))
                rackpoint_client = Writer(cf).client
                for s in (step, 100 + step):
                    rackpoint_client.delete("bench", s)
    finally:
        dist.destroy_process_group()
        shutil.rmtree(root, ignore_errors=True)

    med = {name: tuple(statistics.median(r[i] for r in runs) for i in range(3)) for name, runs in rows.items()}
    print(f"state dict: {gib:.2f} GiB in {len(sd)} fp32 tensors; {args.reps} runs, medians; machine shared with other builds")
    print("| what | wall s | GiB/s | client CPU s/GiB | nodes CPU s/GiB |")
    print("| --- | --- | --- | --- | --- |")
    for name, (wall, own, nodes) in med.items():
        print(f"| {name} | {wall:.3f} | {gib / wall:.2f} | {own / gib:.2f} | {nodes / gib:.2f} |")
    ratio = lambda a, b: med[a][0] / med[b][0]
    print(f"save: rackpoint.dcp / FileSystemWriter+fsync = {ratio('save rackpoint.dcp', 'save FileSystemWriter+fsync'):.2f}x wall time")
    print(f"load: rackpoint.dcp / FileSystemReader = {ratio('load rackpoint.dcp', 'load FileSystemReader'):.2f}x wall time")
    print(f"async_save blocking / plain copy = {ratio('async_save blocking', 'plain copy of the state dict'):.2f}x")


if __name__ == "__main__":
    main()
