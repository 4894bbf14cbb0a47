"""Input drift: calibration statistics in the manifest (packager.input_stats), live statistics and the drift
score and saturation counts in /metrics (edge_runtime.drift), the manifest check of the new section."""

import json
import warnings

import numpy as np
import pytest

from edge_runtime.drift import Drift, representable
from edge_runtime.manifest import Malformed, check_input_statistics
from edge_runtime.metrics import Metrics
from packager.input_stats import input_statistics
from tests.helpers.manifests import hand_manifest
from tests.helpers.serve import Server, infer_body

RNG = np.random.default_rng(7)
SHAPES = {"x": [1, 3, 32, 32]}
MEAN, STD = np.array([0.4, -1.0, 3.0]), np.array([0.2, 1.0, 0.5])


def images(n: int, shift: float = 0.0) -> np.ndarray:
    """n [1, 3, 32, 32] images (as calibration holds them: (n, 1, 3, 32, 32)), each channel N(mean, std),
    moved by ``shift`` standard deviations."""
    x = RNG.standard_normal((n, 1, 3, 32, 32)) * STD[:, None, None] + (MEAN + shift * STD)[:, None, None]
    return x.astype(np.float32)


def manifest_with_stats() -> dict:
    manifest = hand_manifest()
    manifest["input_statistics"] = input_statistics({"x": images(64)}, manifest["inputs"])
    return manifest


def test_calibration_statistics_per_channel_of_an_image_and_overall_otherwise():
    manifest = manifest_with_stats()
    stats = manifest["input_statistics"]["x"]
    assert stats["channel_axis"] == 1 and stats["samples"] == 64
    np.testing.assert_allclose(stats["mean"], MEAN, atol=0.01)
    np.testing.assert_allclose(stats["std"], STD, rtol=0.02)
    assert stats["quantiles"]["0.01"] < stats["quantiles"]["0.5"] < stats["quantiles"]["0.99"]
    check_input_statistics(manifest["input_statistics"], SHAPES)  # what the build writes, the runner accepts
    flat = input_statistics({"v": np.full((10, 1, 5), 2.0)}, [{"name": "v", "shape": [1, 5]}])["v"]
    assert flat["channel_axis"] is None and flat["mean"] == [2.0] and flat["std"] == [0.0]
    wide = input_statistics({"f": np.zeros((2, 1, 256, 4, 4))}, [{"name": "f", "shape": [1, 256, 4, 4]}])["f"]
    assert wide["channel_axis"] is None  # a feature map, not an image
    assert input_statistics({}, manifest["inputs"]) == {}  # an input fixed at build time has no data


def score_after(drift: Drift, batches) -> float:
    for x in batches:
        drift.observe({"x": x})
    return drift.inputs["x"].score()


def test_drift_score_low_in_distribution_and_up_for_shifted_inputs():
    manifest = manifest_with_stats()
    steady = score_after(Drift(manifest), images(60))
    assert steady < 0.1, steady
    shifted = score_after(Drift(manifest), images(60, shift=2.0))
    assert 1.8 < shifted < 2.2, shifted
    # One channel off by 3 std (a colour cast): a third of that, averaged over the three channels.
    cast = images(60)
    cast[:, :, 2] += 3 * STD[2]
    assert 0.9 < score_after(Drift(manifest), cast) < 1.1
    # The moving average forgets: back in distribution, the score falls again.
    drift = Drift(manifest)
    score_after(drift, images(40, shift=2.0))
    assert score_after(drift, images(100)) < 0.1


def test_drift_reads_samples_in_every_form_the_model_takes():
    """N along the batch axis (N, 3, 32, 32) or stacked in front (N, 1, 3, 32, 32): the same channels."""
    manifest = manifest_with_stats()
    cast = images(20)
    cast[:, :, 2] += 3 * STD[2]  # one channel off by 3 std: a score of 1 when channels are told apart
    along, stacked = Drift(manifest), Drift(manifest)
    for _ in range(200):  # each request moves the moving average by ALPHA of the way: many, to settle
        along.observe({"x": cast[:, 0]})
        stacked.observe({"x": cast})
    assert 0.9 < along.inputs["x"].score() < 1.1
    assert stacked.inputs["x"].score() == pytest.approx(along.inputs["x"].score())


def test_saturation_counts_values_outside_the_int8_input_range():
    manifest = manifest_with_stats()
    spec = manifest["inputs"][0]  # int8, scale 0.0078, zero point 0
    low, high = representable(spec)
    assert low == pytest.approx(-128 * 0.0078) and high == pytest.approx(127 * 0.0078)
    assert representable({"tflite_dtype": "float32", "scale": 0.0}) is None
    drift = Drift(manifest)
    x = np.zeros((1, 3, 32, 32), np.float32)
    x.flat[:10] = 5.0
    x.flat[10:13] = -5.0
    drift.observe({"x": x, "not-an-input": x})
    text = Metrics({"model": "det-rpi4"}, drift=drift).render()
    assert 'edge_run_input_values_total{input="x"} 3072.0\n' in text
    assert 'edge_run_input_saturated_values_total{input="x"} 13.0\n' in text
    assert 'edge_run_input_drift_score{input="x"}' in text


def test_no_drift_figures_without_statistics_or_requests():
    manifest = hand_manifest()  # a bundle built before input_statistics
    drift = Drift(manifest)
    assert 'edge_run_input_drift_score' not in Metrics({}, drift=drift).render()
    drift.observe({"x": np.zeros((1, 3, 32, 32), np.float32)})
    text = Metrics({}, drift=drift).render()
    assert "edge_run_input_drift_score" not in text and 'edge_run_input_values_total{input="x"} 3072.0' in text
    assert "edge_run_input_drift_score" not in Metrics({}, drift=Drift(manifest_with_stats())).render()


@pytest.mark.parametrize("edit, field", [
    (lambda s: s["x"].__setitem__("std", [0.2, -1.0, 0.5]), 'input_statistics["x"].std'),
    (lambda s: s["x"].__setitem__("mean", [0.4, 1.0]), 'input_statistics["x"].mean'),
    (lambda s: s["x"].__setitem__("mean", [0.4, float("nan"), 1.0]), 'input_statistics["x"].mean'),
    (lambda s: s["x"].__setitem__("channel_axis", 2), 'input_statistics["x"].channel_axis'),
    (lambda s: s.__setitem__("y", s["x"]), 'input_statistics["y"]'),
], ids=["negative-std", "channel-count", "nan", "axis", "unknown-input"])
def test_malformed_statistics_refused(edit, field):
    manifest = manifest_with_stats()
    edit(manifest["input_statistics"])
    with pytest.raises(Malformed) as bad:
        check_input_statistics(manifest["input_statistics"], SHAPES)
    assert bad.value.path == field


@pytest.mark.slow
def test_served_drift_score_moves_with_shifted_inputs(digits_bundle, digits):
    manifest = json.loads((digits_bundle / "manifest.json").read_text())
    stats = manifest["input_statistics"]["image"]
    assert stats["channel_axis"] == 1 and len(stats["mean"]) == 1 and stats["std"][0] > 0
    samples = np.load(digits / "test_x.npy")[:30]

    def score(srv) -> float:
        line = next(x for x in srv.metrics().splitlines() if x.startswith('edge_run_input_drift_score{input="image"}'))
        return float(line.rsplit(" ", 1)[1])

    srv = Server(digits_bundle)
    try:
        for x in samples:
            assert srv.request("POST", "/v2/models/digits-rpi4/infer", infer_body(x[None]))[0] == 200
        steady = score(srv)
        for x in samples:
            shifted = x[None] + 2 * np.float32(stats["std"][0])
            assert srv.request("POST", "/v2/models/digits-rpi4/infer", infer_body(shifted))[0] == 200
        moved = score(srv)
    finally:
        assert srv.stop() == 0
    print(f"drift score: in distribution {steady:.3f}, shifted by 2 std {moved:.3f}")
    assert steady < 0.5 and moved > 1.2 and moved > steady + 1


def test_empty_batch_leaves_the_figures_alone():
    """An empty tensor has no mean: folded in, it would turn the moving average into NaN for good."""
    drift = Drift(manifest_with_stats())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        drift.observe({"x": np.zeros((0, 3, 32, 32), np.float32)})
    assert drift.inputs["x"].live_mean is None and drift.inputs["x"].values == 0
    assert score_after(drift, images(60)) < 0.1


@pytest.mark.parametrize("value", [3e38, -3e38, np.inf, np.nan])
def test_robust_drift_one_request_moves_the_score_by_a_bounded_amount(value):
    """One request of 3e38-valued inputs set the score to 5e37, still 3e35 after 100 normal requests. A request's
    channel means are clipped to 8 calibration std of the calibration mean: it moves the score by at most
    ALPHA * 8 = 0.4, whatever it holds, and the score is back near 0 after the next normal ones."""
    drift = Drift(manifest_with_stats())
    before = score_after(drift, images(40))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        after = score_after(drift, [np.full((1, 3, 32, 32), value, np.float32)])
    assert np.isfinite(after) and after - before <= 0.4 + 1e-9, (before, after)
    for _ in range(20):  # a flood of them: the score stays within the clip, never beyond
        after = score_after(drift, [np.full((1, 3, 32, 32), value, np.float32)])
        assert after <= 8.0 + 1e-9
    assert score_after(drift, images(100)) < 0.1
