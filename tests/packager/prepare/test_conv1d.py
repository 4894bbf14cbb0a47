"""The conv1d pass: 1-D convolutions written as 2-D convs over an Unsqueeze (tf2onnx's Keras Conv1D, (1, k)
Conv2d kernels) become 1-D Convs, with the same results in onnxruntime; everything else is left alone."""

import collections
import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from packager.prepare import conv1d, prepare
from tests.conftest import run_cli
from tests.fixtures.audio_models import VAD_HIDDEN, VAD_WINDOW, raw_audio_vad
from tests.fixtures.corpus import RAW_VAD


def _model(nodes, shape, inits, opset=17):
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(v, k) for k, v in inits.items()])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    proto.ir_version = 8
    return onnx.shape_inference.infer_shapes(proto)


def _axes(name, axis, opset):
    """Unsqueeze/Squeeze axes: an input from opset 13, an attribute before."""
    return ([name, "axis"], {}) if opset >= 13 else ([name], {"axes": [axis]})


def _chain(axis=2, opset=17, relu_between=True):
    """x [1, 4, 64] -> Unsqueeze(axis) -> Conv (kernel 1 on the added axis, 5 on time, stride 2, pads 2) ->
    Relu -> grouped Conv (kernel 3, group 2) -> Squeeze(axis) -> y, as a torch model built from (1, k)
    Conv2d kernels runs it."""
    rng = np.random.default_rng(1)

    def conv_attrs(k, **kw):
        spatial = ([1, k], [1, kw.get("stride", 1)], [0, kw.get("pad", 0), 0, kw.get("pad", 0)]) if axis == 2 else (
            [k, 1], [kw.get("stride", 1), 1], [kw.get("pad", 0), 0, kw.get("pad", 0), 0])
        return dict(kernel_shape=spatial[0], strides=spatial[1], pads=spatial[2], group=kw.get("group", 1))

    def weight(out, cin, k):
        return rng.normal(0, 0.3, (out, cin, 1, k) if axis == 2 else (out, cin, k, 1)).astype(np.float32)

    unsq_in, unsq_attrs = _axes("x", axis, opset)
    sq_in, sq_attrs = _axes("c2", axis, opset)
    nodes = [helper.make_node("Unsqueeze", unsq_in, ["x4"], name="expand", **unsq_attrs),
             helper.make_node("Conv", ["x4", "w1", "b1"], ["c1"], name="conv1", **conv_attrs(5, stride=2, pad=2)),
             helper.make_node("Relu", ["c1"], ["r1"], name="relu"),
             helper.make_node("Conv", ["r1" if relu_between else "c1", "w2"], ["c2"], name="conv2",
                              **conv_attrs(3, pad=1, group=2)),
             helper.make_node("Squeeze", sq_in, ["y"], name="squeeze", **sq_attrs)]
    inits = {"w1": weight(8, 4, 5), "b1": rng.normal(0, 0.1, 8).astype(np.float32), "w2": weight(6, 4, 3)}
    if opset >= 13:
        inits["axis"] = np.array([axis], np.int64)
    return _model(nodes if relu_between else [n for n in nodes if n.name != "relu"], [1, 4, 64], inits, opset)


def _run(proto, x):
    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"]).run(
        None, {"x": x})[0]


def _rewritten(proto):
    """Run the pass on a copy; check it is valid and gives the same results; return (copy, changes, ops)."""
    x = np.random.default_rng(2).normal(0, 1, [d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim])
    x = x.astype(np.float32)
    after = onnx.ModelProto()
    after.CopyFrom(proto)
    changes = conv1d.run(after)
    after = onnx.shape_inference.infer_shapes(after)
    onnx.checker.check_model(after, full_check=True)
    before, now = _run(proto, x), _run(after, x)
    assert before.shape == now.shape
    np.testing.assert_allclose(now, before, rtol=1e-5, atol=1e-5)
    return after, changes, collections.Counter(n.op_type for n in after.graph.node)


@pytest.mark.parametrize("axis", [2, 3])
@pytest.mark.parametrize("opset", [11, 17])
def test_a_chain_of_unsqueezed_convs_becomes_1d(axis, opset):
    after, changes, ops = _rewritten(_chain(axis, opset))
    assert ops == {"Conv": 2, "Relu": 1}, ops  # the Relu moved before the Unsqueeze, which then went
    weights = {t.name: t.dims for t in after.graph.initializer}
    assert all(len(weights[n.input[1]]) == 3 for n in after.graph.node if n.op_type == "Conv")
    assert changes == ["2 2-D Conv(s) over an Unsqueezed 3-D tensor, 1 wide on the added axis, made 1-D (conv1, "
                       "conv2); onnx2tf lays out their input wrongly; 1 activation(s) moved past the Unsqueeze"]


def test_a_conv_read_by_more_than_its_squeeze_keeps_an_unsqueeze():
    proto = _chain(relu_between=False)
    proto.graph.output.append(helper.make_tensor_value_info("c1", TensorProto.FLOAT, None))
    _, _, ops = _rewritten(proto)
    assert ops == {"Conv": 2, "Unsqueeze": 1}  # c1 is an output too: the 1-D result is unsqueezed back for it


def test_real_2d_convs_are_left_alone():
    """A kernel of 3 over the added axis (with padding) is a 2-D convolution; so is any conv on an image."""
    rng = np.random.default_rng(3)
    nodes = [helper.make_node("Unsqueeze", ["x", "axis"], ["x4"]),
             helper.make_node("Conv", ["x4", "w"], ["c"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
             helper.make_node("Conv", ["c", "w2"], ["y"], kernel_shape=[1, 3])]
    proto = _model(nodes, [1, 4, 16], {"axis": np.array([2], np.int64),
                                       "w": rng.normal(0, 0.3, (4, 4, 3, 3)).astype(np.float32),
                                       "w2": rng.normal(0, 0.3, (2, 4, 1, 3)).astype(np.float32)})
    original = proto.SerializeToString()
    assert conv1d.run(proto) == []
    assert proto.SerializeToString() == original


def test_the_raw_audio_vad_through_the_stage(tmp_path):
    proto = onnx.load(str(raw_audio_vad(tmp_path / "vad.onnx")))
    for node in proto.graph.node:  # the sample rate fixed, as the build does for a constant config input
        if node.op_type == "Equal":
            node.input[0] = "sr_fixed"
    proto.graph.initializer.append(numpy_helper.from_array(np.array(16000, np.int64), "sr_fixed"))
    del proto.graph.input[2]
    rng = np.random.default_rng(4)
    samples = {"audio": rng.normal(0, 0.1, (4, 1, 1, VAD_WINDOW)).astype(np.float32),
               "state": rng.normal(0, 0.3, (4, 1, 1, VAD_HIDDEN)).astype(np.float32)}
    report = prepare(proto, samples)
    assert any(c.startswith("conv1d: 4 2-D Conv(s)") for c in report.changes), report.changes
    assert {len(t.dims) for t in proto.graph.initializer if t.name.endswith("_w_1d")} == {3}
    assert not {"Unsqueeze", "Squeeze"} & {n.op_type for n in proto.graph.node}
    assert min(report.cosine.values()) >= 0.9999


@pytest.mark.slow
def test_raw_audio_vad_builds_to_a_bundle_that_holds_the_bar(tmp_path):
    """Before the pass every conversion strategy failed on the filterbank ("Negative dimension size caused by
    subtracting 256 from 1") or on the Squeeze after it; now the GRU, unrolled, converts and int8 holds."""
    model = raw_audio_vad(tmp_path / "vad.onnx")
    np.savez(tmp_path / "calib.npz", **RAW_VAD(model, 48, 1))  # speech-like audio, states from the model
    run_cli("packager", "build", model, "--target", "rpi4", "--calibration", tmp_path / "calib.npz",
            "--no-wheels", "-o", tmp_path / "dist")
    manifest = json.loads((tmp_path / "dist" / "vad-rpi4" / "manifest.json").read_text())
    assert any(c.startswith("conv1d: 4 2-D Conv(s)") for c in manifest["preparation"]["changes"])
    assert manifest["conversion"]["strategy"] == "onnx2tf-unrolled"
    assert manifest["fixed_inputs"][0]["name"] == "sr"
    assert manifest["precision"]["meets_bar"] and min(manifest["float_conversion_cosine"].values()) >= 0.999
