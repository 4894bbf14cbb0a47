"""Fidelity figures on synthetic arrays: each rule, and the case a single cosine misses."""

import math

import numpy as np
import pytest

from packager.fidelity import Bar, channel_axis, compare, format_table, measure, output_metrics, shortfalls, summary

RNG = np.random.default_rng(0)


def box_score_concat(samples=4, anchors=50):
    """[N, 1, 84, A] like YOLO: rows 0-3 box coordinates in 0..640, rows 4-83 class scores in 0..1."""
    ref = np.empty((samples, 1, 84, anchors))
    ref[:, :, :4] = RNG.uniform(0, 640, (samples, 1, 4, anchors))
    ref[:, :, 4:] = RNG.uniform(0, 0.3, (samples, 1, 80, anchors))
    ref[:, :, 10, :5] = 0.9  # a few confident detections per sample
    ref[:, :, 20, 7:9] = 0.8
    return ref


def test_score_collapse_in_a_box_score_concat_is_not_hidden_by_the_whole_output_cosine():
    ref = box_score_concat()
    got = ref + RNG.normal(0, 0.5, ref.shape)
    got[:, :, 4:] = 0.0  # every class score quantized to 0
    m = output_metrics(ref, got)
    assert m["cosine"] > 0.99 and m["min_cosine"] > 0.99  # the fooling case: boxes dominate the norm
    assert m["worst_channel"]["axis"] == 1
    assert 4 <= m["worst_channel"]["index"] < 84
    assert m["worst_channel"]["cosine"] == pytest.approx(0.0)
    score = m["score_map"]
    assert score["positives"] == 4 * 7  # box rows (0..640) are not score positions
    assert score["model_positives"] == 0
    assert score["recall"] == 0.0 and score["precision"] == 0.0 and score["f1"] == 0.0
    assert score["topk_agreement"] < 0.05
    assert m["top1_agreement"] is None and m["top5_agreement"] is None
    lines = shortfalls({"samples": 4, "outputs": {"boxes": m}}, Bar())
    assert len(lines) == 2
    assert lines[0].startswith(f"boxes: worst channel {m['worst_channel']['index']} (axis 1) cosine 0.000 < 0.9")
    assert lines[1].startswith("boxes: score map F1 0.000 < 0.95")


def test_box_score_concat_that_kept_its_scores_meets_the_bar():
    ref = box_score_concat()
    got = ref + RNG.normal(0, 0.004, ref.shape)
    m = output_metrics(ref, got)
    assert m["worst_channel"]["cosine"] > 0.99
    assert m["score_map"]["f1"] == 1.0 and m["score_map"]["topk_agreement"] == 1.0
    assert shortfalls({"samples": 4, "outputs": {"boxes": m}}, Bar()) == []


def test_class_scores_top1_and_top5():
    ref = np.array([[[0.6, 0.5, 0.4, 0.3, 0.2, 0.1]], [[0.1, 0.2, 0.3, 0.4, 0.5, 0.6]]])
    got = np.array([[[0.6, 0.5, 0.4, 0.3, 0.2, 0.1]], [[0.6, 0.2, 0.3, 0.4, 0.5, 0.1]]])
    m = output_metrics(ref, got)
    assert m["top1_agreement"] == 0.5  # sample 1: class 5 became class 0
    assert m["top5_agreement"] == pytest.approx((1.0 + 4 / 5) / 2)  # sample 1 lost class 5, gained class 0
    assert m["worst_channel"] is None and m["score_map"] is None  # covered by top-1
    few = output_metrics(ref[:, :, :4], got[:, :, :4])
    assert few["top1_agreement"] is not None and few["top5_agreement"] is None


def test_rank2_per_sample_shapes():
    scores = RNG.random((3, 1, 7))  # [1, F]: a class vector
    m = output_metrics(scores, scores)
    assert m["worst_channel"] is None and m["score_map"] is None and m["top1_agreement"] == 1.0
    table = RNG.uniform(-5, 5, (3, 2, 4))  # [2, 4]: the last axis is the channel axis
    got = table.copy()
    got[:, :, 3] = -got[:, :, 3]
    m = output_metrics(table, got)
    assert m["worst_channel"] == {"axis": 1, "index": 3, "cosine": pytest.approx(-1.0)}
    assert m["top1_agreement"] is None and m["score_map"] is None  # not in [0, 1]
    assert channel_axis([1, 1]) is None and channel_axis([5]) is None and channel_axis([1, 84, 8400]) == 1


def test_probability_map_f1_and_topk_by_hand():
    ref = np.full((1, 1, 1, 4, 4), 0.1)
    ref[0, 0, 0, 0:2, 0:2] = 0.9  # 4 positives
    got = np.full_like(ref, 0.1)
    got[0, 0, 0, 0:2, 1:3] = 0.9  # shifted one column: 2 of 4 still right
    score = output_metrics(ref, got)["score_map"]  # N = 1 sample of ONNX shape [1, 1, 4, 4]
    assert score == {"threshold": 0.5, "positives": 4, "model_positives": 4, "precision": 0.5,
                     "recall": 0.5, "f1": 0.5, "topk_agreement": 0.5}
    # Two samples pool their positions: the second one exact -> 6 hits of 8
    pooled = output_metrics(np.concatenate([ref, ref]), np.concatenate([got, ref]))
    assert pooled["score_map"]["f1"] == pytest.approx(12 / 16)
    assert pooled["score_map"]["topk_agreement"] == pytest.approx(0.75)
    assert pooled["worst_channel"] is None  # one channel


def test_constant_output_earns_only_chance_topk():
    ref = np.linspace(0, 1, 16).reshape(1, 1, 1, 4, 4)
    flat = np.full_like(ref, 0.3)  # collapsed: every position ties
    score = output_metrics(ref, flat)["score_map"]
    assert score["positives"] == 8 and score["model_positives"] == 0 and score["f1"] == 0.0
    assert score["topk_agreement"] == pytest.approx(8 / 16)  # k = 8 of 16 at random, not full credit


def test_zero_and_tiny_channels_are_skipped():
    ref = RNG.uniform(1, 2, (5, 1, 4, 6))
    ref[:, :, 1] = 0.0
    ref[:, :, 2] = 1e-9
    got = ref + RNG.normal(0, 0.01, ref.shape)  # noise swamps channels 1 and 2
    m = output_metrics(ref, got)
    assert m["worst_channel"]["index"] in (0, 3) and m["worst_channel"]["cosine"] > 0.99
    zero = output_metrics(np.zeros((2, 1, 3, 4)), RNG.random((2, 1, 3, 4)))
    assert zero["worst_channel"] is None and zero["cosine"] == 0.0


def test_reference_without_positives_has_no_f1():
    ref = np.full((2, 1, 1, 3, 3), 0.2)
    got = ref.copy()
    got[0, 0, 0, 1, 1] = 0.7  # a false alarm
    score = output_metrics(ref, got)["score_map"]
    assert score["positives"] == 0 and score["model_positives"] == 1
    assert score["f1"] is None and score["precision"] is None and score["recall"] is None
    m = output_metrics(ref, got)
    assert not any("F1" in line for line in shortfalls({"samples": 2, "outputs": {"p": m}}, Bar(min_cosine=None)))


def test_shortfalls_one_line_per_failed_criterion_and_summary():
    ref = RNG.random((10, 1, 10))
    got = ref.copy()
    got[:3, 0, :] = got[:3, 0, ::-1]  # 3 of 10 samples' top class moves
    good = RNG.uniform(-1, 1, (10, 1, 3, 5))
    report = compare({"scores": ref, "features": good}, {"scores": got, "features": good + 1e-4}, 10)
    assert list(report["outputs"]) == ["scores", "features"] and report["samples"] == 10
    lines = shortfalls(report, Bar())
    assert lines[0].startswith("scores: cosine 0.") and lines[1] == "scores: top-1 agreement 70.0% < 99.0%"
    assert len(lines) == 2
    assert shortfalls(report, Bar(min_cosine=None, min_top1=0.7)) == []
    s = summary(report)
    assert s["top1"] == 0.7 and s["f1"] is None and s["cosine"] == report["outputs"]["scores"]["cosine"]
    assert s["channel_cosine"] == report["outputs"]["features"]["worst_channel"]["cosine"] > 0.999


def test_nan_output_never_meets_the_bar():
    ref = RNG.uniform(-1, 1, (2, 1, 3, 4))
    got = ref.copy()
    got[0, 0, 1, 2] = np.nan
    report = compare({"y": ref}, {"y": got}, 2)
    assert math.isnan(summary(report)["cosine"])
    assert math.isnan(report["outputs"]["y"]["worst_channel"]["cosine"])
    assert report["outputs"]["y"]["worst_channel"]["index"] == 1
    assert [line.split(":")[1].split()[0] for line in shortfalls(report, Bar())] == ["cosine", "worst"]


def test_measure_feeds_compare_with_stacked_outputs():
    holdout = {"x": RNG.random((3, 1, 2, 5))}

    class Reference:
        def run(self, samples, index):
            return {"y": samples["x"][index] * 2}

    class Model:
        outputs = [{"name": "y", "shape": [1, 2, 5]}]

        def predict(self, feeds):
            return {"y": feeds["x"] * 2 + 0.001}

    report = measure(Model(), Reference(), holdout)
    assert report == compare({"y": holdout["x"] * 2}, {"y": holdout["x"] * 2 + 0.001}, 3)
    assert report["outputs"]["y"]["worst_channel"]["axis"] == 1


def test_table_shows_new_columns_compactly():
    ref = box_score_concat(samples=2)
    got = ref.copy()
    got[:, :, 4:] = 0.0
    scores = RNG.random((2, 1, 10))
    report = compare({"boxes_and_scores_output_with_a_long_name": ref, "scores": scores},
                     {"boxes_and_scores_output_with_a_long_name": got, "scores": scores}, 2)
    text = format_table(report)
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= 110
    assert "worst ch" in lines[1] and "top-1" in lines[1] and "F1" in lines[1]
    assert lines[2].split()[-3:] == ["[4]", "-", "0.000"] and lines[2].split()[-4] == "0.0000"
    assert lines[3].split()[-3:] == ["-", "100.0%", "-"]


def test_a_recurrent_state_shaped_like_class_scores_gets_no_top1():
    """A GRU's hidden state [1, 1, 64] looks like 64 class scores; its argmax means nothing."""
    from packager.fidelity import compare, state_outputs

    states = state_outputs([("frames", [1, 30, 40]), ("h", [1, 1, 64])], [("probs", [1, 12]), ("hn", [1, 1, 64])])
    assert states == {"hn"}
    rng = np.random.default_rng(0)
    refs = {"probs": rng.random((8, 1, 12)), "hn": rng.random((8, 1, 1, 64))}
    report = compare(refs, refs, 8, states)
    assert report["outputs"]["hn"]["top1_agreement"] is None and report["outputs"]["hn"]["cosine"] == 1.0
    assert report["outputs"]["probs"]["top1_agreement"] == 1.0


def test_a_score_map_with_few_positives_is_reported_but_not_judged():
    """Two sure steps in a CTC softmax: one flipped position halves recall; the bar waits for 20 positives."""
    from packager.fidelity import Bar, compare, shortfalls, summary

    ref = np.full((4, 1, 10, 6), 0.1)
    ref[0, 0, 0, 0] = ref[1, 0, 3, 2] = 0.9
    got = ref.copy()
    got[1, 0, 3, 2] = 0.4
    report = compare({"probs": ref}, {"probs": got}, 4)
    assert report["outputs"]["probs"]["score_map"]["f1"] == pytest.approx(2 / 3)
    assert not any("F1" in line for line in shortfalls(report, Bar()))
    assert summary(report)["f1"] == pytest.approx(2 / 3) and summary(report, Bar())["f1"] is None
    assert any("F1" in line for line in shortfalls(report, Bar(min_positives=2)))
