"""The judge: each output by its kind's task figure against the bar, on synthetic arrays."""

import math

import numpy as np
import pytest

from packager.fidelity import (Bar, compare, format_table, margin, rate_shown, samples_to_show, shortfalls, summary,
                               unresolved, worst_channel)
from packager.kinds import OutputKind

RNG = np.random.default_rng(0)


def yolo_head(samples=6, anchors=400, classes=4, dead=None):
    """[N, 1, 4+C, A] as a YOLOv8 head: xywh in pixels, then sigmoid scores; 3 objects a sample.

    ``dead``: a class whose scores stay at 3e-3 (it never fires on these samples)."""
    ref = np.empty((samples, 1, 4 + classes, anchors))
    ref[:, :, 0:2] = RNG.uniform(20, 600, (samples, 1, 2, anchors))
    ref[:, :, 2:4] = RNG.uniform(10, 60, (samples, 1, 2, anchors))
    ref[:, :, 4:] = RNG.uniform(0, 0.1, (samples, 1, classes, anchors))
    for n in range(samples):
        for k, anchor in enumerate(RNG.choice(anchors, 3, replace=False)):
            ref[n, 0, 4 + (k % (classes - 1)), anchor] = 0.9
    if dead is not None:
        ref[:, :, 4 + dead] = 3e-3
    return ref


DETECTIONS = OutputKind("detections", threshold=0.25, layout="columns")


def test_an_int8_head_whose_dead_class_rounds_to_zero_keeps_its_detections():
    ref = yolo_head(dead=3)
    got = ref + RNG.normal(0, 0.3, ref.shape) * (np.arange(ref.shape[2]) < 4)[None, None, :, None]
    got[:, :, 4:] = np.round(got[:, :, 4:] / 0.02) * 0.02  # one int8 step: the dead class is 0 everywhere
    report = compare({"y": ref}, {"y": got}, len(ref), {"y": DETECTIONS})
    m = report["outputs"]["y"]
    assert worst_channel(ref, got)["cosine"] == pytest.approx(0.0)  # the proxy that refused it
    assert m["detections"] == 18 and m["matched"] == 18 and m["f1"] == 1.0
    assert shortfalls(report, Bar()) == [] and margin(report, Bar()) >= 1


def test_scores_collapsed_in_a_joined_box_score_tensor_lose_every_detection():
    ref = yolo_head()
    got = ref.copy()
    got[:, :, 4:] = 0.0  # one int8 scale for boxes (0..640) and scores: every score rounds to 0
    report = compare({"y": ref}, {"y": got}, len(ref), {"y": DETECTIONS})
    m = report["outputs"]["y"]
    assert m["cosine"] > 0.99  # the boxes dominate the norm: the cosine is fooled
    assert m["f1"] == 0.0 and m["model_detections"] == 0
    assert shortfalls(report, Bar()) == ["y: detections after NMS F1 0.000 < 0.98 (matched 0 of 18 float, 0 found)"]


def test_a_weak_class_channel_of_a_channels_last_map_is_judged_on_its_own():
    """A proposal net's [1, H, W, 2] softmax: background lights ~everything, the face channel a few cells."""
    ref = np.zeros((4, 1, 24, 24, 2))
    ref[..., 1] = 0.05
    ref[:, 0, 5:9, 5:9, 1] = 0.9  # one face a sample, 16 cells
    ref[..., 0] = 1 - ref[..., 1]
    got = ref.copy()
    got[:, 0, 5:9, 7:9, 1] = 0.55  # int8 lost half of every face below 0.6
    got[..., 0] = 1 - got[..., 1]
    kind = OutputKind("scores", threshold=0.6, axis=3)
    report = compare({"prob": ref}, {"prob": got}, 4, {"prob": kind})
    face = report["outputs"]["prob"]["channels"][1]
    assert face["positives"] == 64 and face["model_positives"] == 32 and face["f1"] == pytest.approx(2 / 3)
    assert face["regions"] == {"regions": 4, "model_regions": 4, "matched": 4, "precision": 1.0, "recall": 1.0,
                               "f1": 1.0}  # half of each face still overlaps it at IoU 0.5
    pooled = (64 * 2 / 3 * 2 + 2 * 2200) / (64 + 2200 * 2)
    assert pooled > 0.95  # what pooling both channels would have said
    lines = shortfalls(report, Bar())
    assert len(lines) == 1 and lines[0].startswith("prob: channel 1 (axis 3) F1 0.667 < 0.95 above 0.6")


def test_score_channels_without_enough_positives_are_not_judged():
    ref = np.full((4, 1, 1, 10, 6), 0.1)
    ref[0, 0, 0, 0, 0] = ref[1, 0, 0, 3, 2] = 0.9
    got = ref.copy()
    got[1, 0, 0, 3, 2] = 0.4
    kind = {"p": OutputKind("scores", threshold=0.5, axis=1)}
    report = compare({"p": ref}, {"p": got}, 4, kind)
    assert report["outputs"]["p"]["channels"][0]["f1"] == pytest.approx(2 / 3)
    assert shortfalls(report, Bar()) == [] and summary(report, Bar())["f1"] is None
    assert shortfalls(report, Bar(min_positives=2))[0].startswith("p: channel 0 (axis 1) F1 0.667")


def test_a_regression_head_is_judged_by_cosine_never_top1():
    landmarks = RNG.uniform(0, 1, (30, 1, 10))
    got = landmarks + RNG.normal(0, 0.01, landmarks.shape)  # argmax of 10 coordinates flips often
    report = compare({"landmarks": landmarks}, {"landmarks": got}, 30, {"landmarks": OutputKind("regression")})
    m = report["outputs"]["landmarks"]
    assert "top1_agreement" not in m and m["cosine"] > 0.99 and m["relative_error"] < 0.05
    assert shortfalls(report, Bar()) == []
    classes = compare({"landmarks": landmarks}, {"landmarks": got}, 30, {"landmarks": OutputKind("classes", axis=1)})
    assert classes["outputs"]["landmarks"]["top1_agreement"] < 0.99  # what calling it classes would have refused


def test_per_position_tags_are_judged_per_position():
    ref = RNG.random((5, 1, 64, 75))
    got = ref.copy()
    got[0, 0, :6] = got[0, 0, :6, ::-1]  # sample 0: 6 of 64 positions change class
    report = compare({"tags": ref}, {"tags": got}, 5, {"tags": OutputKind("tags", axis=2)})
    m = report["outputs"]["tags"]
    assert m["top1_agreement"] == pytest.approx(1 - 6 / 320) and m["worst_sample_top1"] == pytest.approx(58 / 64)
    assert shortfalls(report, Bar()) == ["tags: per-position top-1 agreement 98.1% < 99.0%"]


def test_ctc_strings_exact_match_and_cer():
    alphabet = ("a", "b", "c")
    seq = np.full((2, 1, 8, 4), 0.01)
    for n, classes in enumerate([[1, 1, 0, 2, 0, 0, 3, 3], [2, 0, 2, 0, 1, 0, 0, 0]]):
        seq[n, 0, np.arange(8), classes] = 0.97  # "abc" and "bba"
    got = seq.copy()
    got[1, 0, 2] = 0.01
    got[1, 0, 2, 0] = 0.97  # the second b became a blank: "ba"
    kind = {"y": OutputKind("ctc", axis=2, blank=0, alphabet=alphabet)}
    m = compare({"y": seq}, {"y": got}, 2, kind)["outputs"]["y"]
    assert m["exact_match"] == 0.5 and m["cer"] == pytest.approx(1 / 6) and m["examples"] == [("bba", "ba")]
    assert shortfalls({"outputs": {"y": m}}, Bar()) == ["y: CTC strings equal to float's 50.0% < 99.0% (CER 16.67%)"]


def test_embeddings_by_cosine_and_nearest_neighbours():
    ref = RNG.normal(size=(12, 1, 32))
    ref /= np.linalg.norm(ref, axis=2, keepdims=True)
    m = compare({"e": ref}, {"e": ref * 1.001}, 12, {"e": OutputKind("embedding")})["outputs"]["e"]
    assert m["neighbour_agreement"] == 1.0 and m["cosine"] == pytest.approx(1.0)


def test_nan_output_never_meets_the_bar():
    ref = RNG.uniform(-1, 1, (2, 1, 3, 4))
    got = ref.copy()
    got[0, 0, 1, 2] = np.nan
    for kind in (OutputKind("regression"), OutputKind("tags", axis=2)):
        report = compare({"y": ref}, {"y": got}, 2, {"y": kind})
        assert math.isnan(summary(report)["cosine"])
        assert shortfalls(report, Bar()) and margin(report, Bar()) == -math.inf or kind.kind == "tags"
    assert any("NaN" in line for line in shortfalls(compare({"y": ref}, {"y": got}, 2, {"y": OutputKind(
        "tags", axis=2)}), Bar()))


def test_kinds_are_inferred_from_values_when_not_given():
    probs = RNG.dirichlet(np.ones(6), size=(8, 1))
    report = compare({"probs": probs, "head": yolo_head(samples=8)}, {"probs": probs, "head": yolo_head(samples=8)}, 8)
    assert report["outputs"]["probs"]["kind"] == "classes" and report["outputs"]["head"]["kind"] == "detections"


def test_summary_margin_and_table():
    ref = RNG.dirichlet(np.ones(10), size=(10, 1))
    got = ref.copy()
    got[:3, 0, :] = got[:3, 0, ::-1]  # 3 of 10 samples' top class moves
    kinds = {"scores": OutputKind("classes", axis=1), "features": OutputKind("regression")}
    good = RNG.uniform(-1, 1, (10, 1, 3, 5))
    report = compare({"scores": ref, "features": good}, {"scores": got, "features": good + 1e-4}, 10, kinds)
    assert shortfalls(report, Bar()) == ["scores: top-1 agreement 70.0% < 99.0%"]
    # 10 samples can show a 70% bar: 7 of 10 is judged at one standard error, 54.2%
    assert shortfalls(report, Bar(min_top1=0.7)) == [
        "scores: top-1 agreement 70.0% (7 of 10; 54.2% at one standard error) < 70.0%"]
    assert shortfalls(report, Bar(min_top1=0.5)) == []
    s = summary(report)
    assert s["top1"] == 0.7 and s["f1"] is None and s["detection_f1"] is None
    assert margin(report, Bar()) == pytest.approx(0.7 / 0.99)
    lines = format_table(report).splitlines()
    assert max(len(line) for line in lines) <= 100
    assert lines[2].split()[:2] == ["scores", "classes"] and lines[2].endswith("top-1 70.0%")
    assert lines[3].split()[:2] == ["features", "regression"] and "rel err" in lines[3]


def test_a_held_out_set_too_small_to_show_a_rate_bar_is_said_with_what_would_show_it():
    kinds = {"logits": OutputKind("ctc", blank=0, axis=1), "probs": OutputKind("classes", axis=0),
             "mask": OutputKind("scores", threshold=0.3), "tags": OutputKind("tags", axis=1)}
    lines = unresolved(kinds, 24, Bar())
    assert len(lines) == 2  # rates over samples only: per-position tags and score maps count far more
    strings, top1 = lines
    assert strings.startswith("logits: its strings judged on 24 held-out samples: all 24 agreeing shows 96.0% at "
                              "one standard error, so the 99% bar is not shown")
    assert strings.endswith("100 held-out samples show it (--calibration with 500 samples)")
    assert top1.startswith("probs: its top-1 judged on 24")
    assert unresolved(kinds, 100, Bar()) == []  # 100 of 100 show 99.01%
    assert unresolved(kinds, 19, Bar(min_top1=0.95, min_exact_match=None)) == []  # 19 of 19 show 95%
    assert len(unresolved(kinds, 18, Bar(min_top1=0.95, min_exact_match=None))) == 1


def _strings(samples: int, misses: int) -> dict:
    """A CTC report: ``samples`` lines, ``misses`` of them one symbol off."""
    ref = np.zeros((samples, 1, 8, 3))
    ref[:, 0, ::2, 1] = 5.0  # 4 symbols of class 1 between blanks
    got = ref.copy()
    got[:misses, 0, 0, 2] = 9.0  # the first symbol read as class 2
    return compare({"y": ref}, {"y": got}, samples, {"y": OutputKind("ctc", blank=0, axis=2)})


def test_a_rate_that_samples_can_show_is_held_to_the_bar_at_one_standard_error():
    assert samples_to_show(0.99) == 100 and rate_shown(1.0, 100) >= 0.99 > rate_shown(1.0, 99)
    assert shortfalls(_strings(300, 0), Bar()) == [] and shortfalls(_strings(300, 1), Bar()) == []
    # 297 of 300 is 99.0%, the bar itself: seen once, it does not show that 99% of new lines would match
    below = shortfalls(_strings(300, 3), Bar())
    assert below == ["y: CTC strings equal to float's 99.0% (297 of 300; 98.2% at one standard error) < 99.0% "
                     "(CER 0.25%)"]
    assert margin(_strings(300, 3), Bar()) == pytest.approx(1.0)  # the searches see what was measured
    # fewer samples than a perfect score needs to show the bar: judged by what was seen
    assert shortfalls(_strings(24, 0), Bar()) == []
    assert shortfalls(_strings(24, 1), Bar()) == ["y: CTC strings equal to float's 95.8% < 99.0% (CER 1.04%)"]
