"""Stand-ins for the ladder's candidates and bench that a child process can rebuild (picklable, no lambdas).

The models are labelled bytes, not computed: the bench's figures depend on the
precision alone (int8 far below the bar, every float precision exact).
"""

from __future__ import annotations

import os
import signal

import numpy as np

from packager.fidelity import compare
from packager.ladder.rungs import RUNGS, Made, Rung
from packager.quantize import Quantized

N = 16
REF = np.random.default_rng(0).normal(size=(N, 1, 32)).astype(np.float32)
NOISE = np.random.default_rng(1).normal(size=(N, 1, 32)).astype(np.float32)


class LabelledCal:
    float_tflite = b""
    dataset = [{}]
    qsv = {"t0": {}, "t1": {}}

    def int8(self, ranges=None, float_scopes=()):
        return Quantized(b"\0" * 100, "int8+float" if float_scopes else "int8", not float_scopes, {}, [],
                         list(float_scopes), "", ranges)

    def dynamic(self):
        return Quantized(b"\0" * 300, "dynamic", False, {}, [])


class LabelledCandidates:
    converter_int8 = None
    prepared = None
    io_dtype = "int8"

    def __init__(self):
        self.calibrated = LabelledCal()
        self.float32 = Quantized(b"\0" * 400, "float32", False, {})

    def float16(self):
        return Quantized(b"\0" * 200, "float16", False, {})

    def repaired(self):
        return None


class PrecisionBench:
    """int8 (and int8 with islands) far below the bar; float precisions exact; one XNNPACK piece each."""

    board = None

    def fidelity(self, q, validation=False):
        noise = 0.5 if q.precision.startswith("int8") else 0.0
        return compare({"y": REF}, {"y": REF + noise * NOISE}, N)

    def speed(self, q):
        return 1.0, 1

    def board_speed(self, q):
        return None

    def compute_ops(self, q):
        return 0, 16

    def split_by(self, q):
        return {}


def _segfault(climb) -> Made:
    os.kill(os.getpid(), signal.SIGSEGV)  # what the TFLite calibrator does to some recurrent models
    raise AssertionError("not reached")


# The real table with a rung that kills its process between full int8 and the float rungs.
CRASHING = (RUNGS[0], Rung("a rung that segfaults", "int8", lambda c: True, _segfault),
            *[r for r in RUNGS if r.family == "float"])
