"""Stopping on SIGTERM/SIGINT (`ray job stop`, a scheduler's preemption notice, Ctrl-C) without losing work.

Ray's core worker makes a driver abort on SIGTERM ("Aborted", exit status -6), wherever it is: in the
middle of a training step, of a checkpoint write, of a served request. Every command runs inside
`stop_on_signals()` (commands/__init__.py), whose handlers `runtime.init_ray` puts back after Ray set
its own. A command that drains (training, serving) polls `stop_requested()` at its safe points: training
finishes the step in flight, writes a checkpoint and exits 0; serving stops taking requests, lets the
ones in flight finish and exits 0. A second signal stops at once (KeyboardInterrupt). Other commands
stop at once on the first signal, through the same KeyboardInterrupt, so their cleanup still runs.
"""

from __future__ import annotations

import signal
import sys
import threading
from contextlib import contextmanager
from typing import Iterator

_SIGNALS = (signal.SIGTERM, signal.SIGINT)
_requested = threading.Event()
_received: list[str] = []
_drain: list[bool] = []  # the innermost active stop_on_signals() block drains (True) or stops at once


def _on_signal(signum: int, frame: object) -> None:
    name = signal.Signals(signum).name
    if _requested.is_set() or not _drain[-1]:
        raise KeyboardInterrupt(name)
    _received.append(name)
    _requested.set()
    print(f"{name} received: finishing the work in flight, then stopping ({name} again stops at once)",
          file=sys.stderr, flush=True)


def stop_requested() -> bool:
    return _requested.is_set()


def stop_reason() -> str:
    """The signal that asked to stop ("" when none did)."""
    return _received[0] if _received else ""


def wait_for_stop(timeout_s: float | None = None) -> bool:
    """Block until a stop is requested (or `timeout_s` passes); True when one was."""
    return _requested.wait(timeout_s)


@contextmanager
def stop_on_signals(drain: bool = True) -> Iterator[None]:
    """Within the block, SIGTERM/SIGINT set `stop_requested()` (drain=True) or raise KeyboardInterrupt
    (drain=False) instead of killing the process.

    Outside the main thread (where Python cannot install handlers) the block runs unchanged."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, _on_signal) for s in _SIGNALS}
    _requested.clear()
    _received.clear()
    _drain.append(drain)
    try:
        yield
    finally:
        _drain.pop()
        for s, handler in previous.items():
            signal.signal(s, handler)


def reinstall() -> None:
    """Put this module's handlers back inside a stop_on_signals() block (Ray's init replaces them)."""
    if _drain and threading.current_thread() is threading.main_thread():
        for s in _SIGNALS:
            signal.signal(s, _on_signal)
