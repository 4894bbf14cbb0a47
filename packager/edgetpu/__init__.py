"""The Edge TPU: compatibility predicted without Coral's compiler, and compiled with it when it is on PATH.

* :mod:`.rules`: the supported-ops table (``edgetpu_ops.toml``, data) and
  the checks it names;
* :mod:`.predictor`: where the compiler's mapping would stop, and why
  (:func:`compatibility`);
* :mod:`.compiler`: ``edgetpu_compiler`` found, its version paired with the
  device's Edge TPU runtime (a profile's ``edgetpu_runtime``), run, and its
  output read;
* :mod:`.stage`: the build's stage, the manifest's ``edgetpu`` section, and the
  Edge TPU's row of :mod:`packager.accelerators` (:func:`preflight`,
  :func:`stage_target`).
"""

from .compiler import (COMPILER, compile_model, compiler_version, default_runtime, device_runtime, find_compiler,
                       pairing, parse_compiler_output)
from .predictor import compatibility, op_reason, summary_line
from .rules import CHECKS, table
from .stage import EDGETPU_FILE, check_compiler, edgetpu_stage, preflight, stage_target

__all__ = ["CHECKS", "COMPILER", "EDGETPU_FILE", "check_compiler", "compatibility", "compile_model",
           "compiler_version", "default_runtime", "device_runtime", "edgetpu_stage", "find_compiler", "op_reason",
           "pairing", "parse_compiler_output", "preflight", "stage_target", "summary_line", "table"]
