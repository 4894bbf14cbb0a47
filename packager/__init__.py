"""edgepack's host side: ONNX in, calibrated full-integer TFLite bundle out.

    from packager import BuildOptions, UserError, build
    try:
        result = build(BuildOptions("model.onnx", "rpi4", "calibration.npy"))
    except UserError as exc:  # bad input, or a model the target cannot take: exc.message, exc.hint
        ...

The CLI (``edgepack``) lives in :mod:`packager.cli`. Heavy dependencies
(TensorFlow, onnx2tf) load only inside the stages that need them.
"""

__version__ = "0.1.0"

# Defined with the on-device runner, which never imports the packager: one error class for both sides.
from edge_runtime.errors import UserError  # noqa: E402

from .build import BuildOptions, BuildResult, build  # noqa: E402
from .profiles import Profile, load_profile  # noqa: E402

__all__ = ["BuildOptions", "BuildResult", "Profile", "UserError", "build", "load_profile", "__version__"]
