"""`edge-run health`: the install-time check that the bundle reproduces its build's outputs here.

The build stores one held-out sample and the outputs it got for it
(packager.bundle.stage_health); install.sh --prefix makes a new version
current only once this check passes on the device.
"""

from __future__ import annotations

import numpy as np

from .arrays import load_arrays
from .errors import UserError
from .files import read_input


def check_sample(model) -> None:
    """The bundle's stored sample gives the build's outputs, within their tolerance; UserError otherwise."""
    health, files = model.manifest.get("health"), model.manifest["files"]
    if not (isinstance(health, dict) and health.get("sample") in files and health.get("expected") in files
            and isinstance(health.get("tolerance"), dict)):
        raise UserError(f"{model.name} holds no health sample (its build predates them)",
                        "rebuild it with this edgepack, or install it without --prefix")
    outputs = model.predict(read_input(str(model.folder / health["sample"]), model))
    expected = load_arrays(str(model.folder / health["expected"]), 1 << 26, "health sample", "rebuild the bundle")
    for spec in model.outputs:
        name = spec["name"]
        tolerance = health["tolerance"].get(name)
        want = np.asarray(expected[name]) if name in expected else None
        if want is None or not isinstance(tolerance, (int, float)):
            raise UserError(f"health check: no expected value or tolerance for output '{name}'", "rebuild the bundle")
        got = outputs[name]
        if got.shape != want.shape:
            raise UserError(f"health check: output '{name}' has shape {list(got.shape)}, expected {list(want.shape)}",
                            "this version does not work on this device: keep the running one")
        diff = float(np.nan_to_num(np.abs(got.astype(np.float64) - want), nan=np.inf).max()) if got.size else 0.0
        if not diff <= tolerance:
            raise UserError(f"health check: output '{name}' differs from the build's by {diff:.6g} "
                            f"(tolerance {tolerance:.6g})",
                            "this version does not work on this device: keep the running one")
