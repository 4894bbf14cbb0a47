"""The recurrent pass: LSTM/GRU/RNN unrolled into primitive ops, same results in onnxruntime."""


import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from edge_runtime.errors import UserError
from packager.convert import recurrent
from tests.fixtures.recurrent_models import BATCH, GATES, HIDDEN, SEQ, SIZE
from tests.fixtures.recurrent_models import one_layer as _model

def _run(proto, feeds):
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return session.run(None, {i.name: feeds[i.name] for i in session.get_inputs()})


def _time_major(proto):
    """The same layer with layout 0 between Transposes: onnxruntime does not run layout 1."""
    reference = onnx.ModelProto()
    reference.CopyFrom(proto)
    graph, node = reference.graph, reference.graph.node[0]
    node.attribute.remove(next(a for a in node.attribute if a.name == "layout"))
    moves = []
    for k, name in enumerate(node.input):
        if name in ("X", "H0", "C0"):
            node.input[k] = f"{name}_tm"
            moves.append(helper.make_node("Transpose", [name], [f"{name}_tm"], perm=[1, 0, 2]))
    for k, name in enumerate(node.output):
        if name:
            node.output[k] = f"{name}_tm"
            perm = [2, 0, 1, 3] if name == "Y" else [1, 0, 2]
            moves.append(helper.make_node("Transpose", [f"{name}_tm"], [name], perm=perm))
    graph.node.extend(moves)
    return reference


def _check(proto):
    """Lower ``proto`` and return the worst max-abs difference against the original."""
    rng = np.random.default_rng(1)
    feeds = {i.name: rng.uniform(-1, 1, [d.dim_value for d in i.type.tensor_type.shape.dim]).astype(np.float32)
             for i in proto.graph.input if i.type.tensor_type.elem_type == TensorProto.FLOAT}
    layout = any(a.name == "layout" and a.i for a in proto.graph.node[0].attribute)
    before = _run(_time_major(proto) if layout else proto, feeds)
    original = proto.SerializeToString()
    changes = recurrent.run(proto)
    onnx.checker.check_model(proto, full_check=True)
    assert changes and "unrolled" in changes[0]
    assert not {n.op_type for n in proto.graph.node} & set(GATES)
    assert {t.name for t in proto.graph.initializer}.isdisjoint({"W", "R", "B", "P"}), "original weights left behind"
    assert proto.SerializeToString() != original
    after = _run(proto, feeds)
    assert [a.shape for a in after] == [b.shape for b in before]
    return max(float(np.abs(a - b).max()) for a, b in zip(after, before))


@pytest.mark.parametrize("direction", ["forward", "reverse", "bidirectional"])
@pytest.mark.parametrize("states,bias,peepholes", [("input", True, False), (None, False, False),
                                                   ("const", True, True), ("zero", True, True), (None, True, True)])
def test_lstm_matches(direction, states, bias, peepholes):
    assert _check(_model("LSTM", direction, bias=bias, peepholes=peepholes, states=states)) < 1e-4


@pytest.mark.parametrize("kind", ["LSTM", "GRU", "RNN"])
@pytest.mark.parametrize("states", ["input", "const", None])
def test_batch_major_layout_matches(kind, states):
    assert _check(_model(kind, "bidirectional", layout=1, states=states)) < 1e-4


@pytest.mark.parametrize("direction", ["forward", "reverse", "bidirectional"])
@pytest.mark.parametrize("lbr", [0, 1])
@pytest.mark.parametrize("states", ["input", None])
def test_gru_matches(direction, lbr, states):
    assert _check(_model("GRU", direction, states=states, linear_before_reset=lbr)) < 1e-4


@pytest.mark.parametrize("direction", ["forward", "bidirectional"])
@pytest.mark.parametrize("states", ["input", None])
def test_rnn_matches(direction, states):
    assert _check(_model("RNN", direction, states=states)) < 1e-4


def test_plain_activations_other_than_the_default_are_lowered():
    proto = _model("RNN", "bidirectional", activations=["Relu", "Sigmoid"])
    assert _check(proto) < 1e-4
    assert {"Relu", "Sigmoid"} <= {n.op_type for n in proto.graph.node}


@pytest.mark.parametrize("outputs", [(0,), (1,), (2,), (1, 2)])
def test_only_wanted_outputs_are_built(outputs):
    proto = _model("LSTM", "bidirectional", outputs=outputs)
    assert _check(proto) < 1e-4
    produced = {o for n in proto.graph.node for o in n.output}
    assert {"Y", "Y_h", "Y_c"} & produced == {["Y", "Y_h", "Y_c"][k] for k in outputs}


@pytest.mark.parametrize("opset", [7, 9, 13, 18, 21])
@pytest.mark.parametrize("kind", ["LSTM", "GRU"])
def test_opsets_and_full_length_sequence_lens(kind, opset):
    assert _check(_model(kind, "bidirectional", opset=opset, seq_lens=[SEQ] * BATCH)) < 1e-4


def test_generated_names_are_unique_and_derived_from_the_node():
    proto = _model("GRU", "bidirectional")
    recurrent.run(proto)
    names = [n.name for n in proto.graph.node]
    values = [o for n in proto.graph.node for o in n.output] + [t.name for t in proto.graph.initializer]
    assert len(set(names)) == len(names) and len(set(values)) == len(values)
    assert all(n.startswith("rec/") for n in names)


@pytest.mark.parametrize("attrs,word", [({"clip": 3.0}, "clip"), ({"input_forget": 1}, "input_forget"),
                                        ({"activations": ["HardSigmoid", "Tanh", "Tanh"]}, "HardSigmoid")])
def test_unsupported_attributes_are_user_errors(attrs, word):
    proto = _model("LSTM", **attrs)
    with pytest.raises(UserError, match=word) as caught:
        recurrent.run(proto)
    assert "'rec'" in caught.value.message


@pytest.mark.parametrize("seq_lens", [[SEQ, SEQ - 1], "input"])
def test_variable_sequence_lengths_are_user_errors(seq_lens):
    with pytest.raises(UserError, match="variable-length"):
        recurrent.run(_model("LSTM", seq_lens=seq_lens))


def test_graph_without_recurrent_layers_is_untouched():
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])])
    proto = helper.make_model(graph, ir_version=9)
    before = proto.SerializeToString()
    assert recurrent.run(proto) == []
    assert proto.SerializeToString() == before


def test_initial_h_without_initial_c():
    proto = _model("LSTM", "bidirectional")
    node = proto.graph.node[0]
    node.input[6] = ""
    del proto.graph.input[2]  # C0
    assert _check(proto) < 1e-4


def test_reshapes_of_2d_tensors_are_looked_through():
    """A [batch, size] tensor unsqueezed to a length-1 sequence feeds the MatMul directly (no 3-D round trip)."""
    proto = _model("GRU", states="input")
    graph = proto.graph
    graph.input[0].CopyFrom(helper.make_tensor_value_info("X2", TensorProto.FLOAT, [BATCH, SIZE]))
    graph.input[1].CopyFrom(helper.make_tensor_value_info("H2", TensorProto.FLOAT, [BATCH, HIDDEN]))
    graph.initializer.append(numpy_helper.from_array(np.array([0], np.int64), "zero"))
    graph.node.insert(0, helper.make_node("Unsqueeze", ["X2", "zero"], ["X"], name="unsqueeze_x"))
    graph.node.insert(1, helper.make_node("Unsqueeze", ["H2", "zero"], ["H0"], name="unsqueeze_h"))
    for out in graph.output:
        dims = out.type.tensor_type.shape.dim
        dims[0 if out.name == "Y" else 1].dim_value = 1 if out.name == "Y" else BATCH
        dims[1 if out.name == "Y" else 0].dim_value = 1
    proto = onnx.shape_inference.infer_shapes(proto)
    rng = np.random.default_rng(2)
    feeds = {"X2": rng.normal(size=(BATCH, SIZE)).astype(np.float32), "H2": rng.normal(size=(BATCH, HIDDEN)).astype(np.float32)}
    before = _run(proto, feeds)
    recurrent.run(proto)
    onnx.checker.check_model(proto)
    assert "Unsqueeze" not in {n.op_type for n in proto.graph.node}
    assert {"X2", "H2"} <= {i for n in proto.graph.node if n.op_type in ("MatMul", "Mul", "Sub") for i in n.input}
    for a, b in zip(_run(proto, feeds), before):
        np.testing.assert_allclose(a, b, atol=1e-5)
