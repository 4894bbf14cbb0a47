"""Measures of score maps: per channel, the positions above the threshold, and the regions they form.

A map that pools its channels lets the background channel of a 2-way
softmax (positive almost everywhere) hide the face channel; so every channel
is measured on its own, on the model's real channel axis (channels-first or
channels-last, from the graph: packager.kinds.infer). A channel that neither
model lights above the threshold is not judged.

For 2-D maps (a text detector's probability map, a proposal net's face map)
the connected regions above the threshold are what the user's post-process
turns into boxes: each model's regions are labelled (scipy.ndimage, 8-connected)
and matched one to one at IoU >= 0.5.
"""

from __future__ import annotations

import numpy as np

MATCH_IOU = 0.5
MIN_SIDE = 4  # a map is 2-D when two of its axes are at least this long


def channel_figures(ref: np.ndarray, got: np.ndarray, axis: int | None, threshold: float) -> list[dict]:
    """One dict per channel: positives of each model, precision, recall, F1 (None when neither has any),
    and the regions of 2-D maps."""
    count = len(ref)
    channels = 1 if axis is None else ref.shape[axis + 1]
    out = []
    for c in range(channels):
        r = ref if axis is None else np.take(ref, c, axis=axis + 1)
        g = got if axis is None else np.take(got, c, axis=axis + 1)
        want, have = r.reshape(count, -1) > threshold, g.reshape(count, -1) > threshold
        figures = {"index": c, **_f1(int(want.sum()), int(have.sum()), int((want & have).sum()))}
        plane = _plane_shape(r.shape[1:])
        if plane is not None and figures["f1"] is not None:
            figures["regions"] = regions(want.reshape(count, *plane), have.reshape(count, *plane))
        out.append(figures)
    return out


def _f1(positives: int, found: int, hits: int) -> dict:
    if not positives and not found:
        return {"positives": 0, "model_positives": 0, "precision": None, "recall": None, "f1": None}
    precision = hits / found if found else 0.0
    recall = hits / positives if positives else 0.0
    return {"positives": positives, "model_positives": found, "precision": precision, "recall": recall,
            "f1": 2 * hits / (positives + found)}


def _plane_shape(shape: tuple[int, ...]) -> tuple[int, int] | None:
    """(H, W) when a channel's map is 2-D (two axes >= MIN_SIDE, every other axis 1)."""
    big = [d for d in shape if d > 1]
    if len(big) == 2 and min(big) >= MIN_SIDE:
        return big[0], big[1]
    return None


def regions(want: np.ndarray, have: np.ndarray) -> dict:
    """Connected regions of (N, H, W) masks, each model's, matched one to one at IoU >= MATCH_IOU."""
    from scipy import ndimage

    structure = np.ones((3, 3), dtype=bool)
    total_r = total_g = matched = 0
    for w, h in zip(want, have):
        lw, nw = ndimage.label(w, structure)
        lh, nh = ndimage.label(h, structure)
        total_r, total_g = total_r + nw, total_g + nh
        if nw and nh:
            matched += _matches(lw, nw, lh, nh)
    return {"regions": total_r, "model_regions": total_g, "matched": matched, **_prf(total_r, total_g, matched)}


def _matches(lw: np.ndarray, nw: int, lh: np.ndarray, nh: int) -> int:
    """Greedy one-to-one matching of two labellings by IoU (highest first)."""
    pairs = np.bincount((lw * (nh + 1) + lh).ravel(), minlength=(nw + 1) * (nh + 1)).reshape(nw + 1, nh + 1)
    inter = pairs[1:, 1:].astype(np.float64)
    area_w, area_h = pairs[1:, :].sum(1), pairs[:, 1:].sum(0)
    iou = inter / (area_w[:, None] + area_h[None, :] - inter)
    return greedy_matches(iou)


def greedy_matches(iou: np.ndarray, at_least: float = MATCH_IOU) -> int:
    """How many one-to-one pairs reach ``at_least``, taking the highest IoU first."""
    count = 0
    iou = iou.copy()
    while iou.size:
        i, j = np.unravel_index(np.argmax(iou), iou.shape)
        if iou[i, j] < at_least:
            break
        count += 1
        iou[i, :], iou[:, j] = -1, -1
    return count


def _prf(wanted: int, found: int, matched: int) -> dict:
    if not wanted and not found:
        return {"precision": None, "recall": None, "f1": None}
    return {"precision": matched / found if found else 0.0, "recall": matched / wanted if wanted else 0.0,
            "f1": 2 * matched / (wanted + found)}
