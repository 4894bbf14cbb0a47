"""How an onnx2tf failure is told: the one line the build prints for an attempt, from onnx2tf's log."""

from onnx import TensorProto, helper

from packager.convert.onnx2tf_backend import _failure

# The tail of a real log (onnx2tf 1.28.8 on a Conv1d written as Unsqueeze -> 1 x 256 Conv -> Squeeze).
LOG = """INFO: 3 / 16
INFO: onnx_op_type: Conv onnx_op_name: rate16k_filterbank
ERROR: The trace log is below.
Traceback (most recent call last):
  File "onnx2tf/ops/Conv.py", line 459, in make_node
ValueError: Exception encountered when calling layer "tf.nn.convolution" (type TFOpLambda).

Negative dimension size caused by subtracting 256 from 1 for '{{node tf.nn.convolution/convolution}} = \
Conv2D[T=DT_FLOAT, data_format="NHWC", strides=[1, 1, 128, 1]](Placeholder, tf.nn.convolution/convolution/filter)' \
with input shapes: [1,640,1,1], [1,256,1,258].

Call arguments received by layer "tf.nn.convolution" (type TFOpLambda):
  \u2022 input=tf.Tensor(shape=(1, 640, 1, 1), dtype=float32)
"""


def test_a_keras_layer_failure_says_what_tensorflow_said(tmp_path):
    log = tmp_path / "onnx2tf.log"
    log.write_text(LOG)
    proto = helper.make_model(helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["y"], name="rate16k_filterbank")], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 1, 640])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)]))
    reason, ops = _failure(log, proto, 1)
    assert reason == ('ValueError: Exception encountered when calling layer "tf.nn.convolution" (type TFOpLambda)'
                      ": Negative dimension size caused by subtracting 256 from 1 (input shapes [1,640,1,1], "
                      "[1,256,1,258])")
    assert ops == ["Conv (rate16k_filterbank)"]


def test_a_plain_error_line_stays_as_it_is(tmp_path):
    log = tmp_path / "onnx2tf.log"
    log.write_text("INFO: 1 / 2\nTypeError: 'NoneType' object is not iterable\n")
    proto = helper.make_model(helper.make_graph([], "g", [], []))
    assert _failure(log, proto, 1) == ("TypeError: 'NoneType' object is not iterable", [])
