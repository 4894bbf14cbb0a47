"""The integer_inputs pass: id-fed graphs made unambiguous for onnx2tf, results unchanged.

onnxruntime only; the real conversions (before: float cosine 0.28 / crash,
after: 1.0) are in the helper's report, not run here.
"""

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from packager.prepare import Pass, integer_inputs, prepare
from tests.fixtures import id_models


def _load(builder, tmp_path):
    return onnx.shape_inference.infer_shapes(onnx.load(str(builder(tmp_path / f"{builder.__name__}.onnx"))))


def _run_ort(proto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    import onnxruntime as ort

    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    count = len(next(iter(feeds.values())))
    return [session.run(None, {n: feeds[n][i] for n in names})[0] for i in range(count)]


def _feeds(proto, samples: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Calibration-style samples (N, *shape[1:]) as (N, *shape) feeds."""
    shapes = {i.name: [d.dim_value for d in i.type.tensor_type.shape.dim] for i in proto.graph.input}
    return {n: a.reshape(len(a), *shapes[n]) for n, a in samples.items()}


def _same_results(before, after, samples) -> None:
    feeds = _feeds(before, samples)
    for old, new in zip(_run_ort(before, feeds), _run_ort(after, feeds)):
        np.testing.assert_allclose(new, old, rtol=1e-6, atol=1e-7)


def _rewritten(builder, tmp_path) -> tuple:
    """(the fixture as built, a copy after the pass and the checker, the pass's changes)."""
    before = _load(builder, tmp_path)
    proto = onnx.ModelProto()
    proto.CopyFrom(before)
    changes = integer_inputs.run(proto)
    onnx.checker.check_model(proto, full_check=True)
    return before, proto, changes


def _anchors(proto) -> list:
    return [n for n in proto.graph.node if n.op_type == "MatMul" and "layout_anchor" in n.output[0]]


def test_square_token_tensor_before_flatten_gets_an_identity_matmul(tmp_path):
    before, proto, changes = _rewritten(id_models.byte_mlp_square, tmp_path)
    assert len(changes) == 1 and "1 token tensor(s)" in changes[0] and "emb [1, 16, 16]" in changes[0]
    (anchor,) = _anchors(proto)
    identity = {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}[anchor.input[1]]
    np.testing.assert_array_equal(identity, np.eye(16, dtype=np.float32))
    flatten = next(n for n in proto.graph.node if n.op_type == "Flatten")
    assert flatten.input[0] == anchor.output[0]
    _same_results(before, proto, id_models.byte_samples(8, shape=(16,)))


def test_encoder_with_sequence_equal_to_width_anchors_the_residual_stream(tmp_path):
    before, proto, changes = _rewritten(id_models.text_encoder, tmp_path)
    assert len(changes) == 1
    anchored = {n.input[0] for n in _anchors(proto)}
    assert "z" in anchored  # the [CLS] Gather(axis=1) reads the last LayerNorm output through an anchor
    cls = next(n for n in proto.graph.node if n.op_type == "Gather" and n.input[0] != "tok" and n.input[0] != "pos")
    assert cls.input[0].startswith("z_layout_anchor")
    # MatMul-made tensors are trusted by onnx2tf: never anchored
    producers = {o: n.op_type for n in before.graph.node for o in n.output}
    assert all(producers[t] != "MatMul" for t in anchored)
    _same_results(before, proto, id_models.encoder_samples(4))


def test_one_dimensional_int32_ids_are_cast_to_int64_before_the_lookup(tmp_path):
    before, proto, changes = _rewritten(id_models.byte_conv_squeezed, tmp_path)
    assert changes == ["1 rank-0/1 int32 Gather index tensor(s) cast to int64 (ids1)"]
    nodes = list(proto.graph.node)
    gather = next(n for n in nodes if n.op_type == "Gather")
    cast = next(n for n in nodes if n.output[0] == gather.input[1])
    assert cast.op_type == "Cast" and cast.input[0] == "ids1"
    assert helper.get_attribute_value(cast.attribute[0]) == TensorProto.INT64
    assert nodes.index(cast) < nodes.index(gather)
    _same_results(before, proto, id_models.byte_samples(8))


def test_models_onnx2tf_already_converts_are_left_alone(tmp_path):
    for builder in (id_models.byte_conv_int32, id_models.byte_conv_cast, id_models.tiny_encoder,
                    id_models.byte_conv_3d_ids):
        proto = _load(builder, tmp_path)
        before = proto.SerializeToString()
        assert integer_inputs.run(proto) == [], builder.__name__
        assert proto.SerializeToString() == before, builder.__name__


def test_square_tensors_after_a_conv_keep_onnx2tf_s_channels_last_guess(tmp_path):
    """ids -> embedding [1, 16, 16] -> Transpose -> Conv(16 -> 16) [1, 16, 16] -> Flatten: only the two
    tensors before the Conv are token tensors; the Conv output really is channels-last in onnx2tf."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal(s).astype(np.float32), n)
             for n, s in (("table", (256, 16)), ("w", (16, 16, 3)), ("head", (256, 4)))]
    nodes = [
        helper.make_node("Gather", ["table", "ids"], ["emb"], axis=0),
        helper.make_node("Transpose", ["emb"], ["ncw"], perm=[0, 2, 1]),
        helper.make_node("Conv", ["ncw", "w"], ["conv"], pads=[1, 1]),
        helper.make_node("Flatten", ["conv"], ["flat"]),
        helper.make_node("MatMul", ["flat", "head"], ["y"]),
    ]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("ids", TensorProto.INT64, [1, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
    proto = onnx.shape_inference.infer_shapes(model)
    integer_inputs.run(proto)
    assert sorted(n.input[0] for n in _anchors(proto)) == ["emb", "ncw"]
    _same_results(model, proto, {"ids": rng.integers(0, 256, (4, 16)).astype(np.int64)})


def test_runs_in_the_stage_exactly_and_a_second_run_finds_nothing(tmp_path):
    proto = onnx.load(str(id_models.byte_mlp_square(tmp_path / "m.onnx")))
    samples = {k: v[:, None] for k, v in id_models.byte_samples(6, shape=(16,)).items()}
    report = prepare(proto, samples, passes=(Pass("integer_inputs", integer_inputs.run, exact=True),))
    assert report.changes[0].startswith("integer_inputs: 1 token tensor(s)")
    assert report.cosine["probs"] > 0.999999
    assert integer_inputs.run(proto) == []
