"""rackpoint.dcp with real torch: gloo jobs of 2 and 4 real rank processes on 127.0.0.1 save
and load through DCP into a cluster of real node processes, with nodes SIGKILLed, bytes flipped
on a node's disk, a rank dying before finish, loads at another world size, async_save, and a
malicious newer step whose metadata or non-tensor items would run code on load."""

from __future__ import annotations

import io
import os
import pickle
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
import torch.multiprocessing as mp
from torch.distributed.checkpoint.api import CheckpointException
from torch.distributed.checkpoint.metadata import Metadata

import rackpoint
from rackpoint import dcp as rackpoint_dcp
from rackpoint.dcp import FORMAT, Reader, Writer, parse_checkpoint_id

import dcp_workers as w
from test_dcp_metadata import Payload

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


def test_cert_and_key_go_to_the_client_only_when_given(monkeypatch):
    """Without them the client is made as Client(cluster), which every native module takes."""
    made = []

    class Recorded:
        def __init__(self, *args, **kwargs):
            made.append((args, kwargs))

    monkeypatch.setattr(rackpoint_dcp, "Client", Recorded)
    Writer("c.toml").client
    Reader("c.toml", f"rackpoint://{JOB}/latest").client
    Writer("c.toml", f"rackpoint://{JOB}/1", cert="id.crt", key="id.key").client
    Reader("c.toml", cert="id.crt").client
    Reader(Path("c.toml"), key="id.key", trust_objects=True).client
    assert made == [(("c.toml",), {}), (("c.toml",), {}), (("c.toml",), {"cert": "id.crt", "key": "id.key"}),
                    (("c.toml",), {"cert": "id.crt"}), (("c.toml",), {"key": "id.key"})]
    # A pickled writer or reader keeps its identity (not its client) and connects with it.
    for made_by in (Writer("c.toml", cert="id.crt", key="id.key"), Reader("c.toml", cert="id.crt", key="id.key")):
        made_by.client
        again = pickle.loads(pickle.dumps(made_by))
        assert again._client is None
        again.client
        assert made[-1] == (("c.toml",), {"cert": "id.crt", "key": "id.key"})


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


def test_a_planted_newer_step_runs_nothing_on_load_latest(cluster, group_of_one, tmp_path):
    """Issue 16: anyone who can save to the cluster commits, as a newer step of the victim's
    job, a `.metadata` whose unpickling runs a command. Loading `latest` refuses it with the
    checkpoint and the global named, and the command never runs."""
    cf = str(cluster.cluster_file)
    w.save(0, 1, cf, f"rackpoint://{JOB}/1", 1)
    marker = tmp_path / "attacker-ran"
    planted = Metadata({}, planner_data=Payload(os.system, f"touch {marker}"), storage_data={})
    client = rackpoint.Client(cf)
    client.save(JOB, 2, 0, 1, {".metadata": pickle.dumps(planted)}, {"format": FORMAT})
    assert client.resume(JOB).step == 2  # complete: `latest` is the planted step

    refused = f"{os.system.__module__}.system"
    with pytest.raises(rackpoint.UnsafeMetadata) as e:
        Reader(cf, f"rackpoint://{JOB}/latest").read_metadata()
    assert (e.value.checkpoint, e.value.refused) == (f"rackpoint://{JOB}/2", refused)
    # DCP reports a rank's failed read_metadata in a CheckpointException, with its message.
    with pytest.raises(CheckpointException) as e:
        dcp.load(w.state(0, 1), checkpoint_id=f"rackpoint://{JOB}/latest", storage_reader=Reader(cf))
    assert f"rackpoint://{JOB}/2: .metadata refused" in str(e.value) and refused in str(e.value)
    assert not marker.exists()
    w.load_and_check(0, 1, cf, f"rackpoint://{JOB}/1", 1)  # the job's own step still loads


def test_metadata_of_another_format_or_over_the_bound_is_not_decoded(cluster, tmp_path):
    cf = str(cluster.cluster_file)
    client = rackpoint.Client(cf)
    marker = tmp_path / "attacker-ran"
    payload = pickle.dumps(Payload(os.system, f"touch {marker}"))
    client.save(JOB, 1, 0, 1, {".metadata": payload}, {"format": "rackpoint.dcp/99"})
    client.save(JOB, 2, 0, 1, {".metadata": payload}, {"format": FORMAT})
    client.save(JOB, 3, 0, 1, {"model": b"not DCP"})
    with pytest.raises(rackpoint.MetadataError, match="format 'rackpoint.dcp/99'; this reader reads"):
        Reader(cf, f"rackpoint://{JOB}/1").read_metadata()
    # Refused on its length alone (a MetadataError, not the UnsafeMetadata its decode would give).
    with pytest.raises(rackpoint.MetadataError, match=f"is {len(payload)} bytes, over max_metadata_bytes") as e:
        Reader(cf, f"rackpoint://{JOB}/2", max_metadata_bytes=len(payload) - 1).read_metadata()
    assert type(e.value) is rackpoint.MetadataError
    with pytest.raises(rackpoint.UnsafeMetadata):
        Reader(cf, f"rackpoint://{JOB}/2", max_metadata_bytes=len(payload)).read_metadata()
    with pytest.raises(rackpoint.MetadataError, match="format None"):
        Reader(cf, f"rackpoint://{JOB}/3").read_metadata()
    assert not marker.exists()


def test_a_planted_newer_step_runs_nothing_through_its_non_tensor_items(cluster, group_of_one, tmp_path):
    """The same attack through the other pickles of a checkpoint: the planted step copies a real
    one, metadata and all (which the allow-list accepts), with every non-tensor item (an
    optimizer's param_groups, the loader state) replaced by a torch.save of a payload, which
    DCP's load planner reads with torch.load(weights_only=False). Loading `latest` refuses the
    step with UnsafeObject, naming the item and the global, and the command never runs; a
    Reader that trusts objects runs it (the attack is real)."""
    cf = str(cluster.cluster_file)
    w.save(0, 1, cf, f"rackpoint://{JOB}/1", 1)
    client = rackpoint.Client(cf)
    part = client.part(JOB, 1, 0)
    objects = {name: bytes(part.read(name)) for name in part.objects}
    metadata = rackpoint_dcp._decode_metadata(objects[".metadata"], JOB, 1, 1)
    marker = tmp_path / "attacker-ran"
    payload = io.BytesIO()
    torch.save(Payload(os.system, f"touch {marker}"), payload)
    poisoned = set()
    for index, stored in metadata.storage_data.items():
        if stored.dtype is None:
            objects[stored.object] = payload.getvalue()
            poisoned.add(index.fqn)
    assert "loader" in poisoned and any(".param_groups." in fqn for fqn in poisoned)
    client.save(JOB, 2, 0, 1, objects, {"format": FORMAT})
    assert client.resume(JOB).step == 2

    with pytest.raises(CheckpointException) as e:
        dcp.load(w.state(0, 1), checkpoint_id=f"rackpoint://{JOB}/latest", storage_reader=Reader(cf))
    [(err, _)] = e.value.failures.values()  # the rank's exception, as DCP gathered it
    assert type(err) is rackpoint.UnsafeObject
    assert (err.checkpoint, err.refused) == (f"rackpoint://{JOB}/2", f"{os.system.__module__}.system")
    assert err.fqn in poisoned and f"non-tensor item {err.fqn!r}" in str(e.value)
    assert not marker.exists()
    w.load_and_check(0, 1, cf, f"rackpoint://{JOB}/1", 1)  # the job's own step still loads

    try:
        dcp.load(w.state(0, 1), checkpoint_id=f"rackpoint://{JOB}/2", storage_reader=Reader(cf, trust_objects=True))
    except (Exception, CheckpointException):
        pass  # the state now holds the command's exit status; what matters is that it ran
    assert marker.exists()


def test_non_tensor_items_are_checked_and_round_trip(cluster, group_of_one, monkeypatch):
    """A training state's non-tensor items (AdamW's param_groups, the loader's BytesIO) pass the
    check and load as saved; every one of them went through the check first."""
    cf = str(cluster.cluster_file)
    w.save(0, 1, cf, f"rackpoint://{JOB}/1", 1)
    checked = []
    check = rackpoint_dcp._check_object

    def spy(data, job, step, fqn, where):
        checked.append(fqn)
        check(data, job, step, fqn, where)

    monkeypatch.setattr(rackpoint_dcp, "_check_object", spy)
    w.load_and_check(0, 1, cf, f"rackpoint://{JOB}/1", 1)
    metadata = Reader(cf, f"rackpoint://{JOB}/1").read_metadata()
    items = [index.fqn for index, stored in metadata.storage_data.items() if stored.dtype is None]
    assert sorted(checked) == sorted(items)
    assert "loader" in items and "optim.param_groups.0.lr" in items and "optim.param_groups.0.betas" in items


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
