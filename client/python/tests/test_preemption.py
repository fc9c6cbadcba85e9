"""Preemption: a small training loop (a subprocess, torch on the CPU) that saves periodically
gets SIGTERM mid-loop; it saves the step it is at with a deadline and exits with 143; the
emergency checkpoint is what ``resume`` picks, and its tensors are the loop's state at that
step. Also the deadline save's typed failure and the fallback of a loop stuck in its main
thread."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.api import CheckpointException

import rackpoint
from rackpoint import preemption
from rackpoint.dcp import Reader, Writer

import dcp_workers as w

HERE = Path(__file__).parent


def start_loop(cluster, job: str, out: Path, mode: str) -> subprocess.Popen:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.Popen([sys.executable, str(HERE / "preempt_loop.py"), str(cluster.cluster_file), job,
                             str(out), mode], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def wait_for_step(proc: subprocess.Popen, step: int) -> None:
    for line in proc.stdout:
        if line.strip() == f"step {step}":
            return
    proc.wait()
    raise AssertionError(f"the loop ended (status {proc.returncode}) before step {step}: {proc.stderr.read()}")


def stop_with_sigterm(proc: subprocess.Popen) -> tuple[int, float, str]:
    sent = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    return proc.returncode, time.monotonic() - sent, err


def assert_restores(client, job: str, out: Path, how: str) -> int:
    expected = torch.load(out / "at-exit.pt")
    assert expected["how"] == how
    point = client.resume(job)
    assert point is not None
    assert point.step == expected["step"], "resume picks the emergency checkpoint"
    part = point.parts[0]
    assert part.meta == {"preempted": how}
    assert set(part.objects) == set(expected["state"])
    for name, tensor in expected["state"].items():
        restored = torch.empty_like(tensor)
        part.read_into(name, restored)
        assert torch.equal(restored, tensor), name
    return point.step


def test_sigterm_saves_the_current_step_and_exits(cluster, client, tmp_path):
    job = "preempted"
    proc = start_loop(cluster, job, tmp_path, "safe-point")
    wait_for_step(proc, 13)  # two periodic saves (5, 10) behind it
    code, took, err = stop_with_sigterm(proc)
    assert code == preemption.DEFAULT_EXIT_CODE == 143, err
    assert "emergency checkpoint saved at a safe point" in err, err
    step = assert_restores(client, job, tmp_path, "safe-point")
    assert step > 13, "the step after the one printed before the signal, or later"
    steps = [c.step for c in client.list(job)]
    assert steps[-1] == step and 5 in steps and 10 in steps
    saved = next(line for line in err.splitlines() if "emergency checkpoint saved" in line)
    print(f"SIGTERM to exit: {took:.2f} s (emergency checkpoint of step {step}; {saved})")


def test_a_loop_stuck_in_its_main_thread_is_saved_by_the_fallback(cluster, client, tmp_path):
    job = "stuck"
    proc = start_loop(cluster, job, tmp_path, "stuck")
    wait_for_step(proc, 12)  # it hangs after step 12
    code, took, err = stop_with_sigterm(proc)
    assert code == 143, err
    assert "by the fallback" in err, err
    assert assert_restores(client, job, tmp_path, "fallback") == 12
    print(f"SIGTERM to exit through the fallback: {took:.2f} s")


def test_a_deadline_save_commits_or_raises_deadline_exceeded(cluster, client):
    state = {"w": torch.arange(200_000, dtype=torch.float32)}
    report = client.save("deadline", 1, 0, 1, state, deadline_s=60)
    assert report.deadline_left_s is not None and 0 < report.deadline_left_s <= 60
    assert report.yielded == 0
    with pytest.raises(rackpoint.DeadlineExceeded) as caught:
        client.save("deadline", 2, 0, 1, state, deadline_s=0)
    e = caught.value
    assert (e.kind, e.job, e.step, e.rank) == ("DeadlineExceeded", "deadline", 2, 0)
    assert e.stored == 0 and e.budget_s == 0
    assert "nothing was committed" in str(e)
    assert client.resume("deadline").step == 1, "the previous checkpoint is still the latest"
    for bad in (-1.0, float("nan"), float("inf")):
        with pytest.raises(rackpoint.InvalidInput):
            client.save("deadline", 3, 0, 1, state, deadline_s=bad)


def test_preemption_options_are_checked():
    with pytest.raises(ValueError):
        preemption.Preemption(deadline_s=0)
    with pytest.raises(ValueError):
        preemption.Preemption(deadline_s=10, fallback=lambda deadline_s: None)
    p = preemption.Preemption(deadline_s=10)
    assert not p.requested() and p.time_left() == 10


def test_a_dcp_writer_with_a_deadline_commits_in_time_or_nothing(cluster, client):
    cf = str(cluster.cluster_file)
    w.join_group_of_one()
    try:
        state = {"w": torch.arange(50_000, dtype=torch.float32), "b": torch.ones(7)}
        dcp.save(state, checkpoint_id="rackpoint://dcp-deadline/5", storage_writer=Writer(cf, deadline_s=60))
        with pytest.raises(CheckpointException) as caught:  # DCP's, a BaseException
            dcp.save(state, checkpoint_id="rackpoint://dcp-deadline/6", storage_writer=Writer(cf, deadline_s=0))
        [failure] = caught.value.failures.values()
        assert "DeadlineExceeded" in repr(failure) or "nothing was committed" in str(failure), failure
        assert client.resume("dcp-deadline").step == 5, "nothing of step 6 was committed"
        loaded = {"w": torch.zeros(50_000), "b": torch.zeros(7)}
        dcp.load(loaded, checkpoint_id="rackpoint://dcp-deadline/latest", storage_reader=Reader(cf))
        assert all(torch.equal(loaded[k], state[k]) for k in state)
    finally:
        dist.destroy_process_group()
