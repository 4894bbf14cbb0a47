"""The layout_hints pass on YOLO-style detector heads (onnxruntime only, no onnx2tf)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from packager.prepare import layout_hints
from tests.fixtures import detector_models

SIZE = 160


def _fixed(path) -> onnx.ModelProto:
    """Load a fixture with x fixed to [1, 3, 160, 160] and shapes inferred, as the build hands it over."""
    proto = onnx.load(str(path))
    for dim, size in zip(proto.graph.input[0].type.tensor_type.shape.dim, (1, 3, SIZE, SIZE)):
        dim.Clear()
        dim.dim_value = size
    for dim in proto.graph.output[0].type.tensor_type.shape.dim:
        dim.Clear()
    return onnx.shape_inference.infer_shapes(proto, strict_mode=True)


def _run(proto, feed: dict) -> list[np.ndarray]:
    import onnxruntime as ort

    return ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feed)


def _constants(proto) -> list[list[int]]:
    return [list(n.attribute[0].t.dims) for n in proto.graph.node if n.op_type == "Constant"]


@pytest.fixture
def feed():
    return {"x": np.random.default_rng(0).standard_normal((1, 3, SIZE, SIZE)).astype(np.float32)}


def test_anchor_constant_becomes_initializer_and_results_match(tmp_path, feed):
    proto = _fixed(detector_models.yolov8_constant_nodes(tmp_path / "m.onnx"))
    before = _run(proto, feed)
    assert [1, 2, 525] in _constants(proto)

    changes = layout_hints.run(proto)

    assert len(changes) == 1 and changes[0].startswith("1 Constant node(s)")
    assert _constants(proto) == [[1, 525]]  # rank 2: onnx2tf does not transpose it, left alone
    assert [1, 2, 525] in [list(t.dims) for t in proto.graph.initializer]
    onnx.checker.check_model(proto, full_check=True)
    np.testing.assert_array_equal(_run(proto, feed)[0], before[0])


@pytest.mark.parametrize("builder", [detector_models.yolov8_dynamic, detector_models.detector_dfl_transposed])
def test_after_onnxsim_no_rank3_constant_is_left(tmp_path, feed, builder):
    """The reported case: dynamic H/W, input shape fixed, onnxsim folds the anchor grid into a Constant."""
    from onnxsim import simplify

    proto = _fixed(builder(tmp_path / "m.onnx"))
    before = _run(proto, feed)
    proto, ok = simplify(proto, check_n=0)
    assert ok
    assert any(len(dims) == 3 for dims in _constants(proto))

    assert layout_hints.run(proto)

    assert not any(len(dims) in layout_hints.TRANSPOSED_RANKS for dims in _constants(proto))
    onnx.checker.check_model(proto, full_check=True)
    np.testing.assert_allclose(_run(proto, feed)[0], before[0], rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("builder", [detector_models.yolov8_static, detector_models.detector_dfl_static])
def test_nothing_to_do_without_constant_nodes(tmp_path, builder):
    proto = _fixed(builder(tmp_path / "m.onnx"))
    before = proto.SerializeToString()

    assert layout_hints.run(proto) == []
    assert proto.SerializeToString() == before


def _tiny(nodes, out_shape) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes, "t",
        [helper.make_tensor_value_info("a", TensorProto.FLOAT, [1, 2, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    proto.ir_version = 8  # what the pinned onnxruntime reads
    return proto


def test_constant_that_is_a_graph_output_is_kept():
    value = numpy_helper.from_array(np.ones((1, 2, 3), np.float32))
    proto = _tiny([helper.make_node("Constant", [], ["y"], value=value)], [1, 2, 3])

    assert layout_hints.run(proto) == []
    assert [n.op_type for n in proto.graph.node] == ["Constant"]


def test_scalar_and_rank4_constants():
    """Only ranks onnx2tf transposes move; value_float-style Constants stay."""
    rank4 = numpy_helper.from_array(np.arange(6, dtype=np.float32).reshape(1, 2, 3, 1))
    proto = _tiny([
        helper.make_node("Constant", [], ["k4"], value=rank4),
        helper.make_node("Constant", [], ["s"], value_float=2.0),
        helper.make_node("Reshape", ["k4", "shape"], ["k3"]),
        helper.make_node("Mul", ["a", "k3"], ["m"]),
        helper.make_node("Mul", ["m", "s"], ["y"]),
    ], [1, 2, 3])
    proto.graph.initializer.append(numpy_helper.from_array(np.array([1, 2, 3], np.int64), "shape"))
    a = np.random.default_rng(1).standard_normal((1, 2, 3)).astype(np.float32)
    before = _run(proto, {"a": a})[0]

    changes = layout_hints.run(proto)

    assert "[1, 2, 3, 1]" in changes[0]
    assert [n.op_type for n in proto.graph.node] == ["Constant", "Reshape", "Mul", "Mul"]
    onnx.checker.check_model(proto, full_check=True)
    np.testing.assert_array_equal(_run(proto, {"a": a})[0], before)
