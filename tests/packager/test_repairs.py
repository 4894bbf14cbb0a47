"""Ladder step 2 repairs: exact in float, and only where the pattern is really there."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from packager.repairs import equalize, fuse_activations


def _model(nodes, inits, in_shape, out_shape, opset=14, outputs=("y",)):
    """x -> nodes -> outputs (the others shaped like y), with those of ``inits`` the nodes read."""
    read = {name for n in nodes for name in n.input}
    nodes = [n for n in nodes if n.op_type != "Constant" or n.output[0] in read]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, in_shape)],
        [helper.make_tensor_value_info(o, TensorProto.FLOAT, out_shape) for o in outputs],
        [numpy_helper.from_array(np.asarray(v, np.float32), k) for k, v in inits.items() if k in read])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    proto.ir_version = 8
    return onnx.shape_inference.infer_shapes(proto)


def _run(proto, x):
    return ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})


def _same_outputs(before, after):
    for old, new in zip(before, after):
        np.testing.assert_allclose(new, old, rtol=1e-5, atol=1e-5 * float(np.abs(old).max()))


def _ops(proto):
    return [n.op_type for n in proto.graph.node]


# ---- fuse_activations --------------------------------------------------------------------------

X = np.linspace(-8, 8, 1601, dtype=np.float32).reshape(1, 1601)  # both clip ends and between
BOUNDS = {"three": 3.0, "zero": 0.0, "six": 6.0, "sixth": 1 / 6}


def _node(op, inputs, output, **attrs):
    return helper.make_node(op, inputs, [output], name=output, **attrs)


HARD_SWISH = {  # the spellings exporters write for x * Clip(x + 3, 0, 6) / 6
    "mul then div": [_node("Add", ["x", "three"], "a"), _node("Clip", ["a", "zero", "six"], "c"),
                     _node("Mul", ["x", "c"], "m"), _node("Div", ["m", "six"], "y")],
    "div then mul": [_node("Add", ["three", "x"], "a"), _node("Clip", ["a", "zero", "six"], "c"),
                     _node("Div", ["c", "six"], "d"), _node("Mul", ["d", "x"], "y")],
    "times a sixth": [_node("Add", ["x", "three"], "a"), _node("Clip", ["a", "zero", "six"], "c"),
                      _node("Mul", ["c", "x"], "m"), _node("Mul", ["sixth", "m"], "y")],
    "min/max pair": [_node("Add", ["x", "three"], "a"), _node("Max", ["a", "zero"], "lo"),
                     _node("Min", ["lo", "six"], "c"), _node("Mul", ["x", "c"], "m"), _node("Div", ["m", "six"], "y")],
    "HardSigmoid": [_node("HardSigmoid", ["x"], "h", alpha=1 / 6, beta=0.5), _node("Mul", ["x", "h"], "y")],
}


@pytest.mark.parametrize("spelling", HARD_SWISH)
def test_each_hard_swish_spelling_becomes_one_op(spelling):
    proto = _model(HARD_SWISH[spelling], BOUNDS, [1, 1601], [1, 1601])
    before = _run(proto, X)
    assert fuse_activations(proto) == ["hard_swish: 1 spelled-out hard-swish fused into HardSwish"]
    onnx.checker.check_model(proto, full_check=True)
    assert _ops(proto) == ["HardSwish"]
    assert not proto.graph.initializer  # the 3, 0, 6 went with the pattern
    _same_outputs(before, _run(proto, X))
    assert fuse_activations(proto) == []


def test_old_opset_keeps_the_fused_spelling_and_respells_the_others():
    """Real exports: bounds in Constant nodes, opset 12 (no HardSwish op). The spelling TFLite fuses,
    (x * Clip(x+3,0,6)) / 6, is left as it is; another spelling is rewritten into it, exactly."""
    constants = [helper.make_node("Constant", [], [k], value=numpy_helper.from_array(np.array(v, np.float32)))
                 for k, v in BOUNDS.items()]
    tail = [_node("Relu", ["hs"], "y")]
    fused = [_node("Add", ["x", "three"], "a"), _node("Clip", ["a", "zero", "six"], "c"),
             _node("Mul", ["x", "c"], "m"), _node("Div", ["m", "six"], "hs")]
    proto = _model(constants + fused + tail, {}, [1, 1601], [1, 1601], opset=12)
    assert fuse_activations(proto) == []
    other = [_node("Add", ["x", "three"], "a"), _node("Clip", ["a", "zero", "six"], "c"),
             _node("Div", ["c", "six"], "d"), _node("Mul", ["x", "d"], "hs")]
    proto = _model(constants + other + tail, {}, [1, 1601], [1, 1601], opset=12)
    before = _run(proto, X)
    assert fuse_activations(proto) == ["hard_swish: 1 hard-swish respelled (x * Clip(x+3,0,6)) / 6, which TFLite "
                                       "fuses into HARD_SWISH (opset < 14 has no HardSwish op)"]
    onnx.checker.check_model(proto, full_check=True)
    assert [op for op in _ops(proto) if op != "Constant"] == ["Add", "Clip", "Mul", "Div", "Relu"]
    assert proto.opset_import[0].version == 12
    _same_outputs(before, _run(proto, X))
    assert fuse_activations(proto) == []


def test_hard_sigmoid_and_hard_swish_in_one_graph():
    nodes = [*HARD_SWISH["mul then div"][:3], _node("Div", ["m", "six"], "hs"),
             _node("Add", ["hs", "three"], "a2"), _node("Clip", ["a2", "zero", "six"], "c2"),
             _node("Div", ["c2", "six"], "y")]
    proto = _model(nodes, BOUNDS, [1, 1601], [1, 1601])
    before = _run(proto, X)
    assert fuse_activations(proto) == [
        "hard_swish: 1 spelled-out hard-swish fused into HardSwish",
        "hard_sigmoid: 1 spelled-out hard-sigmoid Clip(x+3,0,6)/6 fused into HardSigmoid"]
    assert _ops(proto) == ["HardSwish", "HardSigmoid"]
    sigmoid = proto.graph.node[1]
    assert {a.name: round(a.f, 7) for a in sigmoid.attribute} == {"alpha": round(1 / 6, 7), "beta": 0.5}
    _same_outputs(before, _run(proto, X))


LEFT_ALONE = {  # (nodes, outputs): look like hard-swish but are not, or cannot be fused
    "clip to 5": ([_node("Add", ["x", "three"], "a"), _node("Clip", ["a", "zero", "five"], "c"),
                   _node("Mul", ["x", "c"], "m"), _node("Div", ["m", "six"], "y")], ("y",)),
    "add 2.5": ([_node("Add", ["x", "two_and_a_half"], "a"), _node("Clip", ["a", "zero", "six"], "c"),
                 _node("Mul", ["x", "c"], "m"), _node("Div", ["m", "six"], "y")], ("y",)),
    "gate on another tensor": ([_node("Relu", ["x"], "r"), _node("Add", ["x", "three"], "a"),
                                _node("Clip", ["a", "zero", "six"], "c"), _node("Mul", ["r", "c"], "m"),
                                _node("Div", ["m", "six"], "y")], ("y",)),
    "hard-sigmoid of slope 0.2": ([_node("HardSigmoid", ["x"], "h", alpha=0.2, beta=0.5),
                                   _node("Mul", ["x", "h"], "y")], ("y",)),
    "clip read twice": ([_node("Add", ["x", "three"], "a"), _node("Clip", ["a", "zero", "six"], "c"),
                         _node("Div", ["c", "six"], "d"), _node("Mul", ["d", "x"], "y"),
                         _node("Relu", ["c"], "r")], ("y", "r")),
    "intermediate is an output": ([_node("Add", ["x", "three"], "a"), _node("Clip", ["a", "zero", "six"], "c"),
                                   _node("Mul", ["x", "c"], "m"), _node("Div", ["m", "six"], "y")], ("y", "m")),
}


@pytest.mark.parametrize("case", LEFT_ALONE)
def test_lookalikes_are_left_alone(case):
    nodes, outputs = LEFT_ALONE[case]
    proto = _model(nodes, {**BOUNDS, "five": 5.0, "two_and_a_half": 2.5}, [1, 1601], [1, 1601], outputs=outputs)
    before = proto.SerializeToString()
    assert fuse_activations(proto) == []
    assert proto.SerializeToString() == before


# ---- equalize ----------------------------------------------------------------------------------

def _conv(name, inputs, output, **attrs):
    return helper.make_node("Conv", inputs, [output], name=name, **attrs)


def _imbalanced(rng, activation="Relu", spread=100.0):
    """Depthwise 3x3 conv (8 channels) -> activation -> pointwise conv, whose channel i is scaled by c_i
    (c spanning ``spread``) in the first conv and by 1 / c_i in the second: what a folded BatchNorm leaves."""
    c = rng.permutation(np.logspace(0, np.log10(spread), 8))
    w1 = rng.normal(size=(8, 1, 3, 3)) * c[:, None, None, None]
    b1 = rng.normal(size=8) * c
    w2 = rng.normal(size=(6, 8, 1, 1)) / c[None, :, None, None]
    act = [helper.make_node("LeakyRelu", ["h"], ["r"], name="act", alpha=0.1)] if activation == "LeakyRelu" else (
        [helper.make_node("Clip", ["h", "zero", "six"], ["r"], name="act")] if activation == "Relu6" else
        [helper.make_node(activation, ["h"], ["r"], name="act")])
    nodes = [_conv("dw", ["x", "w1", "b1"], "h", group=8, pads=[1, 1, 1, 1]), *act,
             _conv("pw", ["r", "w2", "b2"], "y")]
    inits = {"w1": w1, "b1": b1, "w2": w2, "b2": rng.normal(size=6), "zero": 0.0, "six": 6.0}
    return _model(nodes, inits, [1, 8, 10, 10], [1, 6, 10, 10])


def _channel_spread(proto, name):
    w = numpy_helper.to_array(next(t for t in proto.graph.initializer if t.name == name))
    r = np.abs(w).reshape(w.shape[0], -1).max(axis=1)
    return r.max() / r.min()


@pytest.mark.parametrize("activation", ["Relu", "LeakyRelu"])
def test_equalization_evens_out_channel_ranges_and_keeps_the_outputs(activation):
    rng = np.random.default_rng(0)
    proto = _imbalanced(rng, activation)
    x = rng.normal(size=(1, 8, 10, 10)).astype(np.float32)
    before, spread = _run(proto, x), _channel_spread(proto, "w1")
    assert spread > 50
    [line] = equalize(proto)
    assert line.startswith(f"equalize: 1 Conv->{activation}->Conv pair(s) equalized")
    onnx.checker.check_model(proto, full_check=True)
    assert _ops(proto) == ["Conv", activation, "Conv"]
    assert _channel_spread(proto, "w1") <= spread / 10
    _same_outputs(before, _run(proto, x))
    assert equalize(proto) == []  # already equal: nothing to do


def test_a_chain_is_equalized_pair_by_pair():
    """Conv -> Relu -> depthwise Conv -> Relu -> Conv: the middle conv is the second of one pair and the
    first of the next (the sweeps repeat until both settle)."""
    rng = np.random.default_rng(1)
    c = np.logspace(0, 2, 8)
    inits = {"w1": rng.normal(size=(8, 4, 1, 1)) * c[:, None, None, None], "w2": rng.normal(size=(8, 1, 3, 3)),
             "w3": rng.normal(size=(5, 8, 1, 1)) / c[None, :, None, None], "b2": rng.normal(size=8)}
    nodes = [_conv("c1", ["x", "w1"], "h1"), helper.make_node("Relu", ["h1"], ["r1"]),
             _conv("c2", ["r1", "w2", "b2"], "h2", group=8, pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["h2"], ["r2"]), _conv("c3", ["r2", "w3"], "y")]
    proto = _model(nodes, inits, [1, 4, 9, 9], [1, 5, 9, 9])
    x = rng.normal(size=(1, 4, 9, 9)).astype(np.float32)
    before = _run(proto, x)
    [line] = equalize(proto)
    assert line.startswith("equalize: 2 Conv->Relu->Conv pair(s) equalized")
    _same_outputs(before, _run(proto, x))
    assert _channel_spread(proto, "w1") < _channel_spread(_model(nodes, inits, [1, 4, 9, 9], [1, 5, 9, 9]), "w1") / 10


def _with(proto, extra_nodes, outputs=(), channels=8):
    """``proto`` with more nodes and graph outputs (of ``channels`` channels)."""
    proto.graph.node.extend(extra_nodes)
    proto.graph.output.extend(helper.make_tensor_value_info(o, TensorProto.FLOAT, [1, channels, 10, 10])
                              for o in outputs)
    return proto


EQUALIZE_LEFT_ALONE = {
    # Relu6 is not homogeneous: min(relu(x / s), 6) != min(relu(x), 6) / s
    "relu6 between": lambda rng: _imbalanced(rng, "Relu6"),
    "first weights shared": lambda rng: _with(_imbalanced(rng), [_conv("again", ["x", "w1"], "z", group=8)], ["z"]),
    "second weights shared": lambda rng: _with(_imbalanced(rng), [_conv("again", ["x", "w2"], "z")], ["z"], 6),
    "activation read twice": lambda rng: _with(_imbalanced(rng), [helper.make_node("Neg", ["r"], ["z"])], ["z"]),
    "first conv read twice": lambda rng: _with(_imbalanced(rng), [], ["h"]),
}


@pytest.mark.parametrize("case", EQUALIZE_LEFT_ALONE)
def test_equalization_leaves_pairs_it_cannot_rescale_alone(case):
    proto = EQUALIZE_LEFT_ALONE[case](np.random.default_rng(2))
    onnx.checker.check_model(proto)
    before = proto.SerializeToString()
    assert equalize(proto) == []
    assert proto.SerializeToString() == before


def test_a_batchnorm_between_the_convs_is_left_alone():
    rng = np.random.default_rng(3)
    inits = {"w1": rng.normal(size=(8, 8, 1, 1)) * np.logspace(0, 2, 8)[:, None, None, None],
             "w2": rng.normal(size=(4, 8, 1, 1)), "g": np.ones(8), "b": np.zeros(8), "m": np.zeros(8), "v": np.ones(8)}
    nodes = [_conv("c1", ["x", "w1"], "h"), helper.make_node("BatchNormalization", ["h", "g", "b", "m", "v"], ["n"]),
             helper.make_node("Relu", ["n"], ["r"]), _conv("c2", ["r", "w2"], "y")]
    proto = _model(nodes, inits, [1, 8, 4, 4], [1, 4, 4, 4])
    before = proto.SerializeToString()
    assert equalize(proto) == []
    assert proto.SerializeToString() == before
