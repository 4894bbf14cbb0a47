"""Signals that stop edge-run: a clean exit, so nothing it made (an unpacked bundle) outlives it.

SIGTERM (systemd, docker stop), SIGINT (Ctrl-C) and SIGHUP (the terminal or
SSH session going away) kill a Python process by default before its atexit
cleanup runs: a .tar.gz bundle unpacked to a temp folder stayed behind. Here
each raises SystemExit in the main thread instead, so finally blocks and
atexit run and the exit status is 128 + the signal's number, as a shell
reports it. While `edge-run serve` serves, its server takes the same three
signals to drain and exit 0 (server/launch.py).
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading

STOP = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


_holding = 0  # held() depth, main thread
_pending: list[int] = []  # stop signals that arrived while held
_stopped: int | None = None  # the stop signal already raised as SystemExit


def _exit(signum, frame):
    if _holding:
        _pending.append(signum)
        return
    _stop(signum)


def _stop(signum: int):
    global _stopped
    _stopped = signum
    print(f"edge-run: stopped by {signal.Signals(signum).name}", file=sys.stderr, flush=True)
    raise SystemExit(128 + signum)


def checkpoint() -> None:
    """Raise a stop again whose SystemExit was lost: Python runs a signal handler in whatever frame is current,
    a finalizer's too (a tar member's file object closed by the garbage collector), and there it prints
    "Exception ignored" and goes on. `edge-run serve` went on to serve after "stopped by SIGINT" so."""
    if _stopped is not None:
        raise SystemExit(128 + _stopped)


@contextlib.contextmanager
def exit_cleanly():
    """SIGTERM, SIGINT and SIGHUP end the process through SystemExit while inside (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, _exit) for sig in STOP}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@contextlib.contextmanager
def held():
    """A stop signal arriving inside waits for its end: a step and its cleanup's registration happen both or neither.

    (Not pthread_sigmask: a process-directed signal goes to any thread not
    blocking it, numpy's OpenBLAS threads say, and Python still runs the
    handler in the main thread at once.)
    """
    global _holding
    _holding += 1
    try:
        yield
    finally:
        _holding -= 1
        if not _holding and _pending:
            _stop(_pending.pop(0))
