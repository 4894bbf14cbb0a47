"""The dequantize pass: models quantized by onnxruntime's own quantizers come back as float ONNX."""

import collections

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from edge_runtime.errors import UserError
from packager.layout import cosine
from packager.prepare import dequantize, prepare
from tests.conftest import run_cli
from tests.fixtures import prequantized

QUANTIZED = {"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "MatMulInteger", "ConvInteger",
             "QLinearConv", "QLinearMatMul"}


def _tensor(name, rng, shape, spread=0.3, dtype=np.float32):
    return numpy_helper.from_array(rng.normal(0, spread, shape).astype(dtype), name)


def _model(nodes, inputs, outputs, inits):
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs],
                              [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in outputs], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def _convnet():
    """Conv+Relu, MaxPool, Conv+Clip(0,6), residual Add, x*sigmoid(x), LeakyRelu, Concat, pools, Gemm."""
    rng = np.random.default_rng(0)
    inits = [_tensor("w1", rng, (8, 3, 3, 3)), _tensor("b1", rng, 8, 0.1), _tensor("w2", rng, (8, 8, 3, 3), 0.2),
             _tensor("b2", rng, 8, 0.1), _tensor("w3", rng, (8, 16, 1, 1), 0.2), _tensor("b3", rng, 8, 0.1),
             _tensor("wf", rng, (4, 8)), _tensor("bf", rng, 4, 0.1),
             numpy_helper.from_array(np.array([1, 8], np.int64), "shape"),
             numpy_helper.from_array(np.array(0.0, np.float32), "zero"),
             numpy_helper.from_array(np.array(6.0, np.float32), "six")]
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("MaxPool", ["r1"], ["p1"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Conv", ["p1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1]),
        helper.make_node("Clip", ["c2", "zero", "six"], ["r2"]),
        helper.make_node("Add", ["r2", "p1"], ["a2"]),
        helper.make_node("Sigmoid", ["a2"], ["s2"]),
        helper.make_node("Mul", ["a2", "s2"], ["m2"]),
        helper.make_node("LeakyRelu", ["c2"], ["l2"], alpha=0.1),
        helper.make_node("Concat", ["m2", "l2"], ["cat"], axis=1),
        helper.make_node("AveragePool", ["cat"], ["ap"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Conv", ["ap", "w3", "b3"], ["c3"]),
        helper.make_node("GlobalAveragePool", ["c3"], ["g"]),
        helper.make_node("Reshape", ["g", "shape"], ["f"]),
        helper.make_node("Gemm", ["f", "wf", "bf"], ["y"], transB=1),
    ]
    return _model(nodes, [("x", [1, 3, 16, 16])], [("y", [1, 4])], inits)


def _mlp():
    rng = np.random.default_rng(1)
    inits = [_tensor("w1", rng, (16, 32)), _tensor("b1", rng, 32, 0.1), _tensor("w2", rng, (32, 32), 0.2),
             _tensor("b2", rng, 32, 0.1), _tensor("w3", rng, (10, 32), 0.2)]
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["m1"]), helper.make_node("Add", ["m1", "b1"], ["a1"]),
             helper.make_node("Relu", ["a1"], ["r1"]), helper.make_node("Gemm", ["r1", "w2", "b2"], ["g2"]),
             helper.make_node("Tanh", ["g2"], ["t2"]), helper.make_node("Gemm", ["t2", "w3"], ["y"], transB=1)]
    return _model(nodes, [("x", [2, 16])], [("y", [2, 10])], inits)


def _lstm(direction):
    rng = np.random.default_rng(2)
    count, hidden = (2 if direction == "bidirectional" else 1), 8
    inits = [_tensor("W", rng, (count, 4 * hidden, 4), 0.4), _tensor("R", rng, (count, 4 * hidden, hidden), 0.4),
             _tensor("B", rng, (count, 8 * hidden), 0.1), _tensor("wo", rng, (count * hidden, 3)),
             numpy_helper.from_array(np.array([5, 1, count * hidden], np.int64), "shape")]
    nodes = [helper.make_node("LSTM", ["x", "W", "R", "B", "", "h0", "c0"], ["Y", "", "Yc"], hidden_size=hidden,
                              direction=direction),
             helper.make_node("Transpose", ["Y"], ["Yt"], perm=[0, 2, 1, 3]),
             helper.make_node("Reshape", ["Yt", "shape"], ["Yr"]),
             helper.make_node("MatMul", ["Yr", "wo"], ["y"])]
    return _model(nodes, [("x", [5, 1, 4]), ("h0", [count, 1, hidden]), ("c0", [count, 1, hidden])],
                  [("y", [5, 1, 3]), ("Yc", [count, 1, hidden])], inits)


def _embedding():
    rng = np.random.default_rng(4)
    graph = helper.make_graph(
        [helper.make_node("Gather", ["table", "ids"], ["e"]), helper.make_node("MatMul", ["e", "w"], ["y"])], "g",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, [1, 7])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 7, 8])],
        [_tensor("table", rng, (50, 16), 1.0), _tensor("w", rng, (16, 8))])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def _feeds(proto, seed):
    rng = np.random.default_rng(seed)
    feeds = {}
    for i in proto.graph.input:
        shape = [d.dim_value for d in i.type.tensor_type.shape.dim]
        integer = i.type.tensor_type.elem_type == TensorProto.INT64
        feeds[i.name] = rng.integers(0, 50, shape) if integer else rng.uniform(-1, 1, shape).astype(np.float32)
    return feeds


def _run(proto, feeds):
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def _quantize(tmp_path, proto, how, **options):
    return prequantized.quantize(proto, how, tmp_path / how, [_feeds(proto, seed) for seed in range(8)], **options)


def _dequantize(float_model, quantized, float_bar, quant_bar=0.99):
    """Run the pass on a copy of ``quantized``; check it is float ONNX agreeing with both models."""
    result = onnx.ModelProto()
    result.CopyFrom(quantized)
    changes = dequantize.run(result)
    assert changes
    result = onnx.shape_inference.infer_shapes(result)
    onnx.checker.check_model(result, full_check=True)
    ops = collections.Counter(n.op_type for n in result.graph.node)
    assert not set(ops) & QUANTIZED, ops
    assert not any(n.domain == "com.microsoft" for n in result.graph.node)
    for seed in (100, 101, 102):
        feeds = _feeds(float_model, seed)
        got = _run(result, feeds)
        for ref, quant, new in zip(_run(float_model, feeds), _run(quantized, feeds), got):
            assert cosine(ref, new) >= float_bar
            assert cosine(quant, new) >= quant_bar
    return result, ops, changes


@pytest.mark.parametrize("per_channel", [False, True])
@pytest.mark.parametrize("weight_type", ["QInt8", "QUInt8"])
@pytest.mark.parametrize("build", [_convnet, _mlp, _embedding])
def test_dynamic_quantization_comes_back_with_rounded_weights_only(tmp_path, build, per_channel, weight_type):
    from onnxruntime.quantization import QuantType

    proto = build()
    quantized = _quantize(tmp_path, proto, "dynamic", per_channel=per_channel, weight_type=QuantType[weight_type])
    assert {"MatMulInteger", "ConvInteger"} & {n.op_type for n in quantized.graph.node}
    _, ops, _ = _dequantize(proto, quantized, float_bar=0.999)
    assert ops["Conv"] == 3 if build is _convnet else ops["MatMul"] >= 1


@pytest.mark.parametrize("per_channel", [False, True])
@pytest.mark.parametrize("direction", ["forward", "bidirectional"])
def test_dynamic_quantize_lstm_becomes_lstm(tmp_path, direction, per_channel):
    proto = _lstm(direction)
    quantized = _quantize(tmp_path, proto, "dynamic", per_channel=per_channel)
    assert "DynamicQuantizeLSTM" in {n.op_type for n in quantized.graph.node}
    result, ops, changes = _dequantize(proto, quantized, float_bar=0.999)
    assert ops["LSTM"] == 1 and "DynamicQuantizeLSTM -> LSTM x1" in changes
    lstm = next(n for n in result.graph.node if n.op_type == "LSTM")
    assert {a.name: helper.get_attribute_value(a) for a in lstm.attribute}["direction"] == direction.encode()


@pytest.mark.parametrize("per_channel", [False, True])
@pytest.mark.parametrize("how", ["qdq", "qoperator"])
@pytest.mark.parametrize("build", [_convnet, _mlp, _embedding])
def test_static_quantization_comes_back(tmp_path, build, how, per_channel):
    proto = build()
    quantized = _quantize(tmp_path, proto, how, per_channel=per_channel)
    ops = {n.op_type for n in quantized.graph.node}
    assert any(op.startswith(("QLinear", "QGemm")) for op in ops) if how == "qoperator" else "DequantizeLinear" in ops
    # QOperator drops the convnet's Clip(0,6) altogether (its input is shared), so only the quantized model's
    # own results are the reference there; elsewhere activation rounding is all that separates them.
    float_bar = 0.9 if (how, build) == ("qoperator", _convnet) else 0.999
    _, ops, _ = _dequantize(proto, quantized, float_bar=float_bar)
    if build is _convnet:
        assert ops["Relu"] >= 1, "the Relu onnxruntime folded into the quantized range must come back"


def test_onnxruntime_fused_forms(tmp_path):
    """Models saved after onnxruntime's graph optimizer: DynamicQuantizeMatMul, QGemm, QLinearConv."""
    proto = _mlp()
    for how in ("dynamic", "qoperator"):
        quantized = _quantize(tmp_path, proto, how)
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
        ort.InferenceSession(quantized.SerializeToString(), options, providers=["CPUExecutionProvider"])
        optimized = onnx.load(tmp_path / "optimized.onnx")
        assert any(n.domain == "com.microsoft" for n in optimized.graph.node)
        _dequantize(proto, optimized, float_bar=0.999)


def test_removed_relu6_comes_back_as_clip(tmp_path):
    rng = np.random.default_rng(5)
    inits = [_tensor("w1", rng, (8, 3, 3, 3), 1.5), _tensor("w2", rng, (4, 8, 1, 1)),
             numpy_helper.from_array(np.array(0.0, np.float32), "zero"),
             numpy_helper.from_array(np.array(6.0, np.float32), "six")]
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c1"]), helper.make_node("Clip", ["c1", "zero", "six"], ["r1"]),
             helper.make_node("Conv", ["r1", "w2"], ["y"])]
    proto = _model(nodes, [("x", [1, 3, 8, 8])], [("y", [1, 4, 6, 6])], inits)
    quantized = _quantize(tmp_path, proto, "qdq")
    assert "Clip" not in {n.op_type for n in quantized.graph.node}
    _, ops, changes = _dequantize(proto, quantized, float_bar=0.999)
    assert ops["Clip"] == 1 and any("Relu/Clip restored" in c for c in changes)


def _uint8_model():
    """uint8 in, uint8 out: DQ -> Conv (DQ weights) -> Q, all by hand."""
    rng = np.random.default_rng(6)
    inits = [numpy_helper.from_array(np.array(0.02, np.float32), "xs"), numpy_helper.from_array(np.uint8(128), "xz"),
             numpy_helper.from_array(rng.integers(-127, 128, (4, 3, 3, 3)).astype(np.int8), "wq"),
             numpy_helper.from_array(rng.uniform(0.001, 0.01, 4).astype(np.float32), "ws"),
             numpy_helper.from_array(np.zeros(4, np.int8), "wz"),
             numpy_helper.from_array(np.array(0.05, np.float32), "ys"), numpy_helper.from_array(np.uint8(100), "yz")]
    nodes = [helper.make_node("DequantizeLinear", ["x", "xs", "xz"], ["xf"]),
             helper.make_node("DequantizeLinear", ["wq", "ws", "wz"], ["wf"], axis=0),
             helper.make_node("Conv", ["xf", "wf"], ["yf"]),
             helper.make_node("QuantizeLinear", ["yf", "ys", "yz"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.UINT8, [1, 3, 6, 6])],
                              [helper.make_tensor_value_info("y", TensorProto.UINT8, [1, 4, 4, 4])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def test_integer_inputs_and_outputs_keep_their_q_dq():
    proto = _uint8_model()
    feeds = {"x": np.random.default_rng(7).integers(0, 256, (1, 3, 6, 6)).astype(np.uint8)}
    before = _run(proto, feeds)[0]
    changes = dequantize.run(proto)
    onnx.checker.check_model(proto, full_check=True)
    ops = collections.Counter(n.op_type for n in proto.graph.node)
    assert ops == {"DequantizeLinear": 1, "Conv": 1, "QuantizeLinear": 1}
    assert "kept at the model's integer inputs/outputs: DequantizeLinear x1, QuantizeLinear x1" in changes
    assert proto.graph.input[0].type.tensor_type.elem_type == TensorProto.UINT8
    # onnxruntime runs the original as an integer QLinearConv: its requantization may round one step apart
    assert np.abs(_run(proto, feeds)[0].astype(int) - before).max() <= 1


def test_float_model_is_left_alone():
    proto = _mlp()
    original = proto.SerializeToString()
    assert dequantize.run(proto) == []
    assert proto.SerializeToString() == original


def test_quantized_op_it_cannot_undo_is_a_user_error():
    proto = _mlp()
    proto.graph.node.append(helper.make_node("QAttention", ["y", "w1"], ["att"], domain="com.microsoft"))
    proto.graph.output.append(helper.make_tensor_value_info("att", TensorProto.FLOAT, None))
    with pytest.raises(UserError, match=r"cannot be turned back into float: QAttention \(att\) left after"):
        dequantize.run(proto)


@pytest.mark.parametrize("op,attrs,shape", [
    ("QLinearGlobalAveragePool", {"channels_last": 1}, [1, 1, 1, 3]),
    ("QLinearAveragePool", {"channels_last": 1, "kernel_shape": [2, 2], "strides": [2, 2]}, [1, 2, 2, 3]),
    ("QLinearSoftmax", {"axis": -1, "opset": 13}, [1, 4, 4, 3]),
    ("QLinearLeakyRelu", {"alpha": 0.2}, [1, 4, 4, 3]),
    ("Pad", {"mode": "constant"}, [1, 4, 6, 5]),
])
def test_single_quantized_ops_match_onnxruntime(op, attrs, shape):
    """Q -> op -> DQ by hand, incl. NHWC pools and a Pad working on uint8 (pad value = a quantized integer)."""
    inits = [numpy_helper.from_array(np.array(0.02, np.float32), "xs"), numpy_helper.from_array(np.uint8(128), "xz"),
             numpy_helper.from_array(np.array(0.01, np.float32), "ys"), numpy_helper.from_array(np.uint8(120), "yz"),
             numpy_helper.from_array(np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64), "pads"),
             numpy_helper.from_array(np.uint8(200), "value")]
    if op == "Pad":
        node, out = helper.make_node("Pad", ["xq", "pads", "value"], ["yq"], **attrs), ("xs", "xz")
    else:
        node, out = helper.make_node(op, ["xq", "xs", "xz", "ys", "yz"], ["yq"], domain="com.microsoft", **attrs), (
            "ys", "yz")
    nodes = [helper.make_node("QuantizeLinear", ["x", "xs", "xz"], ["xq"]), node,
             helper.make_node("DequantizeLinear", ["yq", *out], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 4, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)], inits)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)],
                              ir_version=8)
    proto = onnx.shape_inference.infer_shapes(proto)  # as the stage runner gives it
    feeds = {"x": np.random.default_rng(8).uniform(-1, 1, (1, 4, 4, 3)).astype(np.float32)}
    before = _run(proto, feeds)[0]
    assert dequantize.run(proto)
    onnx.checker.check_model(proto, full_check=True)
    assert not {n.op_type for n in proto.graph.node} & QUANTIZED
    after = _run(proto, feeds)[0]
    assert after.shape == before.shape and np.abs(after - before).max() <= 0.0201  # one output step, at most
    if op == "Pad":
        assert np.isclose(after[0, 0, 0, 0], (200 - 128) * 0.02)


# --- weights and scales in Constant nodes, a BiLSTM tagger, quantized ops inside If bodies ------------------


def _scalars_as_attributes(proto):
    """Scalar float Constant nodes written with ``value_float``, as some graph tools leave scales."""
    for node in proto.graph.node:
        if node.op_type == "Constant" and node.attribute[0].name == "value":
            value = numpy_helper.to_array(node.attribute[0].t)
            if value.shape == () and value.dtype == np.float32:
                node.ClearField("attribute")
                node.attribute.append(helper.make_attribute("value_float", float(value)))
    return proto


@pytest.mark.parametrize("how,build", [("dynamic", _convnet), ("dynamic", _mlp), ("dynamic", _embedding),
                                       ("dynamic", lambda: _lstm("bidirectional")), ("qdq", _convnet),
                                       ("qdq", _embedding), ("qoperator", _convnet), ("qoperator", _mlp)])
def test_weights_and_scales_in_constant_nodes(tmp_path, how, build):
    """Input-less Constant nodes anywhere in the graph (the pass once read their input[0] and was skipped)."""
    proto = build()
    quantized = prequantized.with_constant_nodes(_quantize(tmp_path, proto, how))
    if how == "qdq":
        _scalars_as_attributes(quantized)
    assert not quantized.graph.initializer and any(n.op_type == "Constant" for n in quantized.graph.node)
    float_bar = 0.9 if (how, build) == ("qoperator", _convnet) else 0.999
    result, ops, _ = _dequantize(proto, quantized, float_bar=float_bar)
    assert not any(n.op_type in QDQ_KEPT for n in result.graph.node)


QDQ_KEPT = ("QuantizeLinear", "DequantizeLinear")


def test_bilstm_char_tagger_from_quantize_dynamic(tmp_path):
    """DynamicQuantizeLSTM, MatMulInteger and a uint8 embedding behind Constant nodes, through the stage:
    the prepared graph is checked against the quantized original in onnxruntime."""
    path = prequantized.char_tagger_dynamic(tmp_path / "tagger.onnx")
    proto = onnx.shape_inference.infer_shapes(onnx.load(path))
    assert {"DynamicQuantizeLSTM", "MatMulInteger"} <= {n.op_type for n in proto.graph.node}
    samples = prequantized.tagger_samples(12)
    before = [_run(proto, {"chars": samples["chars"][i:i + 1]})[0] for i in range(12)]
    report = prepare(proto, {"chars": samples["chars"][:, None]})
    assert "dequantize: DynamicQuantizeLSTM -> LSTM x1" in report.changes
    assert "dequantize: Gather on 8-bit tensors -> float x1" in report.changes
    assert not any(c.startswith("dequantize: kept") for c in report.changes)
    assert not any(n.domain == "com.microsoft" or n.op_type in QUANTIZED for n in proto.graph.node)
    after = [_run(proto, {"chars": samples["chars"][i:i + 1]})[0] for i in range(12)]
    assert report.cosine["tags"] >= 0.999
    agree = np.mean([(a.argmax(-1) == b.argmax(-1)).mean() for a, b in zip(before, after)])
    assert agree >= 0.99  # per-position classes: only the activations' own rounding is gone


def _rate_switch_conv():
    """x [1, 3, 8, 8], mode (int64 scalar) -> If(mode == 1) picks one of two Conv+Relu branches -> Gemm."""
    rng = np.random.default_rng(9)

    def branch(name):
        nodes = [helper.make_node("Conv", ["x", f"{name}_w"], [f"{name}_c"], pads=[1, 1, 1, 1]),
                 helper.make_node("Relu", [f"{name}_c"], [f"{name}_y"])]
        return helper.make_graph(nodes, name, [], [helper.make_tensor_value_info(f"{name}_y", TensorProto.FLOAT,
                                                                               [1, 4, 8, 8])],
                                 [_tensor(f"{name}_w", rng, (4, 3, 3, 3))])

    nodes = [helper.make_node("Equal", ["mode", "one"], ["is_one"]),
             helper.make_node("If", ["is_one"], ["feat"], then_branch=branch("a"), else_branch=branch("b")),
             helper.make_node("Reshape", ["feat", "flat"], ["f"]), helper.make_node("Gemm", ["f", "wo"], ["y"])]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8]),
                     helper.make_tensor_value_info("mode", TensorProto.INT64, [])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 5])],
        [numpy_helper.from_array(np.array(1, np.int64), "one"), numpy_helper.from_array(np.array([1, 256]), "flat"),
         _tensor("wo", rng, (256, 5), 0.1)])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def test_conv_integer_inside_the_branch_taken(tmp_path):
    """quantize_dynamic with EnableSubgraph puts ConvInteger chains inside If bodies: with the condition
    fixed (a configuration input frozen), the branch joins the main graph first and dequantizes there."""
    proto = _rate_switch_conv()
    quantized = _quantize(tmp_path, proto, "dynamic", extra_options={"EnableSubgraph": True})
    branch = next(a.g for n in quantized.graph.node if n.op_type == "If" for a in n.attribute)
    assert "ConvInteger" in {n.op_type for n in branch.node}
    live = onnx.ModelProto()
    live.CopyFrom(quantized)
    with pytest.raises(UserError, match=r"DynamicQuantizeLinear \(x_QuantizeLinear\) left after dequantizing; "
                                        r"ConvInteger \(.+\) inside If/Loop bodies whose condition is not a constant"):
        dequantize.run(live)  # mode still an input: no branch to take (the x it quantizes is outside them)
    frozen = onnx.ModelProto()
    frozen.CopyFrom(quantized)
    del frozen.graph.input[1]
    frozen.graph.initializer.append(numpy_helper.from_array(np.array(1, np.int64), "mode"))
    x = np.random.default_rng(3).uniform(-1, 1, (6, 1, 3, 8, 8)).astype(np.float32)
    report = prepare(frozen, {"x": x})
    assert report.changes[:2] == ["branches: 1 If node(s) with a constant condition replaced by the branch taken "
                                  "(then)", "dequantize: ConvInteger -> Conv x1"]
    assert not {n.op_type for n in frozen.graph.node} & QUANTIZED
    for sample in x:
        reference = _run(proto, {"x": sample, "mode": np.array(1, np.int64)})[0]
        assert cosine(reference, _run(frozen, {"x": sample})[0]) >= 0.999


@pytest.mark.slow
def test_prequantized_tagger_builds_to_a_bundle_that_holds_the_bar(tmp_path):
    """The BiLSTM tagger as quantize_dynamic left it (Constant nodes, DynamicQuantizeLSTM): built end to end,
    our own calibration quantizes the dequantized graph, and the bundle holds the bar."""
    import json

    model = prequantized.char_tagger_dynamic(tmp_path / "tagger.onnx")
    np.savez(tmp_path / "calib.npz", **prequantized.tagger_samples(48))
    run_cli("packager", "build", model, "--target", "rpi4", "--calibration", tmp_path / "calib.npz",
            "--no-wheels", "-o", tmp_path / "dist")
    manifest = json.loads((tmp_path / "dist" / "tagger-rpi4" / "manifest.json").read_text())
    changes = manifest["preparation"]["changes"]
    assert "dequantize: DynamicQuantizeLSTM -> LSTM x1" in changes and not any("skipped" in c for c in changes)
    assert manifest["precision"]["meets_bar"] and min(manifest["float_conversion_cosine"].values()) >= 0.999
    assert manifest["fidelity"]["outputs"]["tags"]["kind"] == "tags"
