"""Erf (exact GELU) rewritten into ops with int8 kernels, within its stated error."""

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper

from packager.prepare import erf


def test_erf_becomes_its_tanh_form_within_the_stated_error():
    nodes = [helper.make_node("Erf", ["x"], ["e"], name="erf"), helper.make_node("Relu", ["e"], ["y"], name="relu")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4001])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4001])])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    proto.ir_version = 8
    x = np.linspace(-8, 8, 4001, dtype=np.float32)[None]
    before = ort.InferenceSession(proto.SerializeToString()).run(None, {"x": x})[0]
    assert erf.run(proto) == ["1 Erf replaced by its tanh form (max error 3.6e-4; TFLite has no Erf kernel)"]
    onnx.checker.check_model(proto)
    assert "Erf" not in {n.op_type for n in proto.graph.node}
    after = ort.InferenceSession(proto.SerializeToString()).run(None, {"x": x})[0]
    assert np.abs(after - before).max() <= 3.7e-4
    assert erf.run(proto) == []  # nothing left to do
