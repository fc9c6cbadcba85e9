"""Saving on preemption: an opt-in SIGTERM handler for a training loop.

Spot and preemptible machines get SIGTERM some seconds before they go (30 s on most clouds,
Kubernetes' ``terminationGracePeriodSeconds``). ``install`` records the signal and nothing
else; the loop asks ``requested()`` at its safe point (after an optimizer step, before its
periodic save) and calls ``save_and_exit(save)``, which runs ``save(deadline_s=...)`` with the
time left of the window and exits::

    import rackpoint
    from rackpoint import preemption

    client = rackpoint.Client("cluster.toml")
    guard = preemption.install(deadline_s=25)
    for step in range(start, steps):
        train_step()
        if guard.requested():
            guard.save_and_exit(lambda deadline_s: client.save(
                job, step, 0, 1, state(), deadline_s=deadline_s))
        if step % 100 == 0:
            client.save_async(job, step, 0, 1, state())

``client.save(..., deadline_s=...)`` is a priority save: it commits an ordinary checkpoint of
that step (``resume`` and ``latest`` pick it) within the time given, or raises
``rackpoint.DeadlineExceeded`` having committed nothing, so the previous checkpoint stays the
latest; a ``save_async`` upload of the same client gives way to it.

Why a flag and not a save inside the handler: Python runs a signal handler in the main thread
between two bytecodes, wherever the loop is: in the middle of ``optimizer.step()`` half the
parameters are updated, and a save there is of no step at all. So the handler only records
the signal. Where the loop may not reach its safe point in time (stuck in a collective, or in
a long call that does not return to Python), ``fallback`` is the last resort: a watchdog
thread, woken by the signal at once through ``signal.set_wakeup_fd`` (not through the Python
handler, which waits for the main thread), calls ``fallback(deadline_s=...)`` if the loop has
not reached ``save_and_exit`` within ``fallback_after_s``, and ends the process with
``os._exit``. That save runs beside the main thread, so the state it reads may be mid-update:
have it save what is consistent without the main thread (a copy kept at the last step, say),
and mark it as such in its metadata.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from ._native import RackpointError

__all__ = ["Preemption", "install"]

# Exit status after an emergency save: what a process killed by SIGTERM reports (128 + 15),
# so a supervisor sees the preemption it caused.
DEFAULT_EXIT_CODE = 128 + signal.SIGTERM
# Exit status when the emergency save failed (the previous checkpoint is the latest).
DEFAULT_FAILED_EXIT_CODE = 1
# Seconds of the window kept for leaving the process after the save.
DEFAULT_EXIT_MARGIN_S = 1.0

SaveFn = Callable[..., Any]


class Preemption:
    """The state of one opt-in SIGTERM handler; see the module doc. Made by ``install``."""

    def __init__(self, deadline_s: float = 25.0, *, exit_code: int = DEFAULT_EXIT_CODE,
                 failed_exit_code: int = DEFAULT_FAILED_EXIT_CODE,
                 exit_margin_s: float = DEFAULT_EXIT_MARGIN_S,
                 signals: Iterable[int] = (signal.SIGTERM,),
                 fallback: SaveFn | None = None, fallback_after_s: float | None = None) -> None:
        if not deadline_s > 0:
            raise ValueError(f"deadline_s is {deadline_s!r}: the window after the signal, in seconds, above 0")
        if fallback is not None and (fallback_after_s is None or not 0 <= fallback_after_s < deadline_s):
            raise ValueError("a fallback needs fallback_after_s, from 0 to below deadline_s")
        self.deadline_s = float(deadline_s)
        self.exit_code = exit_code
        self.failed_exit_code = failed_exit_code
        self.exit_margin_s = float(exit_margin_s)
        self.signals = tuple(signals)
        self.fallback = fallback
        self.fallback_after_s = fallback_after_s
        self.signal: int | None = None
        self._received: float | None = None
        self._lock = threading.Lock()
        self._saving = threading.Event()
        self._saver: str | None = None  # who saves: "loop" or "fallback"
        self._previous: dict[int, Any] = {}
        self._wakeup: tuple[socket.socket, socket.socket] | None = None
        self._previous_wakeup_fd = -1
        self._watchdog: threading.Thread | None = None

    # -- installing ----------------------------------------------------------------------

    def install(self) -> Preemption:
        """Installs the handler for ``signals`` (from the main thread, as Python requires)."""
        if threading.current_thread() is not threading.main_thread():
            raise RuntimeError("preemption.install must be called from the main thread")
        for s in self.signals:
            self._previous[s] = signal.signal(s, self._handle)
        if self.fallback is not None:
            reader, writer = socket.socketpair()
            writer.setblocking(False)
            self._previous_wakeup_fd = signal.set_wakeup_fd(writer.fileno(), warn_on_full_buffer=False)
            self._wakeup = (reader, writer)
            self._watchdog = threading.Thread(target=self._watch, name="rackpoint-preemption", daemon=True)
            self._watchdog.start()
        return self

    def uninstall(self) -> None:
        """Puts the previous handlers back."""
        for s, previous in self._previous.items():
            signal.signal(s, previous)
        self._previous.clear()
        if self._wakeup is not None:
            signal.set_wakeup_fd(self._previous_wakeup_fd)
            for sock in self._wakeup:
                sock.close()
            self._wakeup = None

    def __enter__(self) -> Preemption:
        return self if self._previous else self.install()

    def __exit__(self, *exc: Any) -> None:
        self.uninstall()

    def _handle(self, signum: int, frame: Any) -> None:
        self._record(signum)

    def _record(self, signum: int) -> None:
        with self._lock:
            if self._received is None:
                self._received = time.monotonic()
                self.signal = signum

    # -- the loop's side -----------------------------------------------------------------

    def requested(self) -> bool:
        """Whether the signal came: save and exit now."""
        return self._received is not None

    def time_left(self) -> float:
        """Seconds left of the window (``deadline_s`` after the signal; all of it before)."""
        if self._received is None:
            return self.deadline_s
        return max(0.0, self.deadline_s - (time.monotonic() - self._received))

    def save_deadline_s(self) -> float:
        """The deadline to give the save: the time left less ``exit_margin_s``."""
        return max(0.0, self.time_left() - self.exit_margin_s)

    def save_and_exit(self, save: SaveFn) -> None:
        """Calls ``save(deadline_s=...)`` with the time left and exits: ``exit_code`` once it
        returned, ``failed_exit_code`` if it raised a ``RackpointError`` (such as
        ``DeadlineExceeded``: nothing committed, the previous checkpoint is the latest), after
        a line on stderr either way. Other exceptions propagate."""
        if not self._claim("loop"):
            threading.Event().wait()  # the fallback saves and ends the process
        code = self._run(save, "at a safe point")
        sys.stdout.flush()
        sys.exit(code)

    def _claim(self, who: str) -> bool:
        """Whether ``who`` is the one to save (the first to ask)."""
        with self._lock:
            if self._saver is None:
                self._saver = who
                self._saving.set()
            return self._saver == who

    def _run(self, save: SaveFn, where: str) -> int:
        deadline_s = self.save_deadline_s()
        started = time.monotonic()
        try:
            save(deadline_s=deadline_s)
        except RackpointError as e:
            print(f"rackpoint: preempted (signal {self.signal}); the emergency save {where} failed after "
                  f"{time.monotonic() - started:.2f} s: {e}", file=sys.stderr, flush=True)
            return self.failed_exit_code
        print(f"rackpoint: preempted (signal {self.signal}); emergency checkpoint saved {where} in "
              f"{time.monotonic() - started:.2f} s of the {deadline_s:.2f} s given", file=sys.stderr, flush=True)
        return self.exit_code

    # -- the fallback --------------------------------------------------------------------

    def _watch(self) -> None:
        wakeup = self._wakeup
        if wakeup is None:
            return
        reader = wakeup[0]
        while True:
            try:
                got = reader.recv(64)
            except OSError:
                return  # uninstalled
            if not got:
                return
            caught = [s for s in got if s in self.signals]
            if caught:
                self._record(caught[0])
                break
        if self._saving.wait(self.fallback_after_s) or not self._claim("fallback"):
            return  # the loop reached its safe point
        code = self._run(self.fallback, "by the fallback (the loop did not reach its safe point)")
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def install(deadline_s: float = 25.0, **options: Any) -> Preemption:
    """Installs an opt-in SIGTERM handler and returns it (see ``Preemption`` for the options:
    ``exit_code``, ``failed_exit_code``, ``exit_margin_s``, ``signals``, ``fallback``,
    ``fallback_after_s``)."""
    return Preemption(deadline_s, **options).install()
