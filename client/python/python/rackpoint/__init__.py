"""Rackpoint for Python: save and restore checkpoints on a Rackpoint cluster.

``Client(cluster_toml=None, cert=None, key=None)`` (``cluster_toml``, or else
``RACKPOINT_CLUSTER``, names the cluster's ``cluster.toml``; ``cert``/``key``, or
``RACKPOINT_CERT`` and ``RACKPOINT_KEY``, name the identity to present) saves one rank's part
of a checkpoint from buffer-protocol objects (``bytes``, ``bytearray``, ``memoryview``, numpy
arrays, CPU torch tensors) without copying them, and reads any object of any rank's part into a
caller's writable buffer in place. Every call releases the GIL while it waits.
``Client.resume(job)`` returns ``None`` for a job with no checkpoint (a new job), not an
exception. ``rackpoint.dcp`` has PyTorch Distributed Checkpoint's ``Writer`` and ``Reader``;
its metadata and its non-tensor items are read without running code from the checkpoint
(``MetadataError``, ``UnsafeMetadata``, ``UnsafeObject``). Every exception the package raises
for Rackpoint derives from ``RackpointError`` and is named in this module
(``rackpoint.Unavailable``).
``Client.save(..., deadline_s=...)`` is a priority save for a preempted node's SIGTERM window
(it commits in time or raises ``DeadlineExceeded`` having committed nothing), and
``rackpoint.preemption`` an opt-in SIGTERM handler that saves at the loop's safe point and exits.
"""

from __future__ import annotations

from ._buffers import byte_view
from . import preemption
from ._errors import MetadataError, UnsafeMetadata, UnsafeObject
from ._native import (
    AlreadyExists,
    Checkpoint,
    CheckpointList,
    Client,
    CommitFailed,
    DeadlineExceeded,
    InvalidInput,
    ManifestNotFound,
    NoCheckpoint,
    NoNodeAnswered,
    NoSuchJob,
    NotEnoughShards,
    ObjectHashMismatch,
    Part,
    PermissionDenied,
    QuotaExceeded,
    RackpointError,
    ResumePoint,
    SaveHandle,
    SaveReport,
    ShardWriteFailed,
    Unavailable,
    VerifyReport,
)

__all__ = [
    "AlreadyExists",
    "Checkpoint",
    "CheckpointList",
    "Client",
    "CommitFailed",
    "DeadlineExceeded",
    "InvalidInput",
    "ManifestNotFound",
    "MetadataError",
    "NoCheckpoint",
    "NoNodeAnswered",
    "NoSuchJob",
    "NotEnoughShards",
    "ObjectHashMismatch",
    "Part",
    "PermissionDenied",
    "QuotaExceeded",
    "RackpointError",
    "ResumePoint",
    "SaveHandle",
    "SaveReport",
    "ShardWriteFailed",
    "UnsafeMetadata",
    "UnsafeObject",
    "Unavailable",
    "VerifyReport",
    "byte_view",
    "preemption",
]
