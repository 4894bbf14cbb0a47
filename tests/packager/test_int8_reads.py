"""An ARG_MAX behind LiteRT Quantizer's DEQUANTIZE reads the int8 tensor: the same indices, no float op."""

import numpy as np
import pytest

from packager import quantize
from packager.int8_reads import argmax_reads_int8
from packager.layout import TensorMap
from packager.onnx_model import TensorSpec
from packager.ops import op_report
from packager.quantize import Calibrated

SHAPE = [1, 6, 5, 8]


def _argmax_model(axis: int) -> bytes:
    """x [1, 6, 5, 8] -> x * 2 + 1 -> ArgMax over ``axis`` -> y (int64), from the TFLite converter."""
    import tensorflow as tf

    class Head(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec(SHAPE, tf.float32, name="x")])
        def __call__(self, x):
            return {"y": tf.argmax(x * 2.0 + 1.0, axis=axis)}

    head = Head()
    return tf.lite.TFLiteConverter.from_concrete_functions([head.__call__.get_concrete_function()], head).convert()


def _ops(tflite: bytes) -> list[str]:
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    interp = Interpreter(model_content=tflite,
                         experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    return [op["op_name"] for op in interp._get_ops_details()]


def _run(tflite: bytes, x: np.ndarray) -> np.ndarray:
    """The model on each sample, the float input quantized as its input tensor says when it is int8."""
    from ai_edge_litert.interpreter import Interpreter

    runner = Interpreter(model_content=tflite).get_signature_runner("serving_default")
    detail = runner.get_input_details()["x"]
    if detail["dtype"] == np.int8:
        scale, zero = detail["quantization"]
        x = np.clip(np.round(x / scale + zero), -128, 127).astype(np.int8)
    return np.stack([runner(x=s[None])["y"] for s in x])


# LiteRT Quantizer's calibrator turns on experimental_preserve_all_tensors itself, and the interpreter warns
@pytest.mark.filterwarnings("ignore::UserWarning:ai_edge_litert.*")
@pytest.mark.parametrize("axis, io_dtype", [(-1, "int8"), (1, "float32")])
def test_argmax_reads_int8_with_the_indices_the_dequantized_argmax_gave(monkeypatch, axis, io_dtype):
    rng = np.random.default_rng(5)
    samples = {"x": rng.normal(0, 2, (24, *SHAPE)).astype(np.float32)}
    cal = Calibrated(_argmax_model(axis), [TensorMap(TensorSpec("x", SHAPE, "float32"), SHAPE, "x", [0, 1, 2, 3])],
                     samples, io_dtype)
    with monkeypatch.context() as m:
        m.setattr(quantize, "argmax_reads_int8", lambda tflite: (tflite, 0))
        before = cal.int8()
    assert not before.strict and [f["type"] for f in op_report(before.tflite)["float_ops"]] == ["DEQUANTIZE", "ARG_MAX"]
    after = cal.int8()
    assert after.strict and op_report(after.tflite)["float_ops"] == []
    assert "DEQUANTIZE" not in _ops(after.tflite) and "ARG_MAX" in _ops(after.tflite)
    x = rng.normal(0, 2, (40, *SHAPE)).astype(np.float32)
    np.testing.assert_array_equal(_run(after.tflite, x), _run(before.tflite, x))
    assert argmax_reads_int8(after.tflite) == (after.tflite, 0)  # nothing left: the same bytes
