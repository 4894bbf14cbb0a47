"""The slice_axes pass: multi-axis Slices that onnx2tf would misplace become
one Slice per axis, with the same results in onnxruntime."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from packager.prepare import PASSES, Pass, prepare, slice_axes
from tests.fixtures.audio_models import audio_samples, kws_filterbank

BIG = np.iinfo(np.int64).max


def _one_slice(shape, starts, ends, axes=None, steps=None, opset=17, name="s"):
    """x -> Slice -> Relu -> y, bounds as initializers (attributes below opset 10)."""
    inits, inputs, attrs = [], ["x"], {}
    if opset < 10:
        attrs = {"starts": starts, "ends": ends, **({"axes": axes} if axes is not None else {})}
    else:
        for key, value in (("starts", starts), ("ends", ends), ("axes", axes), ("steps", steps)):
            inputs.append("" if value is None else key)
            if value is not None:
                inits.append(numpy_helper.from_array(np.array(value, np.int64), key))
        while inputs[-1] == "":
            inputs.pop()
    nodes = [helper.make_node("Slice", inputs, ["cut"], name=name, **attrs),
             helper.make_node("Relu", ["cut"], ["y"], name="relu")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    proto.ir_version = 8
    return onnx.shape_inference.infer_shapes(proto)


def _run(proto, feeds):
    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"]).run(None, feeds)


def _rewritten(proto, feeds):
    """Run the pass on a copy; check it is valid and exact; return (copy, changes)."""
    before = _run(proto, feeds)
    after = onnx.ModelProto()
    after.CopyFrom(proto)
    changes = slice_axes.run(after)
    after = onnx.shape_inference.infer_shapes(after)
    onnx.checker.check_model(after, full_check=True)
    for old, new in zip(before, _run(after, feeds)):
        assert old.shape == new.shape
        np.testing.assert_array_equal(old, new)
    return after, changes


def _slices(proto):
    """(axes, starts, ends) of every Slice, from initializers."""
    values = {t.name: numpy_helper.to_array(t).tolist() for t in proto.graph.initializer}
    return [(values[n.input[3]], values[n.input[1]], values[n.input[2]])
            for n in proto.graph.node if n.op_type == "Slice"]


def _x(shape, seed=0):
    return {"x": np.random.default_rng(seed).standard_normal(shape).astype(np.float32)}


@pytest.mark.parametrize("axes, rank, risky", [
    ([1, 2], 3, True),  # NCW channel + time: [2, 1] channels-last
    ([0, 1, 2], 3, True),
    ([2, 1], 3, True),
    ([1, 3], 4, True),  # NCHW channel + W: [3, 2]
    ([2, 3], 4, False),  # H, W stay in order
    ([0, 1], 3, False),
    ([1, 0], 2, True),  # not ascending in ONNX order
    ([0, 1], 2, False),
    ([1], 3, False),
])
def test_which_slices_are_at_risk(axes, rank, risky):
    assert slice_axes.at_risk(axes, rank) is risky


def test_stft_halves_become_single_axis_slices_with_clamped_bounds():
    # Silero's real half: channels 0:129, frames 1:, as onnxsim fuses them.
    proto = _one_slice([4, 258, 5], [0, 1], [129, BIG], [1, 2], [1, 1])
    after, changes = _rewritten(proto, _x([4, 258, 5]))
    assert changes and "1 multi-axis Slice" in changes[0]
    assert _slices(after) == [([1], [0], [129]), ([2], [1], [5])]
    assert {"starts", "ends", "axes", "steps"}.isdisjoint(t.name for t in after.graph.initializer)  # old bounds gone


def test_full_range_axes_are_dropped():
    # The openvino export lists every axis; only the channel one cuts.
    proto = _one_slice([1, 258, 4], [0, 129, 0], [BIG, BIG, BIG], [0, 1, 2], [1, 1, 1])
    after, _ = _rewritten(proto, _x([1, 258, 4]))
    assert _slices(after) == [([1], [129], [258])]


def test_a_slice_keeping_everything_becomes_identity():
    proto = _one_slice([2, 6, 5], [0, 0], [BIG, 6], [1, 2])
    after, changes = _rewritten(proto, _x([2, 6, 5]))
    assert changes and [n.op_type for n in after.graph.node] == ["Identity", "Relu"]


@pytest.mark.parametrize("kwargs", [
    {"starts": [-1, 2], "ends": [-BIG, -1], "axes": [-1, 1], "steps": [-1, 1]},  # reversed time, negative axes
    {"starts": [1, 0], "ends": [5, 3], "axes": [2, 1], "steps": [2, 1]},  # strided, axes out of order
    {"starts": [3, 0], "ends": [1, 3], "axes": [2, 1], "steps": [1, 1]},  # empty along time
    {"starts": [0, 1, 2], "ends": [2, 5, 7], "axes": None, "steps": None},  # default axes
])
def test_exact_for_negative_steps_strides_and_defaults(kwargs):
    proto = _one_slice([2, 6, 7], **kwargs)
    after, changes = _rewritten(proto, _x([2, 6, 7], seed=1))
    assert changes
    assert all(len(axes) == 1 for axes, _, _ in _slices(after))


def test_opset9_attribute_slices_are_split_in_attribute_form():
    proto = _one_slice([1, 8, 6], [0, 2], [4, 6], [1, 2], opset=9)
    after, changes = _rewritten(proto, _x([1, 8, 6]))
    assert changes
    slices = [n for n in after.graph.node if n.op_type == "Slice"]
    axes = [next(list(a.ints) for a in n.attribute if a.name == "axes") for n in slices]
    assert axes == [[1], [2]]
    assert all(len(n.input) == 1 for n in slices)


@pytest.mark.parametrize("shape, kwargs", [
    ([1, 3, 8, 8], {"starts": [1, 2], "ends": [5, 6], "axes": [2, 3]}),  # H, W: in order either way
    ([1, 3, 8], {"starts": [1], "ends": [3], "axes": [1]}),  # one axis
])
def test_slices_onnx2tf_gets_right_are_left_alone(shape, kwargs):
    proto = _one_slice(shape, **kwargs)
    before = proto.SerializeToString()
    assert slice_axes.run(proto) == []
    assert proto.SerializeToString() == before


def test_runtime_bounds_are_left_alone():
    proto = _one_slice([1, 8, 6], [0, 1], [4, 5], [1, 2])
    proto.graph.input.append(helper.make_tensor_value_info("starts_in", TensorProto.INT64, [2]))
    proto.graph.node[0].input[1] = "starts_in"
    assert slice_axes.run(proto) == []


def test_shared_bounds_survive_and_names_stay_unique():
    proto = _one_slice([2, 6, 5], [0, 1], [3, 5], [1, 2], name="")
    # A second, unnamed Slice reading the same bounds.
    proto.graph.node.insert(1, helper.make_node("Slice", ["x", "starts", "ends", "axes"], ["cut2"]))
    proto.graph.node.append(helper.make_node("Add", ["y", "cut2"], ["z"], name="add"))
    proto.graph.output[0].name = "z"
    after, changes = _rewritten(proto, _x([2, 6, 5]))
    assert "2 multi-axis Slice" in changes[0]
    names = [n.name for n in after.graph.node] + [t.name for t in after.graph.initializer]
    assert len(names) == len(set(names))
    assert len([n for n in after.graph.node if n.op_type == "Slice"]) == 4


def _risky(proto) -> int:
    values = {t.name: numpy_helper.to_array(t).tolist() for t in proto.graph.initializer}
    return sum(slice_axes.at_risk(values[n.input[3]], 3) for n in proto.graph.node if n.op_type == "Slice")


@pytest.mark.parametrize("front, split", [("magnitude", 2), ("abs", 0)])
def test_filterbank_classifier_through_the_stage(tmp_path, front, split):
    """simplify fuses the torch-style Slices into at-risk ones; slice_axes, run after it, splits them again."""
    proto = onnx.shape_inference.infer_shapes(onnx.load(str(kws_filterbank(tmp_path / "kws.onnx", front=front))))
    simplify_only = onnx.ModelProto()
    simplify_only.CopyFrom(proto)
    samples = {"audio": audio_samples(3)}
    simplify = next(p for p in PASSES if p.name == "simplify")
    prepare(simplify_only, samples, (simplify,))
    assert _risky(simplify_only) == split  # what onnx2tf would have got
    report = prepare(proto, samples, (simplify, Pass("slice_axes", slice_axes.run, exact=True)))
    assert len([c for c in report.changes if f"slice_axes: {split} multi-axis" in c]) == (1 if split else 0)
    assert min(report.cosine.values()) > 0.99999
    assert _risky(proto) == 0  # the property the pass guarantees
    assert sum(n.op_type == "Slice" for n in proto.graph.node) == 2 * split
