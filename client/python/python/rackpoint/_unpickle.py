"""Unpickling that runs no code from the stream, for data a checkpoint brings (DCP's metadata).

``loads(data, allow)`` reads a pickle with the pure-Python unpickler under an explicit
``AllowList``. A global is looked up in the list, never imported; only the list's callables are
called (REDUCE, NEWOBJ, INST, OBJ); BUILD only fills fields of an instance of a listed class
(its own ``__setstate__``, or a state dict naming only its dataclass fields), so a class,
an enum member or a dtype is never modified; extension codes and persistent ids are refused.
Anything else raises ``Refused`` before it is called. The remaining code a stream reaches is
the listed callables and the dunder methods of built-in containers and of the listed classes.

The C unpickler is not used because its BUILD cannot be restricted: a state of ``(None,
{name: value})`` on a class object sets attributes of that class, for the whole process.
"""

from __future__ import annotations

import dataclasses
import io
import pickle
from collections.abc import Iterable, Mapping
from typing import Any


class Refused(Exception):
    """The stream asked for ``what`` (a global such as ``posix.system``, or an operation),
    which the allow-list does not hold; nothing of it was looked up or called."""

    def __init__(self, what: str) -> None:
        super().__init__(what)
        self.what = what


class Malformed(Exception):
    """The stream is not a pickle of the allowed shape (truncated, bad arguments, trailing
    bytes); raised from the error the unpickler hit."""


@dataclasses.dataclass(frozen=True)
class AllowList:
    """What a stream may name and do.

    ``globals``: ``(module, name)`` to the object the name stands for (need not be the object
    importing it would give); ``callables``: which of those may be called or instantiated;
    ``buildable``: the classes whose fresh instances BUILD may fill."""

    globals: Mapping[tuple[str, str], Any]
    callables: frozenset[int]  # ids of objects in `globals`
    buildable: Mapping[int, tuple[type, frozenset[str] | None]]  # id(class) -> class, fields

    @classmethod
    def of(cls, globals: Mapping[tuple[str, str], Any], callables: Iterable[Any],
           buildable: Iterable[type]) -> AllowList:
        listed = {id(v) for v in globals.values()}
        calls = list(callables)
        builds = list(buildable)
        for obj in calls + builds:
            if id(obj) not in listed:
                raise ValueError(f"{obj!r} is callable or buildable but not among the globals")
        fields = {}
        for c in builds:
            own_setstate = getattr(c, "__setstate__", None) is not None
            names = None if own_setstate else frozenset(f.name for f in dataclasses.fields(c))
            fields[id(c)] = (c, names)
        return cls(dict(globals), frozenset(id(c) for c in calls), fields)


def loads(data: bytes | bytearray | memoryview, allow: AllowList) -> Any:
    """The object pickled in ``data``; ``Refused`` or ``Malformed`` if it is not allowed."""
    size = memoryview(data).nbytes
    stream = io.BytesIO(data)
    try:
        value = _Unpickler(stream, allow).load()
    except (Refused, Malformed):
        raise
    except Exception as e:  # every call reached is the allow-list's or a built-in's
        raise Malformed(f"{type(e).__name__}: {e}") from e
    if stream.tell() != size:
        raise Malformed(f"{size - stream.tell()} bytes after the pickle's end")
    return value


def _describe(obj: Any, allow: AllowList) -> str:
    for (module, name), value in allow.globals.items():
        if value is obj:
            return f"{module}.{name}"
    return f"a {type(obj).__module__}.{type(obj).__qualname__}"


class _Unpickler(pickle._Unpickler):  # the pure-Python one: its opcodes can be replaced
    def __init__(self, file: io.BytesIO, allow: AllowList) -> None:
        super().__init__(file)
        self._allow = allow

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self._allow.globals[(module, name)]
        except (KeyError, TypeError):
            raise Refused(f"global {module}.{name}") from None

    def persistent_load(self, pid: Any) -> Any:
        raise Refused("a persistent id")

    def _callable(self, func: Any, how: str) -> Any:
        if id(func) not in self._allow.callables:
            raise Refused(f"{how} {_describe(func, self._allow)}")
        return func

    def _instantiate(self, klass: Any, args: list) -> None:  # INST and OBJ
        self.append(self._callable(klass, "calling")(*args))

    def load_reduce(self) -> None:
        args = self.stack.pop()
        func = self._callable(self.stack[-1], "calling")
        self.stack[-1] = func(*args)

    def load_newobj(self) -> None:
        args = self.stack.pop()
        cls = self._callable(self.stack.pop(), "instantiating")
        self.append(cls.__new__(cls, *args))

    def load_newobj_ex(self) -> None:
        kwargs = self.stack.pop()
        args = self.stack.pop()
        cls = self._callable(self.stack.pop(), "instantiating")
        self.append(cls.__new__(cls, *args, **kwargs))

    def load_build(self) -> None:
        state = self.stack.pop()
        inst = self.stack[-1]
        entry = self._allow.buildable.get(id(type(inst)))
        if entry is None or entry[0] is not type(inst):
            raise Refused(f"setting the state of {_describe(inst, self._allow)}")
        cls, fields = entry
        if fields is None:  # the class's own __setstate__
            cls.__setstate__(inst, state)
            return
        slotstate = None
        if type(state) is tuple and len(state) == 2:
            state, slotstate = state
        for part in (state, slotstate):
            if part is None:
                continue
            if type(part) is not dict:
                raise Malformed(f"the state of a {cls.__qualname__} is a {type(part).__name__}")
            unknown = [k for k in part if type(k) is not str or k not in fields]
            if unknown:
                raise Refused(f"setting {unknown[0]!r}, not a field of {cls.__qualname__}")
        if state:
            inst.__dict__.update(state)
        for k, v in (slotstate or {}).items():
            object.__setattr__(inst, k, v)

    def load_ext(self) -> None:
        raise Refused("an extension code (copyreg registry)")

    dispatch = dict(pickle._Unpickler.dispatch)
    dispatch[pickle.REDUCE[0]] = load_reduce
    dispatch[pickle.NEWOBJ[0]] = load_newobj
    dispatch[pickle.NEWOBJ_EX[0]] = load_newobj_ex
    dispatch[pickle.BUILD[0]] = load_build
    for _ext in (pickle.EXT1, pickle.EXT2, pickle.EXT4):
        dispatch[_ext[0]] = load_ext
    del _ext
