"""A stop signal whose exception Python swallowed (raised inside a finalizer) is raised again before the next
build stage (packager.stopping.checkpoint), as edge_runtime.signals does for the runner."""

import signal
import subprocess
import sys

import pytest

from tests.conftest import ROOT

SWALLOWED = r"""
import gc, os, signal, sys
from packager.stopping import Stopped, checkpoint, stop_on_signals

class Finalized:
    def __del__(self):
        os.kill(os.getpid(), int(sys.argv[1]))  # the handler runs here, inside the finalizer
        for _ in range(1000):
            pass

try:
    with stop_on_signals():
        Finalized()
        gc.collect()
        print("went on", flush=True)
        checkpoint()
        print("still going", flush=True)
except (KeyboardInterrupt, Stopped) as exc:
    print(f"raised {type(exc).__name__}", flush=True)
"""


@pytest.mark.parametrize("sig, raised", [(signal.SIGINT, "KeyboardInterrupt"), (signal.SIGTERM, "Stopped")])
def test_a_stop_swallowed_in_a_finalizer_is_raised_again_at_the_checkpoint(sig, raised):
    proc = subprocess.run([sys.executable, "-c", SWALLOWED, str(int(sig))], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    assert "Exception ignored" in proc.stderr  # what Python does with it
    assert proc.stdout == f"went on\nraised {raised}\n", proc.stderr  # ... and the checkpoint raises it again


def test_the_checkpoint_is_quiet_without_a_stop():
    from packager.stopping import checkpoint, stop_on_signals

    with stop_on_signals():
        checkpoint()
    checkpoint()
