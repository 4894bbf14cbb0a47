"""Measures of detection heads: what survives NMS, int8 against float.

A YOLO-style head ([1, 4+C, N] columns or [1, N, 4+C] rows: centre x, centre
y, width, height, then C class scores) is decoded as its users decode it:
each candidate's best class and score, candidates below the confidence
threshold dropped, class-aware non-maximum suppression at IoU 0.45 (the
defaults of ultralytics' predictor). The int8 detections are then matched
one to one to the float detections of the same class at IoU >= 0.5:
precision, recall and F1. A dead class that fires on no sample costs
nothing here; a collapsed score row costs every detection.

NMS is the usual greedy numpy form (a dozen lines; TensorFlow's op would
pull TensorFlow into the judge of every ladder step).
"""

from __future__ import annotations

import numpy as np

from .maps import greedy_matches

NMS_IOU = 0.45
MATCH_IOU = 0.5
MAX_CANDIDATES = 3000  # best-scored candidates kept before NMS (as ultralytics' max_nms)


def candidates(sample: np.ndarray, layout: str) -> np.ndarray:
    """(N, 4+C) rows of one sample's head output (batch axis of 1 dropped)."""
    head = sample.reshape(sample.shape[-2], sample.shape[-1])
    return head if layout == "rows" else head.T


def decode(rows: np.ndarray, threshold: float, objectness: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(boxes x1y1x2y2, scores, classes) after the threshold and class-aware NMS. With ``objectness`` (YOLOv5's
    [cx, cy, w, h, obj, classes...]) a class's confidence is obj x its score, as YOLOv5's own post-process has it."""
    scores_all = rows[:, 5:] * rows[:, 4:5] if objectness else rows[:, 4:]
    scores_all = np.nan_to_num(scores_all, nan=-np.inf)
    classes = scores_all.argmax(1)
    scores = scores_all[np.arange(len(rows)), classes]
    keep = np.flatnonzero(scores > threshold)
    keep = keep[np.argsort(-scores[keep], kind="stable")][:MAX_CANDIDATES]
    cx, cy, w, h = (np.nan_to_num(rows[keep, i]) for i in range(4))
    boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], 1)
    chosen = nms(boxes, classes[keep])
    return boxes[chosen], scores[keep][chosen], classes[keep][chosen]


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box of ``a`` with every box of ``b`` (x1y1x2y2)."""
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=2)
    area_a = np.prod(np.clip(a[:, 2:] - a[:, :2], 0, None), axis=1)
    area_b = np.prod(np.clip(b[:, 2:] - b[:, :2], 0, None), axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.nan_to_num(inter / (area_a[:, None] + area_b[None, :] - inter))


def nms(boxes: np.ndarray, classes: np.ndarray, iou: float = NMS_IOU) -> np.ndarray:
    """Indices kept by greedy NMS, boxes already sorted by score; boxes of other classes never suppress.

    One kept box against the boxes still alive at a time (no N x N matrix): a candidate model that lets
    thousands of boxes through costs milliseconds, not the seconds a matrix took in every ladder judgement.
    """
    x1, y1, x2, y2 = (boxes[:, k] for k in range(4))
    areas = np.maximum(x2 - x1, 0) * np.maximum(y2 - y1, 0)
    order = np.arange(len(boxes))
    keep = []
    with np.errstate(invalid="ignore", over="ignore"):
        while order.size:
            first, rest = order[0], order[1:]
            keep.append(first)
            inter = (np.maximum(np.minimum(x2[first], x2[rest]) - np.maximum(x1[first], x1[rest]), 0)
                     * np.maximum(np.minimum(y2[first], y2[rest]) - np.maximum(y1[first], y1[rest]), 0))
            # IoU > iou, written without the division (a 0/0 of empty boxes suppresses nothing, as before)
            suppressed = (inter > iou * (areas[first] + areas[rest] - inter)) & (classes[rest] == classes[first])
            order = rest[~suppressed]
    return np.asarray(keep, dtype=int)


def measure(ref: np.ndarray, got: np.ndarray, layout: str, threshold: float, objectness: bool = False) -> dict:
    """Detections of both models on every sample, matched per class at IoU >= 0.5: precision, recall, F1."""
    wanted = found = matched = 0
    for r, g in zip(ref, got):
        rb, _, rc = decode(candidates(r, layout), threshold, objectness)
        gb, _, gc = decode(candidates(g, layout), threshold, objectness)
        wanted, found = wanted + len(rb), found + len(gb)
        for c in np.intersect1d(rc, gc):
            matched += greedy_matches(iou_matrix(rb[rc == c], gb[gc == c]), MATCH_IOU)
    out = {"threshold": threshold, "detections": wanted, "model_detections": found, "matched": matched}
    if not wanted and not found:
        return {**out, "precision": None, "recall": None, "f1": None}
    return {**out, "precision": matched / found if found else 0.0, "recall": matched / wanted if wanted else 0.0,
            "f1": 2 * matched / (wanted + found)}
