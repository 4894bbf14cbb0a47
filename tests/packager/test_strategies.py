"""Conversion strategies: every attempt bounded, reported, and a model that
no strategy converts fails cleanly with each attempt listed."""

import os
import subprocess
import sys
import time

import psutil
import pytest

from tests.conftest import ROOT
from tests.fixtures.models import unconvertible

pytestmark = pytest.mark.slow


def _build(tmp_path, model, *extra):
    import numpy as np

    np.save(tmp_path / "calib.npy", np.random.default_rng(0).random((40, 1, 16, 1), dtype=np.float32))
    # The build's private work folders go under tmp_path, so its processes can be told from others'.
    (tmp_path / "tmp").mkdir()
    return subprocess.run(
        [sys.executable, "-m", "packager", "build", model, "--target", "rpi4", "--no-wheels", "--calibration",
         tmp_path / "calib.npy", "-o", tmp_path / "dist", *extra],
        capture_output=True, text=True, cwd=ROOT, stdin=subprocess.DEVNULL,
        env={**os.environ, "TMPDIR": str(tmp_path / "tmp")},
    )


def test_a_model_no_strategy_converts_lists_every_attempt(tmp_path):
    proc = _build(tmp_path, unconvertible(tmp_path / "dft.onnx"))
    assert proc.returncode == 2
    err = proc.stderr
    assert "error: no conversion strategy reproduced the model (3 tried)" in err
    for name in ("onnx2tf (", "onnx2tf-keep-shapes (", "onnx2tf-no-strict ("):
        assert f"\n  {name}" in err
    assert "[ops: DFT (dft)]" in err  # the ONNX op the converter stopped at
    assert "Traceback" not in err
    assert not (tmp_path / "dist").exists()  # nothing written


def test_an_attempt_past_its_budget_is_killed_and_the_next_tried(tmp_path):
    start = time.monotonic()
    proc = _build(tmp_path, unconvertible(tmp_path / "dft.onnx"), "--strategy-timeout", "2")
    elapsed = time.monotonic() - start
    assert proc.returncode == 2
    error = proc.stderr[proc.stderr.index("error: "):]
    assert error.count("killed after its time budget of 2 s") == 3  # each one tried, each one killed
    assert elapsed < 120  # three 2 s budgets and the build around them, not three conversions
    workers = [p for p in psutil.process_iter(["cmdline"])
               if str(tmp_path) in " ".join(p.info["cmdline"] or [])]
    assert workers == []  # no converter left running
    assert not (tmp_path / "dist").exists()
