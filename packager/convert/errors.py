"""How one conversion attempt fails: a one-line reason and the ONNX ops involved."""


class ConversionFailed(Exception):
    """One attempt did not produce a model that reproduces the ONNX model."""

    def __init__(self, reason: str, ops: list[str] | None = None):
        super().__init__(reason)
        self.reason = reason
        self.ops = ops or []
