"""Stopping a build cleanly: SIGTERM and SIGHUP unwind it like Ctrl-C does.

Python's default for SIGTERM and SIGHUP ends the process at once: no
``finally`` runs, so a converter worker (a process group of its own) and the
ladder's process go on running, and the build's temp folders and its private
staging folder stay behind. Here both signals raise :class:`Stopped` in the
main thread instead, so every stage's cleanup runs (packager.workspace, the
converter's and the ladder's process handling). Once the first signal has
arrived, further ones are ignored until the cleanup is done.
"""

from __future__ import annotations

import contextlib
import signal

STOPPING = (signal.SIGTERM, signal.SIGHUP)


class Stopped(BaseException):
    """The build was told to stop (a BaseException: no ``except Exception`` swallows it)."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum
        self.name = signal.Signals(signum).name


_pending: int | None = None  # the stop signal that arrived, kept in case its exception is swallowed


def _stop(signum, frame):
    global _pending
    _pending = signum
    for sig in (*STOPPING, signal.SIGINT):
        signal.signal(sig, signal.SIG_IGN)  # the cleanup on the way out must not be cut short
    raise Stopped(signum)


def _interrupt(signum, frame):
    global _pending
    _pending = signum
    raise KeyboardInterrupt  # what Python's own handler raises (click makes it Abort)


def checkpoint() -> None:
    """Raise again a stop whose exception Python swallowed: raised inside a finalizer it is only printed
    ("Exception ignored in ...") and the build went on to write its bundle and exit 0 after a Ctrl-C (seen
    in full-suite runs). Called before each stage starts, never on the way out."""
    if _pending == signal.SIGINT:
        raise KeyboardInterrupt
    if _pending is not None:
        raise Stopped(_pending)


@contextlib.contextmanager
def stop_on_signals():
    """SIGTERM/SIGHUP raise Stopped, SIGINT KeyboardInterrupt, for the duration (main thread only), and each is
    remembered for checkpoint(); the old handlers come back after."""
    global _pending
    _pending = None
    old = {sig: signal.signal(sig, _stop) for sig in STOPPING}
    old[signal.SIGINT] = signal.signal(signal.SIGINT, _interrupt)
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
        _pending = None
