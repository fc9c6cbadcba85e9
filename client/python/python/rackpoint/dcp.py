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
default process group::

    import torch.distributed.checkpoint as dcp
    from rackpoint.dcp import Reader, Writer

    dcp.save(state_dict, checkpoint_id="rackpoint://llm/1200", storage_writer=Writer("cluster.toml"))
    dcp.load(state_dict, checkpoint_id="rackpoint://llm/latest", storage_reader=Reader("cluster.toml"))

``dcp.async_save`` works: DCP stages the state dict to CPU memory once, and the writer saves
from that staged copy without copying it again (the Rust client keeps a bounded number of bytes
in flight). A writer pickles without its connection, so it may be sent to another process.
The metadata is a pickle (as with DCP's file system storage): load only from clusters you trust.
"""

from __future__ import annotations

import dataclasses
import io
import os
import pickle
import re
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
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

from . import _native
from ._native import Client, InvalidInput, RackpointError

__all__ = ["Reader", "Writer", "parse_checkpoint_id"]

SCHEME = "rackpoint://"
METADATA_OBJECT = ".metadata"
_ID = re.compile(r"^rackpoint://([A-Za-z0-9._-]{1,128})/([0-9]+|latest)/?$")
# Object bytes a reader buffers at once for reads that cannot land in place (resharding).
_READ_STAGING_BYTES = 512 << 20
_READ_THREADS = 4


def parse_checkpoint_id(checkpoint_id: str | os.PathLike) -> tuple[str, int | None]:
    """``"rackpoint://job/12"`` gives ``("job", 12)``; ``"rackpoint://job/latest"`` gives ``("job", None)``."""
    match = _ID.match(os.fspath(checkpoint_id))
    if match is None:
        raise InvalidInput(f"{checkpoint_id!r} is not a Rackpoint checkpoint id (rackpoint://JOB/STEP or rackpoint://JOB/latest)")
    job, step = match.groups()
    return job, None if step == "latest" else int(step)


def _is_rackpoint_id(checkpoint_id: Any) -> bool:
    try:
        return _ID.match(os.fspath(checkpoint_id)) is not None
    except TypeError:
        return False


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


class _Connected:
    """The lazily made client, left out of pickles (a writer may be sent to another process)."""

    def __init__(self, cluster: str | os.PathLike) -> None:
        self.cluster = os.fspath(cluster)
        self._client: Client | None = None

    @property
    def client(self) -> Client:
        if self._client is None:
            self._client = Client(self.cluster)
        return self._client

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_client"] = None
        state["_staged"] = None
        state["_parts"] = {}
        return state


class Writer(_Connected, StorageWriter):
    """DCP ``StorageWriter`` saving to the cluster of ``cluster`` (its ``cluster.toml``)."""

    def __init__(self, cluster: str | os.PathLike, checkpoint_id: str | None = None) -> None:
        _Connected.__init__(self, cluster)
        StorageWriter.__init__(self)
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
                raise InvalidInput("a checkpoint is saved at a step: rackpoint://JOB/STEP, not latest")
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
            self.client.save(self.job, self.step, part.rank, part.world_size, objects)
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
        objects[METADATA_OBJECT] = pickle.dumps(metadata)
        self.client.save(self.job, self.step, 0, part.world_size, objects,
                         {"format": "rackpoint.dcp/1"})
        self._staged = None


class Reader(_Connected, StorageReader):
    """DCP ``StorageReader`` loading from the cluster of ``cluster`` (its ``cluster.toml``)."""

    def __init__(self, cluster: str | os.PathLike, checkpoint_id: str | None = None) -> None:
        _Connected.__init__(self, cluster)
        StorageReader.__init__(self)
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
        metadata = pickle.loads(self._part(0).read(METADATA_OBJECT))
        if not isinstance(metadata, Metadata):
            raise InvalidInput(f"rackpoint://{self.job}/{self.step} holds no DCP metadata")
        return metadata

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
        dtype = getattr(torch, stored.dtype)
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
