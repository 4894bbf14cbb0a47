"""The int8 failure-class fixtures (tests/fixtures/quant_models.py) have the
property each is built to show, checked with onnxruntime and numpy only (no
converter): the float models are right, and the one int8 choice each fixture
is about breaks it in a simulation while the repair does not.
"""

import numpy as np
import onnx
import pytest

from packager.layout import cosine
from tests.fixtures import quant_models as qm

HELD_OUT = 16


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return tmp_path_factory.mktemp("quant_fixtures")


def _build(name, folder, **kw):
    """(model, calibration samples, held-out samples) of one fixture."""
    model_path, calibration_path = getattr(qm, name)(folder / name, **kw)
    model = onnx.load(model_path)
    assert model.opset_import[0].version == 17
    with np.load(calibration_path) as data:
        calibration = {k: data[k] for k in data.files}
    assert {k: v.shape[0] for k, v in calibration.items()} == {"x": qm.CALIBRATION_COUNT}
    assert all(v.dtype == np.float32 and np.isfinite(v).all() for v in calibration.values())
    return model, calibration, qm.SAMPLES[name](HELD_OUT, qm.HELD_OUT_SEED)


def test_box_score_concat_hides_collapsed_scores_behind_boxes(folder):
    model, calibration, held_out = _build("box_score_concat", folder)
    y = qm.run_onnx(model, held_out)["y"]  # [n, 4 + C, A]
    assert y.shape == (HELD_OUT, 4 + qm.DETECTOR_CLASSES, 2100) and np.isfinite(y).all()
    boxes, scores = y[:, :4], y[:, 4:]
    assert 400 < boxes.max() < 800
    assert scores.min() >= 0 and scores.max() <= 1
    positives = (scores > 0.5).mean(axis=(0, 2))  # per class
    assert ((positives > 0.002) & (positives < 0.05)).all(), positives
    # One int8 scale for the whole output (its calibration min-max): the scores round to 0,
    # while the whole-output cosine looks fine.
    ranges = qm.run_onnx(model, {"x": calibration["x"][:8]})["y"]
    quantized = qm.fake_quantize(y, float(ranges.min()), float(ranges.max()))
    assert cosine(y, quantized) > 0.99
    assert not (quantized[:, 4:] > 0.5).any()
    assert min(cosine(scores[:, c], quantized[:, 4 + c]) for c in range(qm.DETECTOR_CLASSES)) < 0.5


def test_unequal_depthwise_channels_equalize_exactly(folder):
    model, _, held_out = _build("unequal_depthwise", folder)
    ranges = qm.channel_ranges(model)
    assert ranges.max() / ranges.min() >= 100
    equalized = qm.cross_layer_equalized(model)
    assert qm.channel_ranges(equalized).max() / qm.channel_ranges(equalized).min() < 10
    logits = qm.run_onnx(model, held_out)["logits"]
    assert np.isfinite(logits).all()
    np.testing.assert_allclose(qm.run_onnx(equalized, held_out)["logits"], logits, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("equalize", [False, True], ids=["as-built", "equalized"])
def test_unequal_depthwise_output_needs_equalizing_for_per_tensor_int8(folder, equalize):
    """One int8 range for the depthwise output loses the small channels; after equalization it does not."""
    model, calibration, held_out = _build("unequal_depthwise", folder / str(equalize))
    if equalize:
        model = qm.cross_layer_equalized(model)
    _, pw = qm.depthwise_pair(model)
    tensor = pw.input[0]  # the depthwise conv's ReLU output
    probe = qm.with_tensor_output(model, tensor)
    low, high = (f(qm.run_onnx(probe, {"x": calibration["x"][:16]})[tensor]) for f in (np.min, np.max))
    ref = qm.run_onnx(probe, held_out)
    got = qm.run_onnx(qm.tail_model(model, tensor), {tensor: qm.fake_quantize(ref[tensor], low, high)})["logits"]
    if equalize:
        assert cosine(ref["logits"], got) > 0.999
    else:
        assert cosine(ref["logits"], got) < 0.99


@pytest.mark.parametrize("spelling,ops", [("hardsigmoid", {"HardSigmoid", "Mul"}),
                                          ("mul_div", {"Add", "Clip", "Mul", "Div"}),
                                          ("div_mul", {"Add", "Clip", "Mul", "Div"})])
def test_spelled_hardswish_computes_hardswish(folder, spelling, ops):
    model, _, held_out = _build("spelled_hardswish", folder / spelling, spelling=spelling)
    types = {n.op_type for n in model.graph.node}
    assert ops <= types and "HardSwish" not in types
    features = qm.run_onnx(model, held_out)["features"]
    fused = qm.run_onnx(onnx.load(qm.build_spelled_hardswish(folder / f"{spelling}_op.onnx", spelling="op")),
                        held_out)["features"]
    np.testing.assert_allclose(features, fused, rtol=1e-4, atol=1e-5)
    # alive activations: both the negative lobe and the linear part in use
    assert (features < -0.1).mean() > 0.05 and (features > 3).mean() > 0.01


def test_needs_tails_answer_lives_in_the_tail(folder):
    model, calibration, _ = _build("needs_tails", folder)
    images, kinds = qm.inspection_images(HELD_OUT * 4, qm.HELD_OUT_SEED)
    probe = qm.with_tensor_output(model)
    ref = qm.run_onnx(probe, {"x": images})
    assert (ref["logits"].argmax(1) == kinds).all()  # the float model finds every defect kind
    calib_map = qm.run_onnx(probe, calibration)[qm.TAIL_TENSOR]
    large = (calib_map > 0.25 * calib_map.max()).mean()
    assert 0.0002 < large < 0.001, large  # ~0.05% of the values carry the answer
    tail = qm.tail_model(model)

    def top1(high):
        quantized = qm.fake_quantize(ref[qm.TAIL_TENSOR], 0.0, high)
        return (qm.run_onnx(tail, {qm.TAIL_TENSOR: quantized})["logits"].argmax(1) == kinds).mean()

    assert top1(float(calib_map.max())) >= 0.99
    assert top1(float(np.percentile(calib_map, 99.9))) < 0.5
