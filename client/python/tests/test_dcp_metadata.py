"""The restricted unpickler that reads DCP's ``.metadata`` (rackpoint._unpickle with rackpoint.dcp's
allow-list), and the check of non-tensor items (torch's weights-only unpickler), without a
cluster: real DCP metadata of every shape and the non-tensor values of a training state read
back; a pickle naming anything else, or modifying what it may name, is refused before it runs,
and the marker file its payload would make is never made."""

from __future__ import annotations

import ast
import builtins
import collections
import io
import os
import pickle
import subprocess
from pathlib import Path

import pytest
import torch
from torch.distributed.checkpoint import metadata as m
from torch.distributed.checkpoint._nested_dict import flatten_state_dict

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
    """Tidy: bytes from a cluster are unpickled only by _unpickle.loads, or by torch.load with
    weights_only=True (the check of non-tensor items)."""
    banned = {("pickle", "load"), ("pickle", "loads"), ("pickle", "Unpickler"), ("torch", "load"),
              ("marshal", "load"), ("marshal", "loads")}
    for path in Path(rackpoint.__file__).parent.glob("*.py"):
        tree = ast.parse(path.read_text())
        weights_only = {id(node.func) for node in ast.walk(tree) if isinstance(node, ast.Call)
                        and any(k.arg == "weights_only" and isinstance(k.value, ast.Constant)
                                and k.value.value is True for k in node.keywords)}
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
                if (node.value.id, node.attr) == ("torch", "load") and id(node) in weights_only:
                    continue
                assert (node.value.id, node.attr) not in banned, f"{path.name}:{node.lineno}"
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] + [getattr(node, "module", None) or ""]
                assert "_pickle" not in names and "marshal" not in names, f"{path.name}:{node.lineno}"


# The check of non-tensor items: DCP saves every value of a state dict that is not a tensor as a
# torch.save of it, and its default load planner reads it with torch.load(weights_only=False).


def saved(value) -> bytes:
    """``value`` as DCP's default save planner stores a non-tensor item."""
    buf = io.BytesIO()
    torch.save(value, buf)
    return buf.getvalue()


def check(data: bytes, fqn: str = "optim.param_groups.0.lr") -> None:
    dcp._check_object(data, JOB, STEP, fqn, "item-3 of rank 0's part")


@pytest.mark.parametrize("value", [
    {"lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.01, "amsgrad": False,
     "foreach": None, "params": [0, 1, 2, 3], "name": "decay"},
    [0.5, 7, "cosine", None, True, 2 ** 70, 1 + 2j],
    (torch.arange(4), torch.ones(2, 3, dtype=torch.bfloat16)),
    io.BytesIO(b"loader state" * 10),
    {"device": torch.device("cpu"), "dtype": torch.float16, "size": torch.Size([2, 3]),
     "ordered": collections.OrderedDict(a=1), "counts": collections.Counter("abca"),
     "set": {1, 2}, "bytes": b"raw", "bytearray": bytearray(b"ba")},
], ids=["param_group", "scalars", "tensor_tuple", "bytesio", "torch_and_collections"])
def test_non_tensor_values_of_a_training_state_pass_the_check(value):
    check(saved(value))


def test_an_optimizer_state_dict_passes_the_check_item_by_item():
    """What DCP makes of an optimizer's state dict: every leaf that is not a tensor is an item."""
    model = torch.nn.Linear(4, 2)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.randn(3, 4)).sum().backward()
    opt.step()
    flat, _ = flatten_state_dict({"optim": opt.state_dict()})
    items = {fqn: v for fqn, v in flat.items() if not isinstance(v, torch.Tensor)}
    assert any(".param_groups." in fqn for fqn in items)
    for fqn, value in items.items():
        check(saved(value), fqn)


@pytest.mark.parametrize("make, refused", [
    (lambda marker: Payload(os.system, touch_command(marker)), f"{os.system.__module__}.system"),
    (lambda marker: Payload(builtins.exec, f"open({str(marker)!r}, 'w')"), "builtins.exec"),
    (lambda marker: Payload(builtins.eval, f"open({str(marker)!r}, 'w')"), "builtins.eval"),
    (lambda marker: Payload(torch.save, {}, str(marker)), "torch.serialization.save"),
])
def test_a_non_tensor_payload_is_refused_and_never_runs(tmp_path, make, refused):
    marker = tmp_path / "ran"
    evil = make(marker)
    # Alone, and inside a param group, where DCP's planner would unpickle it.
    for value in (evil, {"lr": 1e-3, "betas": (0.9, 0.999), "params": [0], "scheduler": evil}):
        with pytest.raises(rackpoint.UnsafeObject) as e:
            check(saved(value))
        err = e.value
        assert (err.refused, err.fqn, err.checkpoint, err.job, err.step, err.kind) == (
            refused, "optim.param_groups.0.lr", f"rackpoint://{JOB}/{STEP}", JOB, STEP, "UnsafeObject")
        assert "'optim.param_groups.0.lr' (item-3 of rank 0's part) refused" in str(err) and refused in str(err)
        assert isinstance(err, rackpoint.RackpointError) and not isinstance(err, rackpoint.MetadataError)
        assert not marker.exists()
    # What DCP's default planner does with the same bytes runs it: the payload is real.
    torch.load(io.BytesIO(saved(evil)), weights_only=False)
    assert marker.exists()


@pytest.mark.parametrize("data", [
    pickle.dumps(Payload(os.system, "true"), protocol=2),  # a bare pickle: torch's legacy format
    pickle.dumps(Payload(os.system, "true")),
    b"",
    b"not a pickle",
    saved({"lr": 1e-3})[:-30],
], ids=["bare_pickle_2", "bare_pickle", "empty", "garbage", "truncated"])
@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_what_torch_will_not_read_safely_is_refused(data):
    with pytest.raises(rackpoint.UnsafeObject) as e:
        check(data)
    assert e.value.fqn == "optim.param_groups.0.lr"
    assert "torch's weights-only unpickler" in str(e.value)


def test_torch_before_2_6_checks_nothing_and_refuses(monkeypatch):
    """torch.load(weights_only=True) could still run code before torch 2.6 (CVE-2025-32434)."""
    monkeypatch.setattr(torch, "__version__", "2.5.1")
    with pytest.raises(rackpoint.UnsafeObject, match="torch 2.5.1's weights-only unpickler cannot vouch") as e:
        check(saved({"lr": 1e-3}))
    assert e.value.refused is None


def test_the_check_leaves_torchs_safe_globals_as_it_found_them():
    before = torch.serialization.get_safe_globals()
    check(saved(io.BytesIO(b"x")))
    assert set(torch.serialization.get_safe_globals()) == set(before)
    assert io.BytesIO not in before
    with pytest.raises(pickle.UnpicklingError):  # allowed only during the check
        torch.load(io.BytesIO(saved(io.BytesIO(b"x"))), weights_only=True)
    # A process that allowed io.BytesIO itself keeps it.
    torch.serialization.add_safe_globals([io.BytesIO])
    try:
        check(saved(io.BytesIO(b"x")))
        assert io.BytesIO in torch.serialization.get_safe_globals()
    finally:
        torch.serialization.clear_safe_globals()
        torch.serialization.add_safe_globals(before)


def test_an_unsafe_object_error_pickles_with_its_fields():
    with pytest.raises(rackpoint.UnsafeObject) as e:
        check(saved(Payload(os.system, "true")))
    again = pickle.loads(pickle.dumps(e.value))
    assert type(again) is rackpoint.UnsafeObject and str(again) == str(e.value)
    assert (again.checkpoint, again.fqn, again.refused, again.kind) == (
        e.value.checkpoint, e.value.fqn, e.value.refused, "UnsafeObject")
