"""`--precision int8` on a model full int8 cannot hold: a clean failure with the
ladder's report and nothing written (the corpus test covers `--precision auto`
on the same fixture: it reaches the bar at a later step)."""

import pytest

from tests.conftest import run_cli
from tests.fixtures import quant_models

pytestmark = pytest.mark.slow


def test_box_score_concat_under_precision_int8_fails_cleanly(tmp_path):
    model, calibration = quant_models.box_score_concat(tmp_path / "fixture")
    out = tmp_path / "dist"
    proc = run_cli("packager", "build", model, "--target", "rpi4", "--calibration", calibration, "-o", out,
                   "--no-wheels", "--precision", "int8", check=False)
    assert proc.returncode == 2, proc.stderr[-2000:]
    error = next(line for line in proc.stderr.splitlines() if line.startswith("error: "))
    assert error.startswith("error: no full-integer model holds the fidelity bar")
    # the score rows collapse under the boxes' scale: judged as a detector (its own measure, not the
    # whole-output cosine of 1.0000), no detection survives
    assert "y: detections after NMS F1 0.000 < 0.98" in error
    assert "int8, min/max" in error and "int8, ranges per tensor" in error
    assert "dynamic range" not in proc.stderr and "float16" not in proc.stderr  # int8 demanded: no float steps
    assert "Traceback" not in proc.stderr
    assert not out.exists() or not any(out.iterdir())
