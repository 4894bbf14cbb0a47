"""The ladder in a process of its own: a native crash becomes a failed rung, and the next rung is tried."""

import pytest

from edge_runtime.errors import UserError
from packager.build import BuildOptions
from packager.ladder.apart import Job, choose_apart
from tests.helpers.ladder_fakes import LabelledCandidates, PrecisionBench


def _job(rungs: str, precision: str = "auto") -> Job:
    opts = BuildOptions("model.onnx", "rpi4", "calibration.npy", precision=precision)
    return Job(opts, LabelledCandidates(), PrecisionBench(), None, (), None, rungs)


def test_a_rung_whose_process_segfaults_is_a_failed_step_and_the_next_rung_is_tried(capfd):
    outcome, split = choose_apart(_job("tests.helpers.ladder_fakes:CRASHING"))
    names = [s.name for s in outcome.steps]
    assert names == ["int8, min/max", "a rung that segfaults", "dynamic range"]
    crashed = outcome.steps[1]
    assert crashed.missing == ["crashed (signal 11, SIGSEGV)"] and not crashed.meets
    assert outcome.chosen.name == "dynamic range" and split == {}
    err = capfd.readouterr().err
    assert "a rung that segfaults: crashed (signal 11, SIGSEGV); going on with the next rung in a new process" in err
    assert "int8, min/max" in err and "(measured before the restart)" in err  # not measured twice


def test_a_crash_with_no_rung_left_is_one_error_line():
    with pytest.raises(UserError, match=r"no full-integer model holds the fidelity bar .*a rung that segfaults: "
                                        r"crashed \(signal 11, SIGSEGV\)"):
        choose_apart(_job("tests.helpers.ladder_fakes:CRASHING", precision="int8"))
