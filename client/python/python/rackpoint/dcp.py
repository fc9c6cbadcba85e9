"""PyTorch Distributed Checkpoint (DCP) storage for Rackpoint: ``Writer`` and ``Reader``.

Each rank's tensors are stored as raw bytes, one object per write item, as that rank's part
of checkpoint ``(job, step)``. The coordinator (rank 0) saves its part last, in ``finish``,
together with the pickled DCP ``.metadata``: a checkpoint is complete, and visible to
``resume``, only once every rank's part is committed, and a rank that fails before ``finish``
leaves it incomplete (``resume`` then falls back to the previous one). Any rank can read any
rank's objects, so DCP's load planner reshards (load at another world size works). Every object
is checked end to end (blake3) on load, and up to m lost or corrupt shards per stripe are
rebuilt from parity.

Checkpoint ids are ``rackpoint://JOB/STEP``; a reader also takes ``rackpoint://JOB/latest``,
resolved once on rank 0 (the newest complete, recoverable checkpoint) and broadcast over the
default process group. A malformed id raises ``rackpoint.InvalidInput`` naming the part that is
wrong (``checkpoint id 'rackpoint://llm/abc': step 'abc' is not a number ...``). The cluster is
the ``cluster.toml`` given, or else the one ``RACKPOINT_CLUSTER`` names, as for the CLI::

    import torch.distributed.checkpoint as dcp
    from rackpoint.dcp import Reader, Writer

    dcp.save(state_dict, checkpoint_id="rackpoint://llm/1200", storage_writer=Writer("cluster.toml"))
    dcp.load(state_dict, checkpoint_id="rackpoint://llm/latest", storage_reader=Reader("cluster.toml"))

``dcp.async_save`` works: DCP stages the state dict to CPU memory once, and the writer saves
from that staged copy without copying it again (the Rust client keeps a bounded number of bytes
in flight). A writer pickles without its connection, so it may be sent to another process.

Loading a checkpoint's metadata runs no code from it. ``.metadata`` is a pickle of DCP's
``Metadata``, which a ``Reader`` reads only with a restricted unpickler (``rackpoint._unpickle``):
the stream may name only DCP's metadata classes, ``torch.Size`` and torch's dtypes and layouts;
anything else raises ``rackpoint.UnsafeMetadata``, naming the checkpoint and the refused global,
before it is imported or called. The part's ``format`` marker and the object's length (at most
``max_metadata_bytes``) are checked before a byte of it is read. The writer checks the same way
that what it stores is readable.

Loading a non-tensor item runs no code from it either. DCP stores every value of the state dict
that is not a tensor (an optimizer's ``param_groups``, a loader's state) as a ``torch.save`` of
it (``BYTE_IO``), and its default load planner reads that back with
``torch.load(weights_only=False)``, which calls whatever the pickle names. So before a
``Reader`` hands an item's bytes to the planner it reads them once with torch's own safe
unpickler, ``torch.load(weights_only=True)`` (torch 2.6 or newer), which allows ``io.BytesIO``
here besides torch's own allow-list and what the process added with
``torch.serialization.add_safe_globals``. If that refuses them, the load raises
``rackpoint.UnsafeObject``, naming the checkpoint, the item and the refused global, and the
planner never sees them; if it reads them, every global the pickle names is allow-listed, so
the planner's ``torch.load`` of the same bytes calls only those. ``Reader(trust_objects=True)``
skips this check, for state dicts holding other Python objects: only for stores whose every
writer is trusted.
"""

from __future__ import annotations

import dataclasses
import functools
import io
import math
import os
import pickle
import re
import threading
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch.distributed.checkpoint import metadata as dcp_metadata
from torch.distributed.checkpoint.metadata import Metadata, MetadataIndex
from torch.distributed.checkpoint.planner import (
    LoadItemType,
    LoadPlan,
    LoadPlanner,
    ReadItem,
    SavePlan,
    SavePlanner,
    WriteItemType,
)
from torch.distributed.checkpoint.storage import StorageReader, StorageWriter, WriteResult
from torch.futures import Future

from . import _native, _unpickle
from ._errors import MetadataError, UnsafeMetadata, UnsafeObject, metadata_error
from ._native import Client, InvalidInput, RackpointError

__all__ = ["MAX_METADATA_BYTES", "MetadataError", "Reader", "UnsafeMetadata", "UnsafeObject", "Writer",
           "parse_checkpoint_id"]

SCHEME = "rackpoint://"
METADATA_OBJECT = ".metadata"
# The part metadata of rank 0's part. Its objects are raw bytes and its ".metadata" a pickle
# (protocol 4) of DCP's Metadata naming only the globals of `_metadata_allow_list`; every
# checkpoint this module ever wrote is of this format. A change of either takes a new marker:
# a reader refuses a format it does not know.
FORMAT = "rackpoint.dcp/1"
_PICKLE_PROTOCOL = 4
# Longest ".metadata" a Reader reads by default (Reader's max_metadata_bytes), and the longest a
# Writer stores. DCP's metadata takes about 200 bytes per write item (a tensor, or a shard of
# one, on one rank), so this holds some 5 million items.
MAX_METADATA_BYTES = 1 << 30
_ID_FORM = "rackpoint://JOB/STEP or rackpoint://JOB/latest"
_JOB_CHAR = re.compile(r"[A-Za-z0-9._-]")
_MAX_JOB_BYTES = 128  # MAX_JOB_NAME_BYTES of proto/src/limits.rs
_STEP = re.compile(r"[0-9]+")
_MAX_STEP = (1 << 64) - 1
# Longest repr of a malformed id an error message quotes.
_MAX_SHOWN_ID = 300
# Object bytes a reader buffers at once for reads that cannot land in place (resharding).
_READ_STAGING_BYTES = 512 << 20
_READ_THREADS = 4
# What a non-tensor item's pickle may name besides torch's weights-only allow-list: a state
# dict's io.BytesIO values (DCP saves the BytesIO object itself), whose construction and
# __setstate__ only fill a buffer.
_OBJECT_GLOBALS = (io.BytesIO,)
# Oldest torch whose weights-only unpickler the check relies on (before 2.6, torch.load with
# weights_only=True could still run code: CVE-2025-32434).
_OBJECT_CHECK_TORCH = (2, 6)
# torch's added safe globals are one set for the process: checks add and remove ours one at a time.
_object_globals_lock = threading.Lock()


def parse_checkpoint_id(checkpoint_id: str | os.PathLike) -> tuple[str, int | None]:
    """``"rackpoint://job/12"`` gives ``("job", 12)``; ``"rackpoint://job/latest"`` gives ``("job", None)``.

    Anything else raises ``InvalidInput`` naming the id and the part that is wrong (``part``:
    ``"id"``, ``"scheme"``, ``"job"`` or ``"step"``; ``checkpoint_id`` and ``detail`` too), for
    example ``checkpoint id 'rackpoint://llm/abc': step 'abc' is not a number``."""
    try:
        text = os.fspath(checkpoint_id)
    except TypeError:
        text = None
    if not isinstance(text, str):
        raise _bad_id(checkpoint_id, "id", f"is of type {type(checkpoint_id).__name__}, not a string: {_ID_FORM}")
    if not text.startswith(SCHEME):
        raise _bad_id(text, "scheme", f"does not start with {SCHEME} (the form is {_ID_FORM})")
    rest = text[len(SCHEME):]
    parts = (rest[:-1] if rest.endswith("/") else rest).split("/")
    if len(parts) == 1:
        raise _bad_id(text, "step", f"no step after the job (the form is {_ID_FORM})")
    if len(parts) > 2:
        raise _bad_id(text, "id", f"{len(parts)} parts after {SCHEME} where there are 2: JOB/STEP or JOB/latest")
    job, step = parts
    if not job:
        raise _bad_id(text, "job", "the job is empty")
    if len(job.encode()) > _MAX_JOB_BYTES:
        raise _bad_id(text, "job", f"job {job[:40]!r}... is {len(job.encode())} bytes, over the {_MAX_JOB_BYTES} a job name may have")
    bad = sorted({c for c in job if not _JOB_CHAR.fullmatch(c)})
    if bad:
        raise _bad_id(text, "job", f"job {job!r} has {', '.join(map(repr, bad))}: a job name has only A-Z a-z 0-9 . _ -")
    if step == "latest":
        return job, None
    if not step:
        raise _bad_id(text, "step", "the step is empty (a whole number, or latest)")
    if _STEP.fullmatch(step) is None:
        raise _bad_id(text, "step", f"step {step!r} is not a number (a step is a whole number 0 or more, or latest)")
    if len(step) > len(str(_MAX_STEP)) or int(step) > _MAX_STEP:
        raise _bad_id(text, "step", f"step {step[:40]} is over {_MAX_STEP}, the largest step")
    return job, int(step)


def _bad_id(checkpoint_id: Any, part: str, detail: str) -> InvalidInput:
    """An ``InvalidInput`` about a malformed checkpoint id, naming the ``part`` that is wrong."""
    shown = repr(checkpoint_id)
    if len(shown) > _MAX_SHOWN_ID:
        shown = f"{shown[:_MAX_SHOWN_ID]}..."
    err = InvalidInput(f"checkpoint id {shown}: {detail}")
    for name, value in (("kind", "InvalidInput"), ("checkpoint_id", checkpoint_id), ("part", part), ("detail", detail)):
        setattr(err, name, value)
    return err


@functools.cache
def _dtypes() -> dict[str, torch.dtype]:
    """torch's dtypes by the names ``_Stored.dtype`` holds (``"bfloat16"``)."""
    return {str(v).removeprefix("torch."): v for v in vars(torch).values() if isinstance(v, torch.dtype)}


@functools.cache
def _metadata_allow_list() -> _unpickle.AllowList:
    """What a ``.metadata`` pickle may name: DCP's metadata dataclasses, ``_Stored``, the enum
    ``TensorProperties`` pickles its memory format as, ``torch.Size``, torch's dtypes (pickled
    by name, never called) and layouts (pickled as a call of ``torch.serialization._get_layout``,
    here a look-up in a table of torch's layouts)."""
    classes = [getattr(dcp_metadata, name) for name in (
        "Metadata", "MetadataIndex", "TensorStorageMetadata", "BytesStorageMetadata",
        "ChunkStorageMetadata", "TensorProperties", "StorageMeta") if hasattr(dcp_metadata, name)]
    classes.append(_Stored)
    names: dict[tuple[str, str], Any] = {(c.__module__, c.__qualname__): c for c in classes}
    callables: list[Any] = list(classes)
    mem_format = getattr(dcp_metadata, "_MEM_FORMAT_ENCODING", None)
    if mem_format is not None:
        names[(mem_format.__module__, mem_format.__qualname__)] = mem_format
        callables.append(mem_format)
    names[("torch", "Size")] = torch.Size
    callables.append(torch.Size)
    for name, value in vars(torch).items():
        if isinstance(value, torch.dtype):
            names[("torch", name)] = value
    names[("torch.serialization", "_get_layout")] = _layout
    callables.append(_layout)
    return _unpickle.AllowList.of(names, callables, classes)


@functools.cache
def _layouts() -> dict[str, torch.layout]:
    return {str(v): v for v in vars(torch).values() if isinstance(v, torch.layout)}


def _layout(name: str) -> torch.layout:
    """Stands in for ``torch.serialization._get_layout``: the layout ``str(layout)`` names."""
    layout = _layouts().get(name) if type(name) is str else None
    if layout is None:
        raise ValueError(f"{name!r} is not a torch layout")
    return layout


def _decode_metadata(data: bytes | bytearray, job: str, step: int, world_size: int) -> Metadata:
    """The DCP metadata pickled in ``data``, read with the allow-list; ``UnsafeMetadata`` when
    the pickle names anything else, ``MetadataError`` when it is malformed or not DCP's
    metadata with Rackpoint's storage entries. Runs no code from ``data``."""
    try:
        metadata = _unpickle.loads(data, _metadata_allow_list())
    except _unpickle.Refused as e:
        refused = e.what.removeprefix("global ")
        raise metadata_error(
            UnsafeMetadata, job, step,
            f"{METADATA_OBJECT} refused, nothing in it ran: it asks for {e.what}, which is not "
            "in DCP's metadata (only DCP's metadata classes, torch.Size, dtypes and layouts are)",
            refused=refused) from None
    except _unpickle.Malformed as e:
        raise metadata_error(MetadataError, job, step, f"{METADATA_OBJECT} is malformed: {e}") from None
    if not isinstance(metadata, Metadata) or type(metadata.state_dict_metadata) is not dict:
        raise metadata_error(MetadataError, job, step, f"{METADATA_OBJECT} holds no DCP metadata "
                             f"(a {type(metadata).__name__})")
    storage = metadata.storage_data
    if type(storage) is not dict:
        raise metadata_error(MetadataError, job, step, f"{METADATA_OBJECT} has no storage entries")
    for index, stored in storage.items():
        if type(index) is not MetadataIndex or type(stored) is not _Stored or not stored.valid(world_size):
            raise metadata_error(MetadataError, job, step,
                                 f"{METADATA_OBJECT} has a bad storage entry: {index!r}: {stored!r}")
    return metadata


def _encode_metadata(metadata: Metadata, job: str, step: int, world_size: int) -> bytes:
    """``metadata`` pickled, after checking that a Reader will read it (the same decode)."""
    data = pickle.dumps(metadata, protocol=_PICKLE_PROTOCOL)
    if len(data) > MAX_METADATA_BYTES:
        raise metadata_error(MetadataError, job, step, f"{METADATA_OBJECT} would be {len(data)} bytes, "
                             f"over the {MAX_METADATA_BYTES} a Reader reads by default")
    _decode_metadata(data, job, step, world_size)
    return data


def _is_rackpoint_id(checkpoint_id: Any) -> bool:
    try:
        parse_checkpoint_id(checkpoint_id)
    except InvalidInput:
        return False
    return True


@dataclass(frozen=True)
class _PartOf:
    """The part a rank writes: set by the coordinator in ``prepare_global_plan``."""

    rank: int
    world_size: int


@dataclass(frozen=True)
class _Stored:
    """Where one write item is: object ``object`` of rank ``rank``'s part, raw bytes."""

    rank: int
    object: str
    nbytes: int
    dtype: str | None = None  # for tensors, e.g. "bfloat16"
    shape: tuple[int, ...] | None = None

    def valid(self, world_size: int) -> bool:
        """Whether the fields are of their types and agree (what a decoded entry must be)."""
        def count(v: Any) -> bool:
            return type(v) is int and v >= 0
        if not (count(self.rank) and self.rank < world_size and type(self.object) is str
                and count(self.nbytes)):
            return False
        if self.dtype is None:
            return self.shape is None
        dtype = _dtypes().get(self.dtype) if type(self.dtype) is str else None
        if dtype is None or type(self.shape) is not tuple or not all(count(n) for n in self.shape):
            return False
        return math.prod(self.shape) * dtype.itemsize == self.nbytes


def _check_object(data: bytes | bytearray, job: str, step: int, fqn: str, where: str) -> None:
    """Raises ``UnsafeObject`` unless torch's weights-only unpickler reads ``data``, a non-tensor
    item (``fqn``, stored as ``where``) that DCP's load planner will read with
    ``torch.load(weights_only=False)``: when it does, every global the pickle names is in
    torch's allow-list (or ``_OBJECT_GLOBALS``), so the planner's load calls nothing else."""
    # The one difference of name look-up between torch's two unpicklers: at pickle protocol 3
    # and up the weights-only one still reads a Python 2 module name (__builtin__.set,
    # UserDict.OrderedDict) as its Python 3 one, where the planner's imports the module named.
    # No such module exists in Python 3, so there the planner's load fails, calling nothing.
    def refuse(detail: str, refused: str | None = None) -> UnsafeObject:
        return metadata_error(
            UnsafeObject, job, step,
            f"non-tensor item {fqn!r} ({where}) refused before DCP's planner unpickled it: {detail}; "
            "Reader(trust_objects=True) skips this check, only for a store whose every writer is trusted",
            fqn=fqn, refused=refused)

    if torch.torch_version.TorchVersion(torch.__version__) < _OBJECT_CHECK_TORCH:
        raise refuse(f"torch {torch.__version__}'s weights-only unpickler cannot vouch for it "
                     "(CVE-2025-32434); torch 2.6 or newer checks it")
    try:
        with _object_globals_lock:
            # Only what the process has not allowed itself, so that leaving removes nothing of its.
            ours = [g for g in _OBJECT_GLOBALS if g not in torch.serialization.get_safe_globals()]
            with torch.serialization.safe_globals(ours):
                torch.load(io.BytesIO(data), map_location="cpu", weights_only=True, mmap=False)
    except Exception as e:
        message = str(e)
        found = re.search(r"GLOBAL (\S+) (?:was not an allowed global|whose module)", message)
        if found is not None:
            refused = found.group(1)
            if "." not in refused:  # torch's message names builtins.exec as "exec"
                refused = f"builtins.{refused}"
            raise refuse(f"it asks for {refused}, which torch's weights-only unpickler does not allow",
                         refused) from None
        # torch's UnpicklingError wraps the unpickler's own error in advice (the context).
        cause = e.__context__ if isinstance(e, pickle.UnpicklingError) and e.__context__ is not None else e
        reason = " ".join(str(cause).split())[:300]
        raise refuse(f"torch's weights-only unpickler does not read it ({type(cause).__name__}: {reason})") from None


class _Connected:
    """The lazily made client, left out of pickles (a writer may be sent to another process).
    ``cluster`` is the argument, or else ``RACKPOINT_CLUSTER`` read when the writer or reader
    is made (``InvalidInput`` when neither is given), as the CLI takes it. ``cert`` and ``key``
    go to ``Client`` only when given (a client without them takes none, or
    ``RACKPOINT_CERT``/``RACKPOINT_KEY``)."""

    def __init__(self, cluster: str | os.PathLike | None, cert: Any = None, key: Any = None) -> None:
        if cluster is None:
            cluster = os.environ.get("RACKPOINT_CLUSTER") or None
        if cluster is None:
            raise InvalidInput(f"no cluster given: pass {type(self).__name__}(cluster) or set RACKPOINT_CLUSTER "
                               "to the cluster's cluster.toml")
        self.cluster = os.fspath(cluster)
        self._identity = {name: value for name, value in (("cert", cert), ("key", key)) if value is not None}
        self._client: Client | None = None

    @property
    def client(self) -> Client:
        if self._client is None:
            self._client = Client(self.cluster, **self._identity)
        return self._client

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_client"] = None
        state["_staged"] = None
        state["_parts"] = {}
        return state


class Writer(_Connected, StorageWriter):
    """DCP ``StorageWriter`` saving to the cluster of ``cluster`` (its ``cluster.toml``; when
    ``None``, the ``RACKPOINT_CLUSTER`` variable's, read now).

    ``cert`` and ``key``: the identity the client presents to the cluster, passed to
    ``rackpoint.Client(cluster, cert=..., key=...)`` as given (each only when not ``None``;
    without them the client is made as ``Client(cluster)``). A pickled writer keeps them.

    ``deadline_s``: seconds from when the writer is made (``time.monotonic``) by which every
    part it saves must be committed, for a preempted node's SIGTERM window: each part is then a
    priority save (``Client.save(..., deadline_s=...)``) given the time left, and one that
    cannot make it raises ``rackpoint.DeadlineExceeded`` having committed nothing (DCP reports
    it as the save's failure; the checkpoint is incomplete and ``latest`` the previous one)."""

    def __init__(self, cluster: str | os.PathLike | None = None, checkpoint_id: str | None = None, *,
                 cert: Any = None, key: Any = None, deadline_s: float | None = None) -> None:
        _Connected.__init__(self, cluster, cert, key)
        StorageWriter.__init__(self)
        self.deadline = None if deadline_s is None else time.monotonic() + float(deadline_s)
        self.job: str | None = None
        self.step: int | None = None
        self._is_coordinator = False
        self._staged: tuple[_PartOf, dict[str, Any]] | None = None
        self._parts: dict[int, Any] = {}
        if checkpoint_id is not None:
            self.reset(checkpoint_id)

    def reset(self, checkpoint_id: str | os.PathLike | None = None) -> None:
        if checkpoint_id is not None:
            job, step = parse_checkpoint_id(checkpoint_id)
            if step is None:
                raise _bad_id(os.fspath(checkpoint_id), "step",
                              "a checkpoint is saved at a step: rackpoint://JOB/STEP, not latest")
            self.job, self.step = job, step
        self._staged = None

    @classmethod
    def validate_checkpoint_id(cls, checkpoint_id: str | os.PathLike) -> bool:
        return _is_rackpoint_id(checkpoint_id)

    def set_up_storage_writer(self, is_coordinator: bool, *args: Any, **kwargs: Any) -> None:
        if self.job is None or self.step is None:
            raise InvalidInput("no checkpoint id: pass checkpoint_id='rackpoint://JOB/STEP'")
        self._is_coordinator = is_coordinator

    def prepare_local_plan(self, plan: SavePlan) -> SavePlan:
        return plan

    def prepare_global_plan(self, plans: list[SavePlan]) -> list[SavePlan]:
        world = len(plans)
        return [dataclasses.replace(p, storage_data=_PartOf(i, world)) for i, p in enumerate(plans)]

    def write_data(self, plan: SavePlan, planner: SavePlanner) -> Future[list[WriteResult]]:
        part: _PartOf = plan.storage_data
        objects: dict[str, Any] = {}
        results = []
        for i, item in enumerate(plan.items):
            name = f"item-{i}"
            data = planner.resolve_data(item)
            if item.type == WriteItemType.BYTE_IO:
                buf = data.getbuffer()
                stored = _Stored(part.rank, name, buf.nbytes)
            else:
                buf = data.detach()
                if buf.device.type != "cpu":
                    buf = buf.cpu()
                buf = buf.contiguous()
                nbytes = buf.numel() * buf.element_size()
                dtype = str(buf.dtype).removeprefix("torch.")
                stored = _Stored(part.rank, name, nbytes, dtype, tuple(buf.shape))
            objects[name] = buf
            results.append(WriteResult(index=item.index, size_in_bytes=stored.nbytes, storage_data=stored))
        if self._is_coordinator:
            # Saved in finish, with the metadata: the coordinator's part commits last.
            self._staged = (part, objects)
        else:
            self.client.save(self.job, self.step, part.rank, part.world_size, objects, **self._time_left())
        fut: Future[list[WriteResult]] = Future()
        fut.set_result(results)
        return fut

    def finish(self, metadata: Metadata, results: list[list[WriteResult]]) -> None:
        if self._staged is None:
            raise InvalidInput("finish called on a rank that is not the coordinator")
        part, objects = self._staged
        if part.rank != 0:
            raise InvalidInput(f"the coordinator must be rank 0 (it is part {part.rank})")
        metadata.storage_data = {wr.index: wr.storage_data for rank in results for wr in rank}
        objects[METADATA_OBJECT] = _encode_metadata(metadata, self.job, self.step, part.world_size)
        self.client.save(self.job, self.step, 0, part.world_size, objects, {"format": FORMAT},
                         **self._time_left())
        self._staged = None

    def _time_left(self) -> dict[str, float]:
        """The ``deadline_s`` argument of a save: none without a deadline."""
        if self.deadline is None:
            return {}
        return {"deadline_s": max(0.0, self.deadline - time.monotonic())}


class Reader(_Connected, StorageReader):
    """DCP ``StorageReader`` loading from the cluster of ``cluster`` (its ``cluster.toml``; when
    ``None``, the ``RACKPOINT_CLUSTER`` variable's, read now).

    A ``.metadata`` longer than ``max_metadata_bytes`` is refused unread.

    Every non-tensor item is read with ``torch.load(weights_only=True)`` before DCP's load
    planner gets it (which reads it with ``weights_only=False``); one that torch's weights-only
    unpickler refuses raises ``rackpoint.UnsafeObject``, and nothing it names outside torch's
    allow-list (and ``io.BytesIO``) is imported or called. Types you trust can be allowed with
    ``torch.serialization.add_safe_globals``. ``trust_objects=True`` skips the check and lets
    the planner unpickle anything, so that a checkpoint's writer can run code in this process:
    use it only for a store whose every writer is trusted.

    ``cert`` and ``key``: the identity the client presents to the cluster, passed to
    ``rackpoint.Client(cluster, cert=..., key=...)`` as given (each only when not ``None``;
    without them the client is made as ``Client(cluster)``). A pickled reader keeps them."""

    def __init__(self, cluster: str | os.PathLike | None = None, checkpoint_id: str | None = None, *,
                 max_metadata_bytes: int = MAX_METADATA_BYTES, trust_objects: bool = False,
                 cert: Any = None, key: Any = None) -> None:
        _Connected.__init__(self, cluster, cert, key)
        StorageReader.__init__(self)
        self.max_metadata_bytes = max_metadata_bytes
        self.trust_objects = trust_objects
        self.job: str | None = None
        self._requested: int | None = None
        self.step: int | None = None
        self._storage: dict[MetadataIndex, _Stored] = {}
        self._parts: dict[int, Any] = {}
        if checkpoint_id is not None:
            self.reset(checkpoint_id)

    def reset(self, checkpoint_id: str | os.PathLike | None = None) -> None:
        if checkpoint_id is not None:
            self.job, self._requested = parse_checkpoint_id(checkpoint_id)
        self.step = None
        self._parts = {}

    @classmethod
    def validate_checkpoint_id(cls, checkpoint_id: str | os.PathLike) -> bool:
        return _is_rackpoint_id(checkpoint_id)

    def _resolve_step(self) -> int:
        """The step to load: the one asked for, or the newest complete one, found on rank 0."""
        if self._requested is not None:
            return self._requested
        spread = dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
        error: Exception | None = None
        if not spread or dist.get_rank() == 0:
            try:
                point = self.client.resume(self.job)
                found: int | str | tuple[str, str] = (
                    point.step if point is not None else f"job {self.job} has no checkpoint, or none complete"
                )
            except Exception as e:  # every rank must take part in the broadcast below
                error, found = e, (type(e).__name__, str(e))
        if spread:
            box = [found if dist.get_rank() == 0 else None]
            dist.broadcast_object_list(box, src=0)
            found = box[0]
        where = f"cannot resolve rackpoint://{self.job}/latest"
        if isinstance(found, tuple):
            # The same exception class on every rank (say, Unavailable: nodes are down, the
            # checkpoint is not lost), the original with its fields where it was raised.
            kind, message = found
            if error is not None:
                raise error
            cls = getattr(_native, kind, None)
            if not (isinstance(cls, type) and issubclass(cls, RackpointError)):
                cls = RackpointError
            raise cls(f"{where}: {message}")
        if isinstance(found, str):
            raise InvalidInput(f"{where}: {found}")
        return found

    def _part(self, rank: int):
        if rank not in self._parts:
            self._parts[rank] = self.client.part(self.job, self.step, rank)
        return self._parts[rank]

    def read_metadata(self) -> Metadata:
        if self.job is None:
            raise InvalidInput("no checkpoint id: pass checkpoint_id='rackpoint://JOB/STEP' or '.../latest'")
        if self.step is None:
            self.step = self._resolve_step()
        part = self._part(0)
        fmt = part.meta.get("format")
        if fmt != FORMAT:
            raise metadata_error(MetadataError, self.job, self.step,
                                 f"rank 0's part is of format {fmt!r}; this reader reads {FORMAT!r}")
        length = part.objects.get(METADATA_OBJECT)
        if length is None:
            raise metadata_error(MetadataError, self.job, self.step, f"rank 0's part has no {METADATA_OBJECT}")
        if length > self.max_metadata_bytes:
            raise metadata_error(MetadataError, self.job, self.step,
                                 f"{METADATA_OBJECT} is {length} bytes, over max_metadata_bytes "
                                 f"({self.max_metadata_bytes}); not read")
        return _decode_metadata(part.read(METADATA_OBJECT), self.job, self.step, part.world_size)

    def set_up_storage_reader(self, metadata: Metadata, is_coordinator: bool, *args: Any, **kwargs: Any) -> None:
        self._storage = metadata.storage_data

    def prepare_local_plan(self, plan: LoadPlan) -> LoadPlan:
        return plan

    def prepare_global_plan(self, plans: list[LoadPlan]) -> list[LoadPlan]:
        return plans

    def read_data(self, plan: LoadPlan, planner: LoadPlanner) -> Future[None]:
        by_object: dict[tuple[int, str], list[ReadItem]] = defaultdict(list)
        for req in plan.items:
            stored = self._storage[req.storage_index]
            by_object[(stored.rank, stored.object)].append(req)
        for rank in sorted({rank for rank, _ in by_object}):
            self._part(rank)
        batch: list[tuple[_Stored, list[ReadItem], Any, bool]] = []
        staged = 0
        with ThreadPoolExecutor(_READ_THREADS, thread_name_prefix="rackpoint-read") as pool:
            for reqs in by_object.values():
                stored = self._storage[reqs[0].storage_index]
                into, in_place = self._destination(stored, reqs, planner)
                if not in_place:
                    staged += stored.nbytes
                batch.append((stored, reqs, into, in_place))
                if staged >= _READ_STAGING_BYTES:
                    self._run(pool, batch, planner)
                    batch, staged = [], 0
            self._run(pool, batch, planner)
        fut: Future[None] = Future()
        fut.set_result(None)
        return fut

    def _destination(self, stored: _Stored, reqs: list[ReadItem], planner: LoadPlanner) -> tuple[Any, bool]:
        """Where an object is read to: the destination tensor itself when one read takes the
        whole object into a CPU tensor of the same dtype and shape (in place, no copy), else a
        staging tensor (or ``None`` for bytes, read into a new ``bytearray``)."""
        if stored.dtype is None:
            return None, False
        dtype = _dtypes()[stored.dtype]
        if len(reqs) == 1:
            req = reqs[0]
            whole = all(o == 0 for o in req.storage_offsets) and tuple(req.lengths) == stored.shape
            target = planner.resolve_tensor(req).detach()
            if (whole and target.device.type == "cpu" and target.dtype == dtype
                    and tuple(target.shape) == stored.shape and target.is_contiguous()):
                return target, True
        return torch.empty(stored.shape, dtype=dtype), False

    def _run(self, pool: ThreadPoolExecutor, batch: list, planner: LoadPlanner) -> None:
        def read(entry):
            stored, _, into, _ = entry
            part = self._parts[stored.rank]
            if into is None:
                return part.read(stored.object)
            part.read_into(stored.object, into)
            return into

        for (stored, reqs, _, in_place), data in zip(batch, pool.map(read, batch)):
            as_bytes = [req for req in reqs if req.type == LoadItemType.BYTE_IO]
            if as_bytes and not self.trust_objects:
                _check_object(data, self.job, self.step, as_bytes[0].storage_index.fqn,
                              f"{stored.object} of rank {stored.rank}'s part")
            for req in reqs:
                if req.type == LoadItemType.BYTE_IO:
                    planner.load_bytes(req, io.BytesIO(data))
                    continue
                if in_place:
                    target = data
                else:
                    target = planner.resolve_tensor(req).detach()
                    src = data
                    for dim, (offset, length) in enumerate(zip(req.storage_offsets, req.lengths)):
                        src = src.narrow(dim, offset, length)
                    target.copy_(src)
                planner.commit_tensor(req, target)
