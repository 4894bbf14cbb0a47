"""A stop signal whose SystemExit Python swallowed (raised inside a finalizer) still ends the process."""

import signal
import subprocess
import sys

from tests.conftest import ROOT

SWALLOWED = r"""
import gc, os, signal, sys
from edge_runtime import signals

class Finalized:
    def __del__(self):
        os.kill(os.getpid(), signal.SIGINT)  # the handler runs here, inside the finalizer
        for _ in range(1000):
            pass

with signals.exit_cleanly():
    Finalized()
    gc.collect()
    print("went on", flush=True)
    signals.checkpoint()
    print("still going", flush=True)
"""


def test_a_stop_lost_in_a_finalizer_is_raised_again_at_the_checkpoint():
    proc = subprocess.run([sys.executable, "-c", SWALLOWED], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert "stopped by SIGINT" in proc.stderr and "Exception ignored" in proc.stderr  # what Python does
    assert proc.stdout == "went on\n"  # ... and the checkpoint ends it
    assert proc.returncode == 128 + signal.SIGINT, proc.stderr


def test_the_checkpoint_is_quiet_without_a_stop():
    from edge_runtime import signals

    assert signals._stopped is None
    signals.checkpoint()
