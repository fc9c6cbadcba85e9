"""Flat byte views of buffer-protocol objects and CPU torch tensors, as the native module takes them."""

from __future__ import annotations

from typing import Any


def byte_view(obj: Any, writable: bool = False) -> memoryview:
    """A flat, C-contiguous ``uint8`` view of ``obj`` sharing its memory (no copy).

    Takes anything with the buffer protocol and CPU torch tensors (any dtype, bf16 included).
    Raises ``ValueError`` for non-contiguous memory or tensors not on the CPU, and ``TypeError``
    when ``writable`` is asked of a read-only buffer.
    """
    if type(obj).__module__.startswith("torch") and hasattr(obj, "untyped_storage"):
        import torch

        if obj.device.type != "cpu":
            raise ValueError(f"tensor is on {obj.device}; move it to the CPU first")
        if not obj.is_contiguous():
            raise ValueError("tensor is not contiguous; call .contiguous() first")
        obj = obj.detach().reshape(-1).view(torch.uint8).numpy()
    view = memoryview(obj)
    if not view.c_contiguous:
        raise ValueError("buffer is not C-contiguous")
    if view.format != "B" or view.ndim != 1:
        view = view.cast("B")
    if writable and view.readonly:
        raise TypeError("buffer is read-only; pass a writable one")
    return view
