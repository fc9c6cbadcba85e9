"""Rank processes for the DCP tests: each is a real process (torch.multiprocessing spawn) in a
gloo group on 127.0.0.1, rendezvousing through a TCPStore that the test process hosts on a
port the OS chose."""

from __future__ import annotations

import faulthandler
import io
import os
import sys
from datetime import timedelta

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
import torch.multiprocessing as mp
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.tensor import DTensor, Shard, distribute_tensor

from rackpoint.dcp import Reader, Writer

GROUP_TIMEOUT = timedelta(seconds=120)


def join_group_of_one() -> None:
    """Makes this process a gloo group of world size 1 (for DCP calls in the test process)."""
    store = dist.TCPStore("127.0.0.1", 0, is_master=True, wait_for_workers=False)
    dist.init_process_group("gloo", store=store, rank=0, world_size=1, timeout=GROUP_TIMEOUT)


def run_ranks(world: int, fn, *args) -> None:
    """Runs ``fn(rank, world, *args)`` in ``world`` spawned processes joined in one gloo group."""
    store = dist.TCPStore("127.0.0.1", 0, is_master=True, wait_for_workers=False)
    mp.spawn(_entry, args=(world, store.port, fn, args), nprocs=world, join=True)


def _entry(rank: int, world: int, port: int, fn, args) -> None:
    # A rank that aborts in C++ prints every Python thread's stack, not only "terminate called".
    faulthandler.enable(all_threads=True)
    store = dist.TCPStore("127.0.0.1", port, is_master=False, timeout=GROUP_TIMEOUT)
    dist.init_process_group("gloo", store=store, rank=rank, world_size=world, timeout=GROUP_TIMEOUT)
    try:
        fn(rank, world, *args)
    finally:
        dist.destroy_process_group()
    # The rank's work is done and checked. About 1 run in 100 of the async_save test, a rank
    # then aborted in torch's C++ teardown ("terminate called without an active exception")
    # while the interpreter finalized beside DCP's async executor thread and gloo's threads;
    # leaving without finalization skips that teardown. A failure above still raises, and
    # spawn still reports its traceback and exit code.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def model_and_optimizer(seed: int):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.ReLU(), torch.nn.Linear(64, 8))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x = torch.randn(16, 32)
    model(x).sum().backward()
    opt.step()
    return model, opt


def tensors(seed: int) -> dict:
    """The plain tensors of ``state``: bf16, fp32 and int64, and the full tensor to shard."""
    g = torch.Generator().manual_seed(seed)
    return {
        "bf16": torch.randn(64, 33, generator=g).to(torch.bfloat16),
        "fp32": torch.randn(256, 256, generator=g),
        "int64": torch.arange(5000, dtype=torch.int64) * (seed + 1),
        "to_shard": torch.randn(96, 40, generator=g),
    }


def state(seed: int, world: int) -> dict:
    """A training state: model and AdamW state (fp32 moments, step counters), bf16, fp32 and
    int64 tensors, a tensor sharded row-wise over the ranks (a DTensor), and a BytesIO item
    (data-loader state). Seed 0 is the blank to load into."""
    model, opt = model_and_optimizer(seed)
    mesh = init_device_mesh("cpu", (world,))
    sd = tensors(seed)
    sd["sharded"] = distribute_tensor(sd.pop("to_shard"), mesh, [Shard(0)])
    sd["model"] = model.state_dict()
    sd["optim"] = opt.state_dict()
    sd["loader"] = io.BytesIO(f"loader state of seed {seed}".encode() * 10)
    return sd


def assert_same(got, want, path="") -> None:
    if isinstance(want, dict):
        assert set(got) == set(want), (path, set(got) ^ set(want))
        for k in want:
            assert_same(got[k], want[k], f"{path}.{k}")
    elif isinstance(want, (list, tuple)):
        assert len(got) == len(want), path
        for i, (a, b) in enumerate(zip(got, want)):
            assert_same(a, b, f"{path}[{i}]")
    elif isinstance(want, DTensor):
        assert isinstance(got, DTensor), path
        assert torch.equal(got.full_tensor(), want.full_tensor()), path
    elif isinstance(want, torch.Tensor):
        assert got.dtype == want.dtype and torch.equal(got, want), path
    elif isinstance(want, io.BytesIO):
        assert got.getvalue() == want.getvalue(), path
    else:
        assert got == want, (path, got, want)


def save(rank: int, world: int, cluster: str, checkpoint_id: str, seed: int) -> None:
    dcp.save(state(seed, world), checkpoint_id=checkpoint_id, storage_writer=Writer(cluster))


def load_and_check(rank: int, world: int, cluster: str, checkpoint_id: str, seed: int) -> None:
    got = state(0, world)
    dcp.load(got, checkpoint_id=checkpoint_id, storage_reader=Reader(cluster))
    assert_same(got, state(seed, world))


class DiesAfterItsPart(Writer):
    """Rank 1 saves its part, then its process dies before the coordinator's finish."""

    def write_data(self, plan, planner):
        fut = super().write_data(plan, planner)
        if dist.get_rank() == 1:
            os._exit(17)
        return fut


def save_dying(rank: int, world: int, cluster: str, checkpoint_id: str, seed: int) -> None:
    dcp.save(state(seed, world), checkpoint_id=checkpoint_id, storage_writer=DiesAfterItsPart(cluster))


def save_then_die(rank: int, world: int, cluster: str, job: str) -> None:
    """Saves step 1, then starts step 2 where rank 1 dies after writing its part."""
    save(rank, world, cluster, f"rackpoint://{job}/1", 1)
    save_dying(rank, world, cluster, f"rackpoint://{job}/2", 2)


def async_save_then_load_latest(rank: int, world: int, cluster: str, job: str, seed: int) -> None:
    """async_save at step ``seed``, then every rank loads ``latest`` (resolved on rank 0)."""
    sd = state(seed, world)
    future = dcp.async_save(sd, checkpoint_id=f"rackpoint://{job}/{seed}", storage_writer=Writer(cluster))
    # DCP staged a copy: changing the live state now must not reach the checkpoint.
    sd["fp32"].add_(1.0)
    sd["int64"].zero_()
    future.result()
    dist.barrier()
    load_and_check(rank, world, cluster, f"rackpoint://{job}/latest", seed)
