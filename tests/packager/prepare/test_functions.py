"""Ops the converter has no handler for, expanded into ONNX's own function bodies."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from packager.prepare import functions

RNG = np.random.default_rng(0)


def _model(node, inits, opset, shape):
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)], inits)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    proto.ir_version = 10
    return proto


def _param(name, n):
    return numpy_helper.from_array(RNG.random(n).astype(np.float32) + 0.5, name)


CASES = {
    "GroupNormalization": _model(helper.make_node("GroupNormalization", ["x", "s", "b"], ["y"], num_groups=2),
                                 [_param("s", 4), _param("b", 4)], 21, [1, 4, 6, 6]),
    "RMSNormalization": _model(helper.make_node("RMSNormalization", ["x", "s"], ["y"], axis=-1),
                               [_param("s", 8)], 23, [1, 5, 8]),
    "Swish": _model(helper.make_node("Swish", ["x"], ["y"], alpha=1.5), [], 24, [1, 5, 8]),
}


@pytest.mark.parametrize("op", CASES)
def test_an_op_without_handler_is_expanded_exactly(op):
    proto = CASES[op]
    assert op not in functions.converter_ops()
    x = RNG.standard_normal([d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim]).astype(np.float32)
    before = ort.InferenceSession(proto.SerializeToString()).run(None, {"x": x})[0]
    expanded = onnx.ModelProto()
    expanded.CopyFrom(proto)
    changes = functions.run(expanded)
    assert changes[0].startswith(f"{op} x1 expanded")
    onnx.checker.check_model(expanded)
    left = {n.op_type for n in expanded.graph.node} - functions.converter_ops()
    assert left == set()  # Swish's body uses CastLike, expanded in a second round
    after = ort.InferenceSession(expanded.SerializeToString()).run(None, {"x": x})[0]
    np.testing.assert_allclose(after, before, rtol=1e-5, atol=1e-6)


def test_ops_the_converter_handles_are_left_alone():
    proto = _model(helper.make_node("LayerNormalization", ["x", "s"], ["y"], axis=-1), [_param("s", 8)], 17, [1, 5, 8])
    assert "LayerNormalization" in functions.converter_ops()
    before = proto.SerializeToString()
    assert functions.run(proto) == []
    assert proto.SerializeToString() == before
