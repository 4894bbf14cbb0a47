"""An output join of ranges far apart (a detector's boxes beside its scores) is found and left float."""

import numpy as np
import pytest

from packager.layout import TensorMap
from packager.ladder.joins import Joins, output_joins
from packager.onnx_model import TensorSpec
from packager.quantize import Calibrated

SHAPE = [1, 8, 64]  # rows 0-3 boxes, 4-7 class logits, 64 anchors
# LiteRT Quantizer's calibrator turns on experimental_preserve_all_tensors itself, and the interpreter warns
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning:ai_edge_litert.*")


def _head(box_scale: float) -> bytes:
    """x [1, 8, 64] -> 6 layers of matmul + tanh -> y [1, 64, 8]: relu(rows 0-3) * box_scale joined to
    sigmoid(rows 4-7), then transposed (a float .tflite from the TFLite converter, as onnx2tf's export gives)."""
    import tensorflow as tf

    rng = np.random.default_rng(1)
    weights = [tf.constant((np.eye(8) + rng.normal(0, 0.05, (8, 8))).astype(np.float32)) for _ in range(6)]

    class Head(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec(SHAPE, tf.float32, name="x")])
        def __call__(self, x):
            for w in weights:
                x = tf.tanh(tf.matmul(w, x[0]))[None] * 1.5
            joined = tf.concat([tf.nn.relu(x[:, :4]) * box_scale, tf.sigmoid(x[:, 4:] * 3.0)], axis=1)
            return {"y": tf.transpose(joined, [0, 2, 1])}

    head = Head()
    converter = tf.lite.TFLiteConverter.from_concrete_functions([head.__call__.get_concrete_function()], head)
    return converter.convert()


def _calibrated(box_scale: float) -> tuple[Calibrated, dict]:
    samples = {"x": np.random.default_rng(0).normal(0, 1, (32, *SHAPE)).astype(np.float32)}
    spec = TensorSpec("x", SHAPE, "float32")
    return Calibrated(_head(box_scale), [TensorMap(spec, SHAPE, "x", [0, 1, 2])], samples, "float32"), samples


def _scores(tflite: bytes, x: np.ndarray) -> np.ndarray:
    from ai_edge_litert.interpreter import Interpreter

    run = Interpreter(model_content=tflite).get_signature_runner("serving_default")
    return np.stack([run(x=s)["y"] for s in x])


def test_boxes_and_scores_joined_at_the_output_are_left_float_with_the_ops_after_them():
    cal, samples = _calibrated(640.0)
    joins = output_joins(cal)
    scopes = joins.tail
    assert joins.spread >= 100
    assert len(scopes) == 2  # the CONCATENATION and the TRANSPOSE between it and the output
    # the decode: the sigmoid, relu, muls and slices back to the last matmul, which stays int8
    assert "Sigmoid;" in joins.decode and set(scopes) < set(joins.decode) and len(joins.decode) < 16
    x = samples["x"][:8]
    ref = _scores(cal.float_tflite, x)
    # one int8 scale of ~3.5 for the join rounds every score to 0 or 3.5; with the join float they keep theirs
    assert np.abs(_scores(cal.int8().tflite, x)[..., 4:] - ref[..., 4:]).mean() > 0.3
    assert np.abs(_scores(cal.int8(None, scopes).tflite, x)[..., 4:] - ref[..., 4:]).mean() < 0.02


def test_a_join_of_like_ranges_is_left_int8():
    cal, _ = _calibrated(2.0)
    assert output_joins(cal) == Joins([], [], 0.0)
