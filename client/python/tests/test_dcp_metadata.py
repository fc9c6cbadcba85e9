"""The restricted unpickler that reads DCP's ``.metadata`` (rackpoint._unpickle with rackpoint.dcp's
allow-list), without a cluster: real DCP metadata of every shape reads back; a pickle naming
anything else, or modifying what it may name, is refused before it runs, and the marker file
its payload would make is never made."""

from __future__ import annotations

import ast
import builtins
import io
import os
import pickle
import subprocess
from pathlib import Path

import pytest
import torch
from torch.distributed.checkpoint import metadata as m

import rackpoint
from rackpoint import dcp
from rackpoint.dcp import _Stored

JOB, STEP = "victim", 9


def real_metadata() -> m.Metadata:
    """Metadata as DCP's default planner and rackpoint.dcp's Writer make it: tensors of several
    dtypes and memory formats, a tensor in two chunks, a bytes item, planner data and
    storage meta."""
    def props(dtype, memory_format=torch.contiguous_format, strides=None):
        return m.TensorProperties(dtype=dtype, memory_format=memory_format, strides=strides)

    whole = m.ChunkStorageMetadata(torch.Size([0, 0]), torch.Size([4, 8]))
    halves = [m.ChunkStorageMetadata(torch.Size([r * 2, 0]), torch.Size([2, 8])) for r in range(2)]
    state = {
        "w": m.TensorStorageMetadata(props(torch.bfloat16), torch.Size([4, 8]), [whole]),
        "cl": m.TensorStorageMetadata(props(torch.float32, torch.channels_last, (24, 1, 6, 3)),
                                      torch.Size([1, 3, 4, 2]),
                                      [m.ChunkStorageMetadata(torch.Size([0] * 4), torch.Size([1, 3, 4, 2]))]),
        "sharded": m.TensorStorageMetadata(props(torch.int64), torch.Size([4, 8]), halves),
        "loader": m.BytesStorageMetadata(),
    }
    storage = {
        m.MetadataIndex("w", torch.Size([0, 0]), 0): _Stored(0, "item-0", 64, "bfloat16", (4, 8)),
        m.MetadataIndex("cl", torch.Size([0] * 4), 0): _Stored(0, "item-1", 96, "float32", (1, 3, 4, 2)),
        m.MetadataIndex("sharded", torch.Size([0, 0]), 0): _Stored(0, "item-2", 128, "int64", (2, 8)),
        m.MetadataIndex("sharded", torch.Size([2, 0]), 1): _Stored(1, "item-0", 128, "int64", (2, 8)),
        m.MetadataIndex("loader"): _Stored(0, "item-3", 77),
    }
    return m.Metadata(state, planner_data={"w": ("w",), "sharded": ("model", 0, "sharded")},
                      storage_data=storage, storage_meta=m.StorageMeta("rackpoint://victim/9", "save-1"),
                      version="1.0.0")


def decode(data: bytes) -> m.Metadata:
    return dcp._decode_metadata(data, JOB, STEP, world_size=2)


@pytest.mark.parametrize("protocol", range(2, pickle.HIGHEST_PROTOCOL + 1))
def test_real_metadata_reads_back_at_protocols_2_and_up(protocol):
    """Protocols 0 and 1 need copyreg._reconstructor and builtins.object, which are not allowed:
    no writer of this metadata used them (pickle's default has been 4 or 5 since Python 3.8)."""
    want = real_metadata()
    got = decode(pickle.dumps(want, protocol=protocol))
    assert got == want
    assert got.state_dict_metadata["cl"].properties.memory_format == torch.channels_last
    assert got.state_dict_metadata["w"].properties.layout == torch.strided
    assert type(next(iter(got.storage_data))) is m.MetadataIndex


def test_the_writers_encoding_is_the_readers():
    want = real_metadata()
    data = dcp._encode_metadata(want, JOB, STEP, world_size=2)
    assert data.startswith(b"\x80\x04")  # protocol 4, whatever Python's default
    # What the writer stored before the restricted reader (pickle.dumps, the default protocol)
    # reads the same.
    assert decode(data) == decode(pickle.dumps(want)) == want


class Payload:
    """Pickles as a call of ``func(*args)``: what a malicious ``.metadata`` holds."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def touch_command(marker) -> str:
    return f"touch {marker}"


@pytest.mark.parametrize("make, refused", [
    (lambda marker: Payload(os.system, touch_command(marker)), f"{os.system.__module__}.system"),
    (lambda marker: Payload(subprocess.call, ["touch", str(marker)]), "subprocess.call"),
    (lambda marker: Payload(builtins.exec, f"open({str(marker)!r}, 'w')"), "builtins.exec"),
    (lambda marker: Payload(builtins.eval, f"open({str(marker)!r}, 'w')"), "builtins.eval"),
    (lambda marker: Payload(open, str(marker), "w"), "io.open"),
    (lambda marker: Payload(torch.save, {}, str(marker)), "torch.serialization.save"),
])
def test_a_payload_is_refused_and_never_runs(tmp_path, make, refused):
    marker = tmp_path / "ran"
    evil = make(marker)
    with pytest.raises(rackpoint.UnsafeMetadata) as e:
        decode(pickle.dumps(evil))
    assert e.value.refused == refused
    # Hidden inside real metadata, where DCP's planner data may hold anything.
    md = real_metadata()
    md.planner_data["w"] = evil
    with pytest.raises(rackpoint.UnsafeMetadata) as e:
        decode(pickle.dumps(md))
    assert e.value.refused == refused
    assert f"rackpoint://{JOB}/{STEP}" in str(e.value) and refused in str(e.value)
    assert (e.value.checkpoint, e.value.job, e.value.step, e.value.kind) == (
        f"rackpoint://{JOB}/{STEP}", JOB, STEP, "UnsafeMetadata")
    assert isinstance(e.value, rackpoint.MetadataError) and isinstance(e.value, rackpoint.RackpointError)
    assert not marker.exists()
    # The same bytes do run under plain pickle: the test's payload is real.
    pickle.loads(pickle.dumps(evil))
    assert marker.exists()


GLOBAL_OS_SYSTEM = b"cos\nsystem\n"  # protocol 0 GLOBAL opcode naming os.system


@pytest.mark.parametrize("data, refused", [
    # Protocol 0: INST names the class in the opcode itself.
    (b"(S'true'\nios\nsystem\n.", "global os.system"),
    # GLOBAL then REDUCE, by hand.
    (GLOBAL_OS_SYSTEM + b"(S'true'\ntR.", "global os.system"),
    # A name reached through an allowed module's attributes (protocol 4 dotted names).
    (b"\x80\x04\x8c%torch.distributed.checkpoint.metadata\x8c\tos.system\x93.",
     "global torch.distributed.checkpoint.metadata.os.system"),
    (b"\x80\x04\x8c\x05torch\x8c\x04load\x93.", "global torch.load"),
    # An extension code of copyreg's registry, and a persistent id.
    (b"\x80\x02\x82\x01.", "an extension code (copyreg registry)"),
    (b"\x80\x02K\x01Q.", "a persistent id"),
    # A dtype is a value, not a callable.
    (b"\x80\x04\x8c\x05torch\x8c\x07float32\x93)R.", "calling torch.float32"),
])
def test_hand_made_streams_are_refused(data, refused):
    with pytest.raises(rackpoint.UnsafeMetadata) as e:
        decode(data)
    assert e.value.refused == refused.removeprefix("global ")


def test_build_cannot_modify_a_class_or_add_attributes():
    name = b"\x8c%torch.distributed.checkpoint.metadata\x8c\x08Metadata\x93"
    # BUILD with a slot state on the class object itself would set Metadata.planted.
    on_class = b"\x80\x04" + name + b"N}\x8c\x07planted\x88s\x86b."
    with pytest.raises(rackpoint.UnsafeMetadata) as e:
        decode(on_class)
    assert e.value.refused == "setting the state of torch.distributed.checkpoint.metadata.Metadata"
    assert not hasattr(m.Metadata, "planted")
    # On a fresh instance only the dataclass's fields may be set.
    on_instance = b"\x80\x04" + name + b")\x81}\x8c\x06__eq__\x88sb."
    with pytest.raises(rackpoint.UnsafeMetadata) as e:
        decode(on_instance)
    assert e.value.refused == "setting '__eq__', not a field of Metadata"
    # A member of the memory format enum is shared by the process: not buildable either.
    enum = (b"\x80\x04\x8c%torch.distributed.checkpoint.metadata\x8c\x14_MEM_FORMAT_ENCODING\x93"
            b"K\x00\x85R}\x8c\x07_value_K\x07sb.")
    with pytest.raises(rackpoint.UnsafeMetadata):
        decode(enum)
    assert m._MEM_FORMAT_ENCODING.TORCH_CONTIGUOUS_FORMAT.value == 0


@pytest.mark.parametrize("data, detail", [
    (pickle.dumps(real_metadata())[:-20], "malformed"),
    (pickle.dumps(real_metadata()) + b"\x00", "1 bytes after the pickle's end"),
    (b"", "malformed"),
    (pickle.dumps({"state_dict_metadata": {}}), "holds no DCP metadata (a dict)"),
    (pickle.dumps(m.Metadata({}, storage_data=[])), "has no storage entries"),
    (pickle.dumps(m.Metadata({}, storage_data={m.MetadataIndex("x"): _Stored(0, "item-0", 4, "load", (1,))})),
     "bad storage entry"),
    (pickle.dumps(m.Metadata({}, storage_data={m.MetadataIndex("x"): _Stored(2, "item-0", 4)})),
     "bad storage entry"),  # rank 2 of a world of 2
    (pickle.dumps(m.Metadata({}, storage_data={m.MetadataIndex("x"): _Stored(0, "item-0", 5, "float32", (1,))})),
     "bad storage entry"),  # 5 bytes for one float32
])
def test_malformed_or_foreign_metadata_is_a_metadata_error(data, detail):
    with pytest.raises(rackpoint.MetadataError) as e:
        decode(data)
    assert type(e.value) is rackpoint.MetadataError
    assert detail in str(e.value) and e.value.checkpoint == f"rackpoint://{JOB}/{STEP}"


def test_the_writer_refuses_metadata_a_reader_would_refuse(monkeypatch, tmp_path):
    md = real_metadata()
    md.planner_data["w"] = Payload(os.system, touch_command(tmp_path / "ran"))
    with pytest.raises(rackpoint.UnsafeMetadata):
        dcp._encode_metadata(md, JOB, STEP, world_size=2)
    monkeypatch.setattr(dcp, "MAX_METADATA_BYTES", 100)
    with pytest.raises(rackpoint.MetadataError, match="over the 100 a Reader reads by default"):
        dcp._encode_metadata(real_metadata(), JOB, STEP, world_size=2)
    assert not (tmp_path / "ran").exists()


def test_the_errors_pickle_with_their_fields():
    """DCP gathers a rank's exception to the coordinator by pickling it."""
    with pytest.raises(rackpoint.UnsafeMetadata) as e:
        decode(pickle.dumps(Payload(os.system, "true")))
    again = pickle.loads(pickle.dumps(e.value))
    assert type(again) is rackpoint.UnsafeMetadata and str(again) == str(e.value)
    assert (again.checkpoint, again.refused, again.kind) == (e.value.checkpoint, e.value.refused, "UnsafeMetadata")


def test_no_module_of_the_package_unpickles_but_through_the_allow_list():
    """Tidy: bytes from a cluster are unpickled only by _unpickle.loads."""
    banned = {("pickle", "load"), ("pickle", "loads"), ("pickle", "Unpickler"), ("torch", "load"),
              ("marshal", "load"), ("marshal", "loads")}
    for path in Path(rackpoint.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
                assert (node.value.id, node.attr) not in banned, f"{path.name}:{node.lineno}"
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] + [getattr(node, "module", None) or ""]
                assert "_pickle" not in names and "marshal" not in names, f"{path.name}:{node.lineno}"
