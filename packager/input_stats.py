"""Statistics of the calibration set, kept in the manifest for drift detection.

`edge-run serve` compares live inputs with these (edge_runtime.drift): a
camera that got darker, a sensor feeding another unit, preprocessing
changed on the client. The model still answers, only worse, and nothing
else says so. The calibration set is what the int8 ranges were fitted on,
so it is the distribution the bundle is known to be good for.

Image-like inputs ([N, C, H, W] with a few channels) get per-channel mean
and std, since a colour cast or a swapped channel order moves one channel
and not the others; every other input gets one overall mean and std. A few
quantiles of all values go along for people reading the manifest.
"""

from __future__ import annotations

import numpy as np

MAX_CHANNELS = 64  # more "channels" than this is a feature map, not an image: overall statistics then
QUANTILES = (0.01, 0.5, 0.99)


def channel_axis(shape: list[int]) -> int | None:
    """Axis 1 of an [N, C, H, W] input with at most MAX_CHANNELS channels (the ONNX image layout), else None."""
    return 1 if len(shape) == 4 and shape[1] <= MAX_CHANNELS else None


def input_statistics(data: dict[str, np.ndarray], inputs: list[dict]) -> dict:
    """{input name: statistics} of the calibration arrays, for the manifest's ``input_statistics``.

    Args:
        data: {input name: (samples, *shape) array} as packager.calibration reads it.
        inputs: the manifest's inputs (name and ONNX shape); inputs without data
            (fixed at build time) get nothing.
    """
    out = {}
    for spec in inputs:
        if spec["name"] not in data:
            continue
        shape = spec["shape"]
        x = np.asarray(data[spec["name"]], np.float64).reshape(-1, *shape[1:])  # batch folded into samples
        axis = 3 if spec.get("format") == "image-uint8" else channel_axis(shape)  # camera frames: [N, H, W, C]
        if axis is None:
            mean, std = [float(x.mean())], [float(x.std())]
        else:
            per = np.moveaxis(x, axis, 0).reshape(shape[axis], -1)
            mean, std = per.mean(axis=1).tolist(), per.std(axis=1).tolist()
        out[spec["name"]] = {
            "channel_axis": axis,
            "mean": mean,
            "std": std,
            "quantiles": {str(q): float(v) for q, v in zip(QUANTILES, np.quantile(x, QUANTILES))},
            "samples": int(x.shape[0]),
        }
    return out
