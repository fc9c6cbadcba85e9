"""rackpoint.Client against real node processes: buffer round trips (bytes, bytearray,
memoryview, numpy, torch), reads in place, typed errors with their fields, the GIL released
during I/O, async saves, fork, and list/verify/resume/delete."""

from __future__ import annotations

import multiprocessing
import os
import shutil
import threading

import numpy as np
import pytest
import torch

import rackpoint
from rackpoint import Client

JOB = "pyjob"


def seeded(seed: int, n: int) -> bytes:
    return np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8).tobytes()


def test_bytes_numpy_and_torch_round_trip(client):
    arr = np.random.default_rng(1).standard_normal((300, 70)).astype(np.float32)
    bf16 = torch.randn(123, 45, generator=torch.Generator().manual_seed(2)).to(torch.bfloat16)
    objects = {
        "bytes": seeded(3, 100_001),
        "bytearray": bytearray(seeded(4, 5)),
        "memoryview": memoryview(seeded(5, 70_000))[1000:60_000],
        "empty": b"",
        "numpy": arr,
        "bf16": bf16,
    }
    report = client.save(JOB, 10, 0, 1, objects, meta={"loader": "offset=7"})
    assert report.bytes == sum(rackpoint.byte_view(v).nbytes for v in objects.values())
    assert len(report.manifest_nodes) == 3

    got = client.restore(JOB, 10, 0)
    assert set(got) == set(objects)
    for name, value in objects.items():
        assert got[name] == rackpoint.byte_view(value).tobytes(), name

    # In place, into a numpy array and into a bf16 tensor.
    into = np.zeros_like(arr)
    assert client.restore_into(JOB, 10, 0, "numpy", into) == 0
    np.testing.assert_array_equal(into, arr)
    t = torch.zeros_like(bf16)
    client.restore_into(JOB, 10, 0, "bf16", t)
    assert torch.equal(t, bf16)

    part = client.part(JOB)  # latest
    assert (part.step, part.rank, part.world_size) == (10, 0, 1)
    assert part.objects["numpy"] == arr.nbytes
    assert part.meta == {"loader": "offset=7"}
    assert bytes(part.read("bytes")) == objects["bytes"]


def test_bad_input_is_a_typed_error(client):
    client.save(JOB, 1, 0, 1, {"a": b"x" * 1000})
    with pytest.raises(rackpoint.AlreadyExists) as e:
        client.save(JOB, 1, 0, 1, {"a": b"y"})
    assert (e.value.job, e.value.step, e.value.rank, e.value.kind) == (JOB, 1, 0, "AlreadyExists")
    with pytest.raises(rackpoint.InvalidInput):
        client.save("bad/job", 1, 0, 1, {"a": b"x"})
    with pytest.raises(rackpoint.RackpointError) as e:
        client.save(JOB, 2, 1, 1, {"a": b"x"})  # rank not below world size
    assert e.value.kind == "Manifest" and "outside a world of 1" in str(e.value)
    with pytest.raises(rackpoint.InvalidInput) as e:
        client.restore_into(JOB, 1, 0, "a", bytearray(999))
    assert "1000 bytes" in str(e.value)
    with pytest.raises(TypeError):
        client.restore_into(JOB, 1, 0, "a", b"x" * 1000)  # read-only
    with pytest.raises(ValueError):
        client.save(JOB, 3, 0, 1, {"a": np.zeros((10, 10))[:, ::2]})  # not contiguous
    with pytest.raises(rackpoint.ManifestNotFound) as e:
        client.part(JOB, 99, 0)
    assert e.value.step == 99


def test_nodes_down_are_unavailable_not_lost(cluster, client):
    data = seeded(6, 200_000)
    client.save(JOB, 5, 0, 1, {"blob": data})
    part = client.part(JOB, 5, 0)
    down = cluster.node_ids[:3]
    for node in down:  # m = 2: three nodes down is one too many, but their data is intact
        cluster.kill(node)
    with pytest.raises(rackpoint.Unavailable) as e:
        part.read("blob")
    err = e.value
    assert isinstance(err, rackpoint.RackpointError) and not isinstance(err, rackpoint.NotEnoughShards)
    assert (err.object, err.need, err.kind) == ("blob", 4, "ShardsUnavailable")
    assert err.got < err.need and err.stripe >= 0
    assert err.nodes == down, "the nodes to bring back"
    assert len(err.failures) >= 3
    assert {"index", "node", "why"} <= set(err.failures[0])
    assert {f["node"] for f in err.failures} <= set(down)
    for node in down:
        cluster.restart(node)
    assert bytes(Client(str(cluster.cluster_file)).part(JOB, 5, 0).read("blob")) == data


def test_wiped_nodes_are_lost_and_a_missing_job_is_no_such_job(cluster, client):
    data = seeded(7, 200_000)
    report = client.save(JOB, 6, 0, 1, {"blob": data})
    wiped = [n for n in cluster.node_ids if n != report.manifest_nodes[0]][:3]
    for node in wiped:
        cluster.kill(node)
        shutil.rmtree(os.path.join(cluster.node_dir(node), "data"))
        cluster.restart(node)
    fresh = Client(str(cluster.cluster_file))
    with pytest.raises(rackpoint.NotEnoughShards) as e:
        fresh.part(JOB, 6, 0).read("blob")
    assert e.value.kind == "NotEnoughShards"
    assert {f["node"] for f in e.value.failures if f["why"] == "Missing"} == set(wiped)
    with pytest.raises(rackpoint.NoSuchJob) as e:
        fresh.part("no-such-job")
    assert e.value.job == "no-such-job"
    assert fresh.resume("no-such-job") is None


def test_a_save_with_half_the_nodes_down_reports_doubled_stripes(cluster):
    down = cluster.node_ids[3:]
    for node in down:  # one node of each rack stays up
        cluster.kill(node)
    client = Client(str(cluster.cluster_file))
    report = client.save(JOB, 8, 0, 1, {"blob": seeded(8, 300_000)})
    assert report.doubled_stripes > 0, "two shards of a stripe on a node"
    v = client.verify(JOB, 8)
    assert not v.healthy and not v.bad_shards and v.degraded_placement
    assert (v.survives_more_failures, v.survives_rack_failures) == (1, 1)
    assert [c.survives_more_failures for c in client.list(JOB)] == [1]
    for node in down:
        cluster.restart(node)


def test_gil_is_released_during_save(client):
    data = np.random.default_rng(7).integers(0, 256, 48 << 20, dtype=np.uint8)
    ticks = 0
    stop = threading.Event()

    def ticker():
        nonlocal ticks
        while not stop.is_set():
            ticks += 1

    during = []

    def saver():
        before = ticks
        client.save(JOB, 7, 0, 1, {"big": data})
        during.append(ticks - before)

    t = threading.Thread(target=ticker)
    t.start()
    try:
        s = threading.Thread(target=saver)
        s.start()
        s.join()
    finally:
        stop.set()
        t.join()
    # With the GIL held for the whole call the ticker could not have run at all meanwhile.
    assert during and during[0] > 1000


def test_save_async_copies_then_uploads(client):
    buf = bytearray(seeded(8, 300_000))
    original = bytes(buf)
    handle = client.save_async(JOB, 8, 0, 1, {"state": buf})
    buf[:] = b"\0" * len(buf)  # the caller's buffer is free as soon as save_async returns
    report = handle.wait()
    assert handle.done() and report.bytes == len(original)
    with pytest.raises(rackpoint.InvalidInput):
        handle.wait()
    assert bytes(client.restore(JOB, 8, 0)["state"]) == original


def _save_in_child(client: Client, conn) -> None:
    # The client the parent made (and used) must work in a fork child.
    try:
        client.save(JOB, 12, 0, 1, {"child": b"from the child" * 1000})
        conn.send("ok")
    except Exception as e:  # reported to the parent
        conn.send(repr(e))


def test_client_survives_fork(client):
    client.save(JOB, 11, 0, 1, {"parent": b"p" * 10})
    ctx = multiprocessing.get_context("fork")
    parent_end, child_end = ctx.Pipe()
    p = ctx.Process(target=_save_in_child, args=(client, child_end))
    p.start()
    assert parent_end.recv() == "ok"
    p.join()
    assert p.exitcode == 0
    assert bytes(client.part(JOB, 12, 0).read("child")) == b"from the child" * 1000
    # The parent's own client still works after the fork.
    assert bytes(client.part(JOB, 11, 0).read("parent")) == b"p" * 10


def test_list_verify_resume_delete(cluster, client):
    client.save(JOB, 20, 0, 2, {"x": seeded(9, 50_000)})
    client.save(JOB, 20, 1, 2, {"x": seeded(10, 50_000)})
    client.save(JOB, 30, 0, 2, {"x": seeded(11, 50_000)})  # rank 1 never saves: incomplete
    listed = {c.step: c for c in client.list(JOB)}
    assert listed[20].complete and listed[20].parts == 2
    assert not listed[30].complete and listed[30].parts == 1
    point = client.resume(JOB)
    assert point.step == 20 and [p.rank for p in point.parts] == [0, 1]
    assert bytes(point.parts[1].read("x")) == seeded(10, 50_000)
    report = client.verify(JOB, 20)
    assert report.healthy and report.shards_ok > 0 and not report.bad_shards
    shards, manifests = client.delete(JOB, 20)
    assert shards > 0 and manifests > 0
    assert client.resume(JOB) is None


def test_jobs_lists_every_job_of_the_cluster(cluster, client):
    client.save("jobs-a", 1, 0, 1, {"x": seeded(21, 10_000)})
    client.save("jobs-a", 2, 0, 1, {"x": seeded(22, 10_000)})
    client.save("jobs-b", 5, 0, 2, {"x": seeded(23, 10_000)})  # rank 1 never saves
    listed = client.jobs()
    assert listed.unseen_nodes == [] and not listed.may_miss_jobs
    jobs = {j.job: j for j in listed.jobs}
    assert sorted(jobs) == ["jobs-a", "jobs-b"]
    a, b = jobs["jobs-a"], jobs["jobs-b"]
    assert (a.checkpoints, a.complete_checkpoints, a.newest_complete_step) == (2, 2, 2)
    assert (b.checkpoints, b.complete_checkpoints, b.newest_step) == (1, 0, 5)
    assert b.newest_complete_step is None and a.shard_bytes > 20_000


def test_a_listing_names_the_nodes_it_did_not_see(cluster, client):
    client.save(JOB, 40, 0, 1, {"x": seeded(12, 20_000)})
    listed = client.list(JOB)
    assert isinstance(listed, rackpoint.CheckpointList)
    assert listed.unseen_nodes == [] and listed.complete
    assert [c.step for c in listed] == [40] and len(listed) == 1 and listed[-1].step == 40
    assert not listed[0].deleting and listed[0].deleting_nodes == []
    cluster.kill(5)
    listed = client.list(JOB)
    assert listed.unseen_nodes == [5] and not listed.complete
    assert [c.step for c in listed] == [40], "m + 1 manifest copies: still listed"
    point = client.resume(JOB)
    assert point.step == 40 and point.unseen_nodes == [5]
