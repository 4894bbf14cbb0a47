"""Output kinds inferred from the graph and the float values, and declared with --output-kind."""

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from edge_runtime.errors import UserError
from packager.kinds import parse_declared
from packager.kinds.infer import infer_kinds

RNG = np.random.default_rng(0)


def graph(nodes, inputs, outputs, inits=(), metadata=None):
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs],
                          [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in outputs],
                          [numpy_helper.from_array(np.asarray(v, np.float32), n) for n, v in inits])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    for key, value in (metadata or {}).items():
        model.metadata_props.add(key=key, value=value)
    return model


def kinds_of(model, refs, declared=None):
    ins = [(i.name, [d.dim_value for d in i.type.tensor_type.shape.dim]) for i in model.graph.input]
    outs = [(o.name, [d.dim_value for d in o.type.tensor_type.shape.dim]) for o in model.graph.output]
    return infer_kinds(model, ins, outs, refs, declared)


def test_landmarks_beside_a_softmax_are_regression_and_the_softmax_is_classes():
    """A face refinement net: face/not-face softmax, 4 box offsets and 10 landmark coordinates."""
    model = graph([helper.make_node("Gemm", ["x", "w1"], ["logits"]), helper.make_node("Softmax", ["logits"], ["prob"]),
                   helper.make_node("Gemm", ["x", "w2"], ["box"]), helper.make_node("Gemm", ["x", "w3"], ["marks"])],
                  [("x", [1, 8])], [("prob", [1, 2]), ("box", [1, 4]), ("marks", [1, 10])],
                  [("w1", np.ones((8, 2))), ("w2", np.ones((8, 4))), ("w3", np.ones((8, 10)))])
    refs = {"prob": RNG.dirichlet([1, 1], (9, 1)), "box": RNG.normal(size=(9, 1, 4)),
            "marks": RNG.uniform(0, 1, (9, 1, 10))}
    kinds = kinds_of(model, refs)
    assert kinds["prob"].kind == "classes" and kinds["prob"].axis == 1
    assert kinds["box"].kind == "regression" and kinds["marks"].kind == "regression"


def test_a_channels_last_softmax_map_has_its_channel_axis_last():
    model = graph([helper.make_node("Conv", ["x", "w"], ["c"]), helper.make_node("Transpose", ["c"], ["t"],
                                                                                perm=[0, 2, 3, 1]),
                   helper.make_node("Softmax", ["t"], ["prob"], axis=3)],
                  [("x", [1, 3, 12, 12])], [("prob", [1, 12, 12, 2])], [("w", np.ones((2, 3, 1, 1)))])
    p = RNG.uniform(0, 1, (5, 1, 12, 12, 1))
    kinds = kinds_of(model, {"prob": np.concatenate([1 - p, p], -1)})
    assert kinds["prob"].kind == "scores" and kinds["prob"].axis == 3 and kinds["prob"].threshold == 0.5


def test_a_sigmoid_map_after_a_transposed_conv_has_channels_first():
    model = graph([helper.make_node("ConvTranspose", ["x", "w"], ["c"]), helper.make_node("Sigmoid", ["c"], ["map"])],
                  [("x", [1, 4, 8, 8])], [("map", [1, 1, 8, 8])], [("w", np.ones((4, 1, 1, 1)))])
    kinds = kinds_of(model, {"map": RNG.uniform(0, 1, (5, 1, 1, 8, 8))})
    assert kinds["map"].kind == "scores" and kinds["map"].axis == 1


def _sequence(blank_share: float, steps=40, classes=12, samples=6):
    """Softmax rows: the blank (class 0) at ``blank_share`` of the steps, between symbols."""
    probs = np.full((samples, 1, steps, classes), 0.01)
    for n in range(samples):
        for t in range(steps):
            best = 0 if (t % 10) < blank_share * 10 else 1 + (t * 7 + n) % (classes - 1)
            probs[n, 0, t, best] = 0.9
    return probs / probs.sum(-1, keepdims=True)


def _recogniser(metadata=None, steps=40, classes=12):
    return graph([helper.make_node("MatMul", ["x", "w"], ["logits"]),
                  helper.make_node("Softmax", ["logits"], ["probs"], axis=2)],
                 [("x", [1, steps, 8])], [("probs", [1, steps, classes])], [("w", np.ones((8, classes)))], metadata)


def test_a_recogniser_carrying_its_alphabet_is_ctc_with_it():
    alphabet = "\n".join("0123456789")  # 10 symbols + blank + space = 12 classes
    kinds = kinds_of(_recogniser({"character": alphabet}), {"probs": _sequence(0.0)})
    assert kinds["probs"].kind == "ctc" and kinds["probs"].blank == 0 and kinds["probs"].axis == 2
    assert kinds["probs"].alphabet == (*"0123456789", " ")


def test_blanks_between_symbols_make_ctc_and_none_make_tags():
    assert kinds_of(_recogniser(), {"probs": _sequence(0.5)})["probs"].kind == "ctc"
    tagger = kinds_of(_recogniser(), {"probs": _sequence(0.0)})["probs"]
    assert tagger.kind == "tags" and tagger.axis == 2


def test_a_tagger_padded_at_the_end_is_not_ctc():
    probs = _sequence(0.0)
    probs[:, :, 20:] = 0.01
    probs[:, :, 20:, 0] = 0.9  # padding: one run of class 0 at the end
    assert kinds_of(_recogniser(), {"probs": probs})["probs"].kind == "tags"


def test_a_recurrent_state_and_a_yolo_head():
    model = graph([helper.make_node("GRU", ["x", "w", "r", "", "", "h"], ["y", "hn"], hidden_size=4),
                   helper.make_node("Identity", ["y"], ["head"])],
                  [("x", [1, 1, 8]), ("h", [1, 1, 4])], [("head", [1, 8, 64]), ("hn", [1, 1, 4])],
                  [("w", np.ones((1, 12, 8))), ("r", np.ones((1, 12, 4)))])
    head = np.concatenate([RNG.uniform(0, 320, (3, 1, 4, 64)), RNG.uniform(0, 1, (3, 1, 4, 64))], axis=2)
    kinds = kinds_of(model, {"head": head, "hn": RNG.normal(size=(3, 1, 1, 4))})
    assert kinds["hn"].kind == "state"
    assert kinds["head"].kind == "detections" and kinds["head"].layout == "columns"


def test_embeddings_sigmoid_vectors_and_logits():
    model = graph([helper.make_node("Gemm", ["x", "w"], ["e"]), helper.make_node("Gemm", ["x", "w2"], ["raw"]),
                   helper.make_node("Sigmoid", ["raw"], ["labels"])],
                  [("x", [1, 8])], [("e", [1, 32]), ("labels", [1, 5])], [("w", np.ones((8, 32))),
                                                                          ("w2", np.ones((8, 5)))])
    e = RNG.normal(size=(7, 1, 32))
    kinds = kinds_of(model, {"e": e / np.linalg.norm(e, axis=2, keepdims=True),
                             "labels": RNG.uniform(0, 1, (7, 1, 5))})
    assert kinds["e"].kind == "embedding"
    assert kinds["labels"].kind == "scores" and kinds["labels"].axis == 1
    logits = kinds_of(model, {"e": e, "labels": RNG.uniform(0, 1, (7, 1, 5))})
    assert logits["e"].kind == "classes"  # raw logits, no softmax output beside them


def test_declared_kinds_win_and_are_checked():
    model = _recogniser()
    declared = parse_declared(["probs=ctc"], ["probs"])
    kind = kinds_of(model, {"probs": _sequence(0.0)}, declared)["probs"]
    assert kind.kind == "ctc" and kind.why == "declared" and kind.blank == 0 and kind.axis == 2
    assert parse_declared(["a=b=scores:0.6"], ["a=b"]) == {"a=b": ("scores", 0.6)}
    for bad, says in [("probs", "expected NAME=KIND"), ("probs=boxes", "expected NAME=KIND"),
                      ("other=tags", "has no output 'other'"), ("probs=tags:0.5", "takes no threshold"),
                      ("probs=scores:1.5", "between 0 and 1"), ("probs=scores:x", "between 0 and 1")]:
        with pytest.raises(UserError, match=says):
            parse_declared([bad], ["probs"])
    with pytest.raises(UserError, match="twice"):
        parse_declared(["probs=tags", "probs=ctc"], ["probs"])


def _segmenter(channels_last: bool = False, classes: int = 6):
    """Conv -> Relu -> 1x1 Conv (class logits) -> Resize x2, optionally transposed to channels-last."""
    nodes = [helper.make_node("Conv", ["x", "w1"], ["f"]), helper.make_node("Relu", ["f"], ["r"]),
             helper.make_node("Conv", ["r", "w2"], ["logits"]),
             helper.make_node("Resize", ["logits", "", "scales"], ["up" if channels_last else "seg"], mode="linear")]
    shape = [1, classes, 16, 16]
    if channels_last:
        nodes.append(helper.make_node("Transpose", ["up"], ["seg"], perm=[0, 2, 3, 1]))
        shape = [1, 16, 16, classes]
    return graph(nodes, [("x", [1, 3, 8, 8])], [("seg", shape)],
                 [("w1", np.ones((8, 3, 1, 1))), ("w2", np.ones((classes, 8, 1, 1))), ("scales", [1, 1, 2, 2])])


def _logits(classes: int, lead: float, samples: int = 4, axis: int = 1):
    """Logit maps whose best class leads the others by ``lead`` at every pixel (noise of 1 on top)."""
    best = RNG.integers(0, classes, (samples, 16, 16))
    x = RNG.normal(size=(samples, 16, 16, classes)) + lead * np.eye(classes)[best]
    return np.moveaxis(x, -1, axis)[:, None]


def test_a_segmenters_logits_are_a_class_per_pixel_on_the_conv_channel_axis():
    kind = kinds_of(_segmenter(), {"seg": _logits(6, 0.0)})["seg"]  # even untrained logits lead by ~5%
    assert kind.kind == "tags" and kind.axis == 1
    last = kinds_of(_segmenter(channels_last=True), {"seg": _logits(6, 8.0, axis=3)})["seg"]
    assert last.kind == "tags" and last.axis == 3
    # declared on a map inferred as something else: still the convolution's channels, not the last axis
    declared = kinds_of(_segmenter(), {"seg": _heatmap()}, parse_declared(["seg=tags"], ["seg"]))["seg"]
    assert declared.kind == "tags" and declared.axis == 1


def _heatmap():
    """Keypoint heatmaps: one peak per channel on a background flat in every channel."""
    heat = np.full((4, 1, 6, 16, 16), -0.01) + RNG.normal(0, 1e-4, (4, 1, 6, 16, 16))
    heat[:, 0, :, 5, 7] = 1.0
    return heat


def test_maps_that_are_not_a_segmenters_logits_stay_regression():
    # an image out (3 channels), and a heatmap whose background is flat in every channel
    assert kinds_of(_segmenter(classes=3), {"seg": _logits(3, 8.0)})["seg"].kind == "regression"
    assert kinds_of(_segmenter(), {"seg": _heatmap()})["seg"].kind == "regression"
    # a feature map: an activation after the convolution, however decisive
    features = _segmenter()
    features.graph.node[-1].output[0] = "up"
    features.graph.node.append(helper.make_node("HardSwish", ["up"], ["seg"]))
    assert kinds_of(features, {"seg": _logits(6, 8.0)})["seg"].kind == "regression"
    # a box-offset map beside a score map (a proposal net's): regression, however decisive
    model = _segmenter()
    model.graph.node.append(helper.make_node("Sigmoid", ["logits"], ["face"]))
    model.graph.output.append(helper.make_tensor_value_info("face", TensorProto.FLOAT, [1, 6, 8, 8]))
    kinds = kinds_of(model, {"seg": _logits(6, 8.0), "face": RNG.uniform(0, 1, (4, 1, 6, 8, 8))})
    assert kinds["seg"].kind == "regression" and kinds["face"].kind == "scores"


def test_class_ids_from_an_argmax_are_compared_as_ids():
    model = _segmenter()
    model.graph.node.append(helper.make_node("ArgMax", ["seg"], ["label"], axis=1, keepdims=0))
    model.graph.node.append(helper.make_node("ArgMax", ["seg"], ["one"], axis=1, keepdims=0))
    del model.graph.output[:]
    model.graph.output.extend([helper.make_tensor_value_info("label", TensorProto.INT64, [1, 16, 16]),
                               helper.make_tensor_value_info("one", TensorProto.INT64, [1])])
    label = RNG.integers(0, 6, (4, 1, 16, 16))
    kinds = kinds_of(model, {"label": label, "one": label[:, :, 0, 0]})
    assert kinds["label"].kind == "tags" and kinds["label"].axis is None
    assert kinds["one"].kind == "classes" and kinds["one"].axis is None
    from packager.kinds.measures import measure

    got = label.copy()
    got[0, 0, :4, :] = (got[0, 0, :4, :] + 1) % 6  # a quarter of one sample's pixels differ
    figures = measure(label, got, kinds["label"])
    assert figures["top1_agreement"] == 1 - 64 / 1024 and figures["worst_sample_top1"] == 0.75
    assert measure(label[:, :, 0, 0], got[:, :, 0, 0], kinds["one"])["top1_agreement"] == 0.75


def test_raw_per_position_logits_from_a_linear_layer_are_tags_or_ctc():
    """A token classifier exported without its softmax (a BERT NER head), a CRNN's raw [T, 1, C] logits."""
    head = graph([helper.make_node("MatMul", ["x", "w"], ["m"]), helper.make_node("Add", ["m", "b"], ["logits"])],
                 [("x", [1, 40, 8])], [("logits", [1, 40, 12])], [("w", np.ones((8, 12))), ("b", np.zeros(12))])
    tags = kinds_of(head, {"logits": np.log(_sequence(0.0))})["logits"]
    assert tags.kind == "tags" and tags.axis == 2
    assert kinds_of(head, {"logits": np.log(_sequence(0.5))})["logits"].kind == "ctc"
    crnn = graph([helper.make_node("MatMul", ["x", "w"], ["m"]),
                  helper.make_node("Transpose", ["m"], ["logits"], perm=[1, 0, 2])],
                 [("x", [1, 40, 8])], [("logits", [40, 1, 12])], [("w", np.ones((8, 12)))])
    logits = np.log(_sequence(0.5)).transpose(0, 2, 1, 3)
    ctc = kinds_of(crnn, {"logits": logits})["logits"]
    assert ctc.kind == "ctc" and ctc.axis == 2
    # values that move with the position and hardly between classes: no class leads, so regression (cosine)
    ramp = np.linspace(-5, 5, 40)[None, None, :, None] + RNG.normal(0, 1e-3, (6, 1, 40, 12))
    assert kinds_of(head, {"logits": ramp})["logits"].kind == "regression"


def test_a_yolov5_head_has_objectness_when_its_metadata_names_the_classes():
    head = np.concatenate([RNG.uniform(0, 320, (3, 1, 64, 4)), RNG.uniform(0, 1, (3, 1, 64, 4))], axis=3)
    for names, objectness in (("{0: 'person', 1: 'car', 2: 'dog'}", True), ("['person', 'car', 'dog', 'cat']", None),
                              ("not python", None)):
        model = graph([helper.make_node("Identity", ["x"], ["out"])], [("x", [1, 64, 8])], [("out", [1, 64, 8])],
                      metadata={"stride": "32", "names": names})
        kind = kinds_of(model, {"out": head})["out"]
        assert kind.kind == "detections" and kind.layout == "rows" and kind.objectness is objectness


def _face_detector(n=64):
    """UltraFace-like: a 2-way softmax per anchor [1, N, 2] beside decoded corner boxes [1, N, 4] in 0..1."""
    model = graph([helper.make_node("Softmax", ["x"], ["scores"], axis=2),
                   helper.make_node("Sigmoid", ["b"], ["boxes"])],
                  [("x", [1, n, 2]), ("b", [1, n, 4])], [("scores", [1, n, 2]), ("boxes", [1, n, 4])])
    face = RNG.uniform(0, 1, (3, 1, n, 1)) ** 8  # mostly background
    x1y1 = RNG.uniform(0, 0.8, (3, 1, n, 2))
    return model, {"scores": np.concatenate([1 - face, face], -1),
                   "boxes": np.concatenate([x1y1, x1y1 + RNG.uniform(0.05, 0.2, (3, 1, n, 2))], -1)}


def test_scores_beside_their_own_box_output_are_detections_with_the_background_dropped():
    model, refs = _face_detector()
    kinds = kinds_of(model, refs)
    assert kinds["scores"].kind == "detections" and kinds["scores"].boxes == "boxes"
    assert kinds["scores"].corners is True and kinds["scores"].background == 0
    assert kinds["boxes"].kind == "regression"
    declared = kinds_of(model, refs, parse_declared(["scores=detections:0.7"], ["scores", "boxes"]))["scores"]
    assert declared.boxes == "boxes" and declared.threshold == 0.7 and declared.why == "declared"
    # encoded offsets (no anchors in the model to decode them): no pairing, the softmax stays what it was
    offsets = dict(refs, boxes=RNG.normal(size=refs["boxes"].shape))
    assert kinds_of(model, offsets)["scores"].kind != "detections"


def test_split_detections_are_measured_on_both_outputs():
    from packager.fidelity import compare

    model, refs = _face_detector()
    kinds = kinds_of(model, refs)
    faces = refs["scores"][..., 1] > 0.25
    assert faces.sum() >= 5
    same = compare(refs, refs, 3, kinds)["outputs"]["scores"]
    assert same["f1"] == 1.0 and same["detections"] >= 1
    moved = dict(refs, boxes=refs["boxes"] + np.array([2.0, 0, 2.0, 0]))  # every box moved off the image
    assert compare(refs, moved, 3, kinds)["outputs"]["scores"]["f1"] == 0.0
    lost = dict(refs, scores=np.concatenate([np.ones_like(refs["scores"][..., :1]), 0 * refs["scores"][..., 1:]], -1))
    assert compare(refs, lost, 3, kinds)["outputs"]["scores"]["recall"] == 0.0
