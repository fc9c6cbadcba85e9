"""Exceptions of the pure-Python part of the package. Like the client's (``_native``, from
src/errors.rs) each derives from ``RackpointError`` and has ``kind`` and its fields as
attributes; they pickle, so DCP can gather them from other ranks."""

from __future__ import annotations

from typing import Any

from ._native import RackpointError


class MetadataError(RackpointError):
    """A checkpoint's DCP metadata was refused before anything in it ran: an unknown format,
    over the size bound, malformed, or not DCP metadata. Attributes ``checkpoint``
    (``rackpoint://JOB/STEP``), ``job``, ``step`` and ``detail``."""


class UnsafeMetadata(MetadataError):
    """The metadata's pickle asks for something outside the allow-list of DCP's metadata
    types: ``refused`` names it (a global such as ``posix.system``, or an operation). Nothing
    it names was imported or called."""


def metadata_error(cls: type[MetadataError], job: str, step: int, detail: str, **fields: Any) -> MetadataError:
    """A ``cls`` about checkpoint ``(job, step)``, with its fields set as attributes."""
    checkpoint = f"rackpoint://{job}/{step}"
    err = cls(f"{checkpoint}: {detail}")
    attrs = {"kind": cls.__name__, "checkpoint": checkpoint, "job": job, "step": step, "detail": detail}
    for name, value in {**attrs, **fields}.items():
        setattr(err, name, value)
    return err
