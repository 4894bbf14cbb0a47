"""Stage 4: ONNX -> float TensorFlow SavedModel, through a converter backend.

Backends sit behind one small interface and are registered in one explicit
table. A backend takes the shape-fixed ONNX file, a private working folder
and a few real samples (some converters check their own output on data) and
returns the SavedModel folder; quantization is ours, not the backend's
(stage 5), so every backend gets the same calibrated int8 path.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from . import onnx2tf_backend

# name -> convert(onnx_path, workdir, samples, verbose) -> SavedModel folder
CONVERTERS: dict[str, Callable[[Path, Path, dict[str, np.ndarray], bool], Path]] = {
    "onnx2tf": onnx2tf_backend.convert,
}
DEFAULT_CONVERTER = "onnx2tf"


def convert(onnx_path: Path, workdir: Path, samples: dict[str, np.ndarray], verbose: bool = False,
            converter: str = DEFAULT_CONVERTER) -> Path:
    """Convert with the named backend; returns the SavedModel folder."""
    return CONVERTERS[converter](onnx_path, workdir, samples, verbose)
