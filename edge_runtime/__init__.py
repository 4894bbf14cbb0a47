"""edge_runtime: the on-device runner of edgepack bundles.

    import edge_runtime
    model = edge_runtime.load("dist/digits-rpi4")
    scores = model.predict({"image": x})["scores"]

Needs only the standard library, numpy and a TFLite runtime.
"""

from .errors import UserError
from .model import Model, load

__version__ = "0.1.0"
__all__ = ["Model", "UserError", "load", "__version__"]
