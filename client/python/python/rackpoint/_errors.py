"""Exceptions of the pure-Python part of the package. Like the client's (``_native``, from
src/errors.rs) each derives from ``RackpointError``, has ``kind`` and its fields as
attributes, and is named in module ``rackpoint`` (``rackpoint.MetadataError``: its
``__module__``, what ``repr`` of the class and tracebacks show, and what a pickle names); they
pickle, so DCP can gather them from other ranks."""

from __future__ import annotations

from typing import Any

from ._native import RackpointError


class MetadataError(RackpointError):
    """A checkpoint's DCP metadata was refused before anything in it ran: an unknown format,
    over the size bound, malformed, or not DCP metadata. Attributes ``checkpoint``
    (``rackpoint://JOB/STEP``), ``job``, ``step`` and ``detail``."""

    __module__ = "rackpoint"


class UnsafeMetadata(MetadataError):
    """The metadata's pickle asks for something outside the allow-list of DCP's metadata
    types: ``refused`` names it (a global such as ``posix.system``, or an operation). Nothing
    it names was imported or called."""

    __module__ = "rackpoint"


class UnsafeObject(RackpointError):
    """A non-tensor item of a checkpoint (DCP's ``BYTE_IO``: a ``torch.save`` of a value that is
    not a tensor) was refused before DCP's load planner unpickled it, because torch's
    weights-only unpickler does not read it. Attributes ``checkpoint``, ``job``, ``step``,
    ``fqn`` (the item's name in the state dict), ``refused`` (the global it asks for that
    torch does not allow, such as ``posix.system``; ``None`` when refused for another reason)
    and ``detail``. Nothing it names outside torch's allow-list was imported or called."""

    __module__ = "rackpoint"


def metadata_error(cls: type[RackpointError], job: str, step: int, detail: str, **fields: Any) -> RackpointError:
    """A ``cls`` (``MetadataError``, ``UnsafeMetadata``, ``UnsafeObject``) about checkpoint
    ``(job, step)``, with its fields set as attributes."""
    checkpoint = f"rackpoint://{job}/{step}"
    err = cls(f"{checkpoint}: {detail}")
    attrs = {"kind": cls.__name__, "checkpoint": checkpoint, "job": job, "step": step, "detail": detail}
    for name, value in {**attrs, **fields}.items():
        setattr(err, name, value)
    return err
