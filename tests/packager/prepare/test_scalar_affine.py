"""A scalar scale and shift of a feature map (PP-LCNetV3's affine block) as a 1x1 depthwise Conv, exactly."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from packager.prepare import scalar_affine


def _node(op, inputs, output, **attrs):
    return helper.make_node(op, inputs, [output], name=output, **attrs)


def _conv(inputs, output):
    return _node("Conv", inputs, output, kernel_shape=[3, 3], pads=[1, 1, 1, 1])


def _model(nodes, shape, inits):
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(np.asarray(v, np.float32), k) for k, v in inits.items()])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    proto.ir_version = 8
    return onnx.shape_inference.infer_shapes(proto)


def _run(proto, x):
    return ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


def test_scale_and_shift_after_an_activation_becomes_a_depthwise_conv():
    """One Conv instead of a MUL and an ADD of a small constant (which int8 XNNPACK refuses)."""
    rng = np.random.default_rng(0)
    nodes = [_conv(["x", "w"], "c"), _node("HardSwish", ["c"], "h"), _node("Mul", ["s", "h"], "m"),
             _node("Add", ["m", "b"], "y")]
    proto = _model(nodes, (1, 3, 8, 8), {"w": rng.standard_normal((4, 3, 3, 3)), "s": 0.63, "b": -0.0075})
    x = rng.standard_normal((1, 3, 8, 8)).astype(np.float32) * 3
    before = _run(proto, x)
    assert scalar_affine.run(proto) == ["1 scalar scale-and-shift (x * s + b) made a 1x1 depthwise Conv (int8 "
                                        "XNNPACK refuses an ADD of a small constant)"]
    onnx.checker.check_model(proto, full_check=True)
    assert [n.op_type for n in proto.graph.node] == ["Conv", "HardSwish", "Conv"]
    depthwise = proto.graph.node[-1]
    assert {a.name: helper.get_attribute_value(a) for a in depthwise.attribute} == {"kernel_shape": [1, 1], "group": 4}
    assert {t.name for t in proto.graph.initializer} == {"w", "y_edgepack_dw_w", "y_edgepack_dw_b"}
    np.testing.assert_allclose(_run(proto, x), before, rtol=1e-6, atol=1e-6)
    assert scalar_affine.run(proto) == []


@pytest.mark.parametrize("case", ["straight after the conv", "not a feature map"])
def test_scale_and_shift_left_alone(case):
    """Right after a conv the converter folds them into its weights; a 2-D tensor has no channels axis."""
    if case == "straight after the conv":
        nodes, shape = [_conv(["x", "w"], "c"), _node("Mul", ["c", "s"], "m"), _node("Add", ["m", "b"], "y")], (1, 3, 8, 8)
    else:
        nodes, shape = [_node("Relu", ["x"], "r"), _node("Mul", ["r", "s"], "m"), _node("Add", ["m", "b"], "y")], (1, 64)
    proto = _model(nodes, shape, {"w": np.ones((4, 3, 3, 3)), "s": 2.0, "b": 1.0})
    before = proto.SerializeToString()
    assert scalar_affine.run(proto) == []
    assert proto.SerializeToString() == before
