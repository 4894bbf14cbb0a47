"""The task measures' building blocks: detection decoding and NMS, regions, greedy CTC."""

import numpy as np

from packager.kinds import detections, maps, sequences


def test_nms_keeps_the_best_of_overlapping_boxes_of_one_class_only():
    rows = np.array([
        [50, 50, 20, 20, 0.9, 0.0],   # class 0, best
        [52, 50, 20, 20, 0.8, 0.0],   # overlaps it (IoU ~0.82): suppressed
        [52, 50, 20, 20, 0.0, 0.7],   # same place, class 1: kept
        [150, 50, 20, 20, 0.6, 0.0],  # elsewhere: kept
        [250, 50, 20, 20, 0.2, 0.1],  # below the threshold
    ], dtype=np.float64)
    boxes, scores, classes = detections.decode(rows, 0.25)
    assert scores.tolist() == [0.9, 0.7, 0.6] and classes.tolist() == [0, 1, 0]
    assert boxes[0].tolist() == [40, 40, 60, 60]


def _matrix_nms(boxes, classes, iou=detections.NMS_IOU):
    """The textbook form: the whole IoU matrix, then one greedy pass."""
    overlap = detections.iou_matrix(boxes, boxes)
    overlap[classes[:, None] != classes[None, :]] = 0
    alive = np.ones(len(boxes), dtype=bool)
    for i in range(len(boxes)):
        if alive[i]:
            alive[i + 1:] &= overlap[i, i + 1:] <= iou
    return np.flatnonzero(alive)


def test_nms_keeps_what_the_whole_matrix_form_keeps():
    """Crowded boxes of 3 classes, some empty (zero width) and some identical: the same indices kept."""
    rng = np.random.default_rng(7)
    for _ in range(20):
        n = int(rng.integers(0, 400))
        centre, size = rng.uniform(0, 100, (n, 2)), rng.uniform(0, 30, (n, 2)) * (rng.uniform(size=(n, 1)) > 0.05)
        boxes = np.concatenate([centre - size / 2, centre + size / 2], 1)
        boxes[: n // 10] = boxes[n // 10: 2 * (n // 10)]
        classes = rng.integers(0, 3, n)
        assert detections.nms(boxes, classes).tolist() == _matrix_nms(boxes, classes).tolist()


def test_yolov5_rows_multiply_objectness_into_the_class_scores():
    rows = np.array([
        [50, 50, 20, 20, 0.9, 0.8, 0.1],    # an object of class 0: 0.72
        [150, 50, 20, 20, 0.1, 0.05, 0.9],  # background with a confident class score: 0.09, dropped
        [250, 50, 20, 20, 0.5, 0.2, 0.6],   # class 1: 0.3
    ])
    boxes, scores, classes = detections.decode(rows, 0.25, objectness=True)
    assert np.allclose(scores, [0.72, 0.3]) and classes.tolist() == [0, 1] and boxes[1].tolist() == [240, 40, 260, 60]
    assert len(detections.decode(rows, 0.25)[0]) == 3  # the objectness read as a class: the background kept


def test_columns_and_rows_layouts_decode_alike():
    rows = np.array([[50, 50, 20, 20, 0.9], [150, 50, 20, 20, 0.6]])
    a = detections.measure(rows.T[None, None], rows.T[None, None], "columns", 0.25)
    b = detections.measure(rows[None, None], rows[None, None], "rows", 0.25)
    assert a == b and a["f1"] == 1.0 and a["detections"] == 2


def test_regions_match_one_to_one_at_iou_half():
    want = np.zeros((1, 10, 10), bool)
    want[0, 1:4, 1:4] = want[0, 6:9, 6:9] = True  # two regions
    have = np.zeros_like(want)
    have[0, 1:4, 2:5] = True  # 6 of 12 pixels: IoU 0.5 with the first
    have[0, 6:7, 6:7] = True  # a sliver of the second: IoU 1/9
    r = maps.regions(want, have)
    assert (r["regions"], r["model_regions"], r["matched"]) == (2, 2, 1) and r["f1"] == 0.5


def test_greedy_ctc_collapses_repeats_and_drops_blanks():
    steps = np.eye(4)[[1, 1, 0, 1, 2, 2, 0, 0]]
    assert sequences.greedy(steps, 0) == (1, 1, 2)
    assert sequences.edit_distance((1, 2, 3), (1, 3)) == 1 and sequences.edit_distance((), (1, 2)) == 2
