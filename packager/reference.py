"""The float reference: the user's ONNX model run in onnxruntime.

Every figure edgepack reports compares against this, because it is what the
user ran before (same names, layout, dtype).
"""

from __future__ import annotations

import numpy as np

from edge_runtime.errors import UserError


class Reference:
    """An onnxruntime session on the shape-fixed ONNX model."""

    def __init__(self, proto):
        self.input_names: list[str] = []
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(
                proto.SerializeToString(), options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime raises its own untyped errors
            raise UserError(
                f"onnxruntime cannot load the model: {str(exc).strip().splitlines()[0]}",
                "the model must run in onnxruntime before it can be converted; check the export",
            ) from None
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.input_names = [i.name for i in self.session.get_inputs()]

    def run(self, samples: dict[str, np.ndarray], index: int) -> dict[str, np.ndarray]:
        """Outputs for sample ``index`` of (N, *shape) arrays."""
        feeds = {name: np.asarray(samples[name][index]) for name in self.input_names}
        try:
            values = self.session.run(self.output_names, feeds)
        except Exception as exc:
            raise UserError(
                f"onnxruntime failed on a calibration sample: {str(exc).strip().splitlines()[0]}",
                "check that the samples are what the model takes",
            ) from None
        return dict(zip(self.output_names, values))

    def outputs(self, samples: dict[str, np.ndarray], count: int) -> list[list[np.ndarray]]:
        """The outputs (in model order) of the first ``count`` samples."""
        runs = [self.run(samples, i) for i in range(count)]
        return [[run[name] for name in self.output_names] for run in runs]

    def stacked(self, samples: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """{output name: (N, *shape)}: every sample's outputs, stacked."""
        count = len(next(iter(samples.values())))
        runs = self.outputs(samples, count)
        return {name: np.stack([r[k] for r in runs]) for k, name in enumerate(self.output_names)}
