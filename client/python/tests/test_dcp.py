"""rackpoint.dcp with real torch: gloo jobs of 2 and 4 real rank processes on 127.0.0.1 save
and load through DCP into a cluster of real node processes, with nodes SIGKILLed, bytes flipped
on a node's disk, a rank dying before finish, loads at another world size, and async_save."""

from __future__ import annotations

import pickle

import pytest
import torch.distributed as dist
import torch.multiprocessing as mp

import rackpoint
from rackpoint.dcp import Reader, Writer, parse_checkpoint_id

import dcp_workers as w

JOB = "dcpjob"


def test_checkpoint_ids():
    assert parse_checkpoint_id("rackpoint://dcpjob/12") == ("dcpjob", 12)
    assert parse_checkpoint_id("rackpoint://dcpjob/latest") == ("dcpjob", None)
    for bad in ["/tmp/x", "rackpoint://bad job/1", "rackpoint://j/-1", "rackpoint://j"]:
        assert not Writer.validate_checkpoint_id(bad)
        with pytest.raises(rackpoint.InvalidInput):
            parse_checkpoint_id(bad)
    with pytest.raises(rackpoint.InvalidInput):
        Writer("cluster.toml", "rackpoint://dcpjob/latest")


@pytest.fixture(scope="module")
def group_of_one():
    """The test process as a gloo group of one, to save and load in-process at world size 1."""
    w.join_group_of_one()
    yield
    dist.destroy_process_group()


def test_two_ranks_then_two_nodes_killed_load_at_four(cluster):
    cf = str(cluster.cluster_file)
    w.run_ranks(2, w.save, cf, f"rackpoint://{JOB}/1", 1)
    client = rackpoint.Client(cf)
    [ckpt] = client.list(JOB)
    assert ckpt.complete and ckpt.world_size == 2
    # Rank 0's part holds the metadata; rank 1's holds only its own items.
    assert ".metadata" in client.part(JOB, 1, 0).objects
    assert ".metadata" not in client.part(JOB, 1, 1).objects
    for node in cluster.node_ids[:2]:
        cluster.kill(node)
    w.run_ranks(4, w.load_and_check, cf, f"rackpoint://{JOB}/1", 1)


def test_four_ranks_then_load_latest_at_one(cluster, group_of_one):
    cf = str(cluster.cluster_file)
    w.run_ranks(4, w.save, cf, f"rackpoint://{JOB}/4", 4)
    assert [(c.world_size, c.complete) for c in rackpoint.Client(cf).list(JOB)] == [(4, True)]
    w.load_and_check(0, 1, cf, f"rackpoint://{JOB}/latest", 4)


def test_flipped_bytes_on_a_node_disk_still_load(cluster, group_of_one):
    cf = str(cluster.cluster_file)
    w.save(0, 1, cf, f"rackpoint://{JOB}/2", 2)
    # 64 bytes from the middle of the fp32 tensor (its object is its raw bytes).
    needle = w.tensors(2)["fp32"].numpy().tobytes()[100_000:100_064]
    corrupted = []
    for node in cluster.node_ids:
        try:
            corrupted = cluster.corrupt_on_disk(node, [needle])
            break
        except RuntimeError as e:
            assert "are stored under" in str(e), e  # not on this node: try the next
    assert corrupted, "the needle is on no node's disk"
    assert rackpoint.Client(cf).verify(JOB, 2).bad_shards, "verify must see the flipped shard"
    w.load_and_check(0, 1, cf, f"rackpoint://{JOB}/2", 2)


def test_rank_dying_before_finish_leaves_no_complete_checkpoint(cluster, group_of_one):
    cf = str(cluster.cluster_file)
    with pytest.raises((mp.ProcessExitedException, mp.ProcessRaisedException)):
        w.run_ranks(2, w.save_then_die, cf, JOB)
    client = rackpoint.Client(cf)
    listed = {c.step: c for c in client.list(JOB)}
    assert listed[1].complete
    assert listed[2].parts == 1 and not listed[2].complete  # rank 1's part, never rank 0's
    assert client.resume(JOB).step == 1
    w.load_and_check(0, 1, cf, f"rackpoint://{JOB}/latest", 1)


def test_async_save_then_load_latest_on_two_ranks(cluster):
    cf = str(cluster.cluster_file)
    writer = Writer(cf, f"rackpoint://{JOB}/3")
    writer.client  # connected: pickling must still leave the connection out
    again = pickle.loads(pickle.dumps(writer))
    assert again._client is None and again.job == JOB and again.step == 3
    assert pickle.loads(pickle.dumps(Reader(cf, f"rackpoint://{JOB}/latest"))).job == JOB
    w.run_ranks(2, w.async_save_then_load_latest, cf, JOB, 3)


def test_latest_with_nodes_down_is_unavailable_not_missing(cluster, group_of_one):
    cf = str(cluster.cluster_file)
    with pytest.raises(rackpoint.InvalidInput, match="has no checkpoint, or none complete"):
        Reader(cf, "rackpoint://never-saved/latest").read_metadata()
    w.save(0, 1, cf, f"rackpoint://{JOB}/5", 5)
    down = cluster.node_ids[:3]  # m = 2: one too many, data intact
    for node in down:
        cluster.kill(node)
    with pytest.raises(rackpoint.Unavailable) as e:
        Reader(cf, f"rackpoint://{JOB}/latest").read_metadata()
    assert e.value.nodes and set(e.value.nodes) <= set(down), e.value
    assert "nothing is known lost" in str(e.value)
