"""Stopping a build: SIGTERM, SIGHUP or Ctrl-C end every worker, remove the temp and partial output, and exit
non-zero with one line."""

import os
import signal
import subprocess
import sys
import time

import psutil
import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.slow


def _leftovers(marker: str) -> list[str]:
    """Processes whose TMPDIR is the build's private one or inside it (the build, and every worker it started
    with TMPDIR in its work folder)."""
    found = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        try:
            tmp = proc.environ().get("TMPDIR", "")
            if tmp == marker or tmp.startswith(marker + os.sep):
                found.append(f"{proc.pid} {' '.join(proc.info['cmdline'] or [])[:120]}")
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


def _workers(pid: int) -> list[psutil.Process]:
    """The build's child processes that are a stage's workers (not multiprocessing's resource tracker)."""
    found = []
    for child in psutil.Process(pid).children(recursive=True):
        try:
            if "resource_tracker" not in " ".join(child.cmdline()):
                found.append(child)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


def _start(digits, tmp_path, until: str) -> tuple[subprocess.Popen, str, list[str]]:
    """A real build, started with a private TMPDIR, read until a stage line shows."""
    private = tmp_path / "tmp"
    private.mkdir()
    env = {**os.environ, "TMPDIR": str(private)}
    proc = subprocess.Popen([sys.executable, "-m", "packager", "build", str(digits / "digits.onnx"), "--target", "rpi4",
                             "--calibration", str(digits / "calibration.npy"), "--no-wheels", "-o",
                             str(tmp_path / "dist")], cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True,
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    lines = []
    for line in proc.stderr:
        lines.append(line)
        if line.startswith(until):
            break
    return proc, str(private), lines


# SIGHUP takes SIGTERM's path (packager.stopping.STOPPING); Ctrl-C its own (KeyboardInterrupt).
@pytest.mark.parametrize("sig, stage", [(signal.SIGTERM, "[5/9]"), (signal.SIGINT, "[6/9]")])
def test_a_signal_ends_every_worker_and_leaves_nothing(digits, tmp_path, sig, stage):
    proc, private, lines = _start(digits, tmp_path, stage)
    assert lines[-1].startswith(stage), "".join(lines)
    # the signal lands while the stage's worker runs: the conversion (5) or the ladder's own process (6). A fixed
    # wait of 3 s was not that (the digits ladder's process can be done sooner, and the build with it), nor was
    # "any child": multiprocessing's resource tracker is a child too, started before the ladder's process.
    deadline = time.monotonic() + 60
    while not _workers(proc.pid):
        assert proc.poll() is None and time.monotonic() < deadline, "no worker started"
        time.sleep(0.01)
    proc.send_signal(sig)
    rest = proc.stderr.read()
    proc.stderr.close()
    code = proc.wait(timeout=120)
    assert code == 128 + sig, rest
    errors = [line for line in rest.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "every worker was ended" in errors[0] and "Traceback" not in rest, rest
    deadline = time.monotonic() + 10
    while _leftovers(private) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _leftovers(private) == []
    # No temp folder of the build's, nor of its workers'. (onnxruntime writes its telemetry session id, .ses, into
    # TMPDIR when it is imported, and keeps it: microsoft/onnxruntime#32476. It is not the build's.)
    assert [name for name in os.listdir(private) if name != ".ses"] == []
    assert not (tmp_path / "dist").exists() or os.listdir(tmp_path / "dist") == []
