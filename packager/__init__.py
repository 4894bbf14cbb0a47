"""edgepack's host side: ONNX in, calibrated full-integer TFLite bundle out.

    from packager import BuildOptions, build
    result = build(BuildOptions("model.onnx", "rpi4", "calibration.npy"))

The CLI (``edgepack``) lives in :mod:`packager.cli`. Heavy dependencies
(TensorFlow, onnx2tf) load only inside the stages that need them.
"""

__version__ = "0.1.0"

from .build import BuildOptions, BuildResult, build  # noqa: E402
from .profiles import Profile, load_profile  # noqa: E402

__all__ = ["BuildOptions", "BuildResult", "Profile", "build", "load_profile", "__version__"]
