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


def _stop(signum, frame):
    for sig in (*STOPPING, signal.SIGINT):
        signal.signal(sig, signal.SIG_IGN)  # the cleanup on the way out must not be cut short
    raise Stopped(signum)


@contextlib.contextmanager
def stop_on_signals():
    """SIGTERM/SIGHUP raise Stopped for the duration (main thread only); the old handlers come back after."""
    old = {sig: signal.signal(sig, _stop) for sig in STOPPING}
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
