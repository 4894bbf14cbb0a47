"""Stage 7: how close the int8 model is to the float ONNX model.

Measured on held-out samples that never calibrated the model, the int8 side
run through edge_runtime exactly as on the device, the float side in
onnxruntime. A single cosine per output can be fooled: a tensor that joins box
coordinates (0..640) with class scores (0..1) keeps a cosine near 1 when every
score collapses to 0. So per output, besides cosine and errors:

- the worst channel (slices along the ONNX channel axis, pooled over samples),
- top-1/top-5 agreement where the output is a vector of class scores,
- for score-like positions (values in [0, 1]), agreement of the positions
  above a threshold (precision/recall/F1) and of the top-k.

``output_metrics`` and ``compare`` are pure functions on arrays, so the
precision ladder can judge any candidate without a bundle; ``shortfalls``
says which part of the bar a report misses.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np


from .layout import cosine
from .reference import Reference

ZERO_CHANNEL = 1e-6  # a channel this small relative to the whole output carries nothing
MAX_TOPK = 100


def is_class_scores(shape: list[int]) -> bool:
    """One axis (the last) longer than 1, the rest 1: a score per class."""
    return len(shape) >= 1 and shape[-1] >= 2 and all(d == 1 for d in shape[:-1])


def measure(model, reference: Reference, holdout: dict[str, np.ndarray]) -> dict:
    """Compare the int8 model against onnxruntime on held-out samples.

    Args:
        model: an edge_runtime Model on the new int8 model.
        reference: onnxruntime on the shape-fixed ONNX model.
        holdout: (N, *shape) per input, never used for calibration.

    Returns:
        {"samples": N, "outputs": {name: metrics}} for the manifest.
    """
    count = len(next(iter(holdout.values())))
    runs = [reference.run(holdout, i) for i in range(count)]
    got = model.predict({k: v for k, v in holdout.items()})  # stacked (N, *shape) in, stacked out
    names = [spec["name"] for spec in model.outputs]
    refs = {name: np.stack([r[name] for r in runs]) for name in names}
    return compare(refs, {name: got[name] for name in names}, count)


def compare(refs: dict[str, np.ndarray], got: dict[str, np.ndarray], samples: int,
            states: frozenset[str] | set[str] = frozenset()) -> dict:
    """The fidelity report of stacked outputs against stacked references.

    Args:
        refs: {output name: (N, *ONNX output shape)} from the float model.
        got: the same for the model under test; same names and shapes.
        samples: N, recorded in the report.
        states: outputs that are recurrent states (see ``state_outputs``): a
            hidden state [1, 1, 64] is shaped like class scores, but its argmax
            means nothing (float32 itself "disagrees" on near-ties).

    Returns:
        {"samples": N, "outputs": {name: output_metrics(...)}}, in refs' order.
    """
    missing = [name for name in refs if name not in got]
    if missing:
        raise ValueError(f"no values for output(s) {missing} to compare")
    return {"samples": samples, "outputs": {name: output_metrics(refs[name], got[name], state=name in states)
                                            for name in refs}}


def state_outputs(inputs: list[tuple[str, list[int]]], outputs: list[tuple[str, list[int]]]) -> set[str]:
    """Outputs shaped like an input of the model: the state a recurrent model hands back to itself."""
    shapes = {tuple(shape) for _, shape in inputs}
    return {name for name, shape in outputs if tuple(shape) in shapes and len(shape) >= 2}


def output_metrics(ref: np.ndarray, got: np.ndarray, score_threshold: float = 0.5, state: bool = False) -> dict:
    """Every fidelity figure of one output.

    Args:
        ref: (N, *ONNX output shape) float reference, N samples stacked.
        got: the model under test, same shape.
        score_threshold: a score-map position is positive above this.
        state: a recurrent state output: cosine and errors only.

    Returns:
        cosine (mean over samples), min_cosine, max_abs_error, mean_abs_error,
        top1_agreement and top5_agreement (class scores only, else None),
        worst_channel and score_map (None where they do not apply).
    """
    ref = np.asarray(ref, dtype=np.float64)
    got = np.asarray(got, dtype=np.float64)
    if ref.shape != got.shape or ref.ndim < 1:
        raise ValueError(f"cannot compare output of shape {got.shape} with reference of shape {ref.shape}")
    count = len(ref)
    shape = list(ref.shape[1:])
    with np.errstate(invalid="ignore", over="ignore"):  # Inf outputs: reported as NaN, not raised
        cosines = [cosine(r, o) for r, o in zip(ref, got)]
        err = np.abs(ref - got)
    classes = is_class_scores(shape) and not state
    flat_ref, flat_got = ref.reshape(count, -1), got.reshape(count, -1)
    return {
        "cosine": float(np.mean(cosines)),
        "min_cosine": float(np.min(cosines)),
        "max_abs_error": float(err.max()),
        "mean_abs_error": float(err.mean()),
        "top1_agreement": float(np.mean(flat_ref.argmax(1) == flat_got.argmax(1))) if classes else None,
        "top5_agreement": _topk_agreement(flat_ref, flat_got, 5) if classes and shape[-1] >= 5 else None,
        "worst_channel": None if classes or state else _worst_channel(ref, got),
        "score_map": None if classes or state else _score_map(ref, got, score_threshold),
    }


def channel_axis(shape: list[int]) -> int | None:
    """The channel axis of a per-sample ONNX shape, or None when there is none.

    Axis 1 from rank 3 on (NCHW, NCL, [1, T, C] by step, [1, 84, 8400] by
    row), the last axis of a rank-2 shape; None for fewer than two channels.
    """
    if len(shape) < 2:
        return None
    axis = 1 if len(shape) >= 3 else len(shape) - 1
    return axis if shape[axis] >= 2 else None


def _channels(array: np.ndarray, axis: int) -> np.ndarray:
    """(C, everything else) for per-sample channel ``axis`` of stacked ``array``."""
    moved = np.moveaxis(array, axis + 1, 0)
    return moved.reshape(moved.shape[0], -1)


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine; two zero rows agree (1), one zero row does not (0)."""
    na, nb = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        value = np.sum(a * b, axis=1) / (na * nb)
    value = np.where((na == 0) & (nb == 0), 1.0, np.where((na == 0) | (nb == 0), 0.0, value))
    return np.clip(value, -1.0, 1.0)  # NaN (from NaN/Inf outputs) stays NaN


def _worst_channel(ref: np.ndarray, got: np.ndarray) -> dict | None:
    """The channel whose values, pooled over samples, agree least.

    Channels whose reference is (nearly) all zero are skipped: any noise
    there would dominate the figure and they carry nothing.
    """
    axis = channel_axis(list(ref.shape[1:]))
    if axis is None:
        return None
    r, g = _channels(ref, axis), _channels(got, axis)
    peak = np.abs(r).max(axis=1)
    live = np.flatnonzero((peak > 0) & (peak > ZERO_CHANNEL * peak.max()))
    if len(live) == 0:
        return None
    values = _cosines(r[live], g[live])
    worst = int(np.argmin(np.where(np.isnan(values), -np.inf, values)))
    return {"axis": axis, "index": int(live[worst]), "cosine": float(values[worst])}


def _score_positions(ref: np.ndarray) -> np.ndarray | None:
    """Mask over one sample's positions that hold scores, or None.

    From rank 3 on, the channels (axis 1) whose reference stays in [0, 1]:
    the score rows of a box+score concat, not its box rows. Below rank 3 the
    whole output, when all of it stays in [0, 1].
    """
    shape = ref.shape[1:]
    if len(shape) >= 3:
        per = np.moveaxis(ref, 2, 0).reshape(shape[1], -1)
        inside = (per.min(axis=1) >= 0) & (per.max(axis=1) <= 1)
        if not inside.any():
            return None
        view = [1] * len(shape)
        view[1] = shape[1]
        return np.broadcast_to(inside.reshape(view), shape)
    if ref.size and ref.min() >= 0 and ref.max() <= 1:
        return np.ones(shape, dtype=bool)
    return None


def _score_map(ref: np.ndarray, got: np.ndarray, threshold: float) -> dict | None:
    """Agreement of the positions above ``threshold`` and of the top-k.

    F1 is None when the reference has no positive anywhere: nothing to find.
    """
    mask = _score_positions(ref)
    if mask is None:
        return None
    count = len(ref)
    r = ref[:, mask].reshape(count, -1)
    g = got[:, mask].reshape(count, -1)
    want, have = r > threshold, g > threshold
    positives, found = int(want.sum()), int(have.sum())
    hits = int((want & have).sum())
    precision = recall = f1 = None
    if positives:
        recall = hits / positives
        precision = hits / found if found else 0.0
        f1 = 2 * hits / (positives + found)
    k = min(MAX_TOPK, r.shape[1], max(1, round(positives / count)))
    return {
        "threshold": threshold,
        "positives": positives,
        "model_positives": found,
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "topk_agreement": _topk_agreement(r, g, k),
    }


def _topk_weights(values: np.ndarray, k: int) -> np.ndarray:
    """Per row, the chance each position is in the top k when ties break at random.

    int8 outputs take few distinct values, so ties are common; an arbitrary
    tie-break would make agreement depend on position order. A constant row
    gives every position k/n: what random guessing earns, not full credit.
    """
    cut = values.shape[1] - k
    kth = np.partition(values, cut, axis=1)[:, cut : cut + 1]
    above = values > kth
    tied = values == kth
    share = (k - above.sum(axis=1, keepdims=True)) / np.maximum(tied.sum(axis=1, keepdims=True), 1)
    return above + tied * share


def _topk_agreement(ref: np.ndarray, got: np.ndarray, k: int) -> float:
    """Mean over samples (rows) of |topk(ref) ∩ topk(got)| / k."""
    if np.isnan(got).any():
        got = np.where(np.isnan(got), -np.inf, got)  # a NaN is never a top score
    overlap = np.sum(_topk_weights(ref, k) * _topk_weights(got, k), axis=1) / k
    return float(np.mean(overlap))


@dataclasses.dataclass(frozen=True)
class Bar:
    """The fidelity a model must reach on held-out samples; None skips a criterion."""

    min_cosine: float | None = 0.99  # every output's mean cosine
    min_top1: float | None = 0.99  # where top-1 applies
    min_f1: float | None = 0.95  # where a score map applies (f1 not None)
    min_channel_cosine: float | None = 0.9  # worst channel, where it applies
    # F1 judges a score map only with this many positives in the reference: with 2 or 3 (a CTC softmax whose
    # steps are rarely sure) one position flips F1 by 0.3, which says nothing about the model.
    min_positives: int = 20


def _below(value: float, bar: float | None) -> bool:
    """Under the bar; NaN counts as under (a NaN output is never good enough)."""
    return bar is not None and not value >= bar


def shortfalls(report: dict, bar: Bar) -> list[str]:
    """One line per output and criterion that misses ``bar``; [] when it is met."""
    lines = []
    for name, m in report["outputs"].items():
        if _below(m["cosine"], bar.min_cosine):
            lines.append(f"{name}: cosine {m['cosine']:.4f} < {bar.min_cosine}")
        channel = m.get("worst_channel")
        if channel and _below(channel["cosine"], bar.min_channel_cosine):
            lines.append(
                f"{name}: worst channel {channel['index']} (axis {channel['axis']}) "
                f"cosine {channel['cosine']:.3f} < {bar.min_channel_cosine}"
            )
        if m.get("top1_agreement") is not None and _below(m["top1_agreement"], bar.min_top1):
            lines.append(f"{name}: top-1 agreement {m['top1_agreement']:.1%} < {bar.min_top1:.1%}")
        score = m.get("score_map")
        if _judged(score, bar) and _below(score["f1"], bar.min_f1):
            lines.append(
                f"{name}: score map F1 {score['f1']:.3f} < {bar.min_f1} (above {score['threshold']}: "
                f"precision {score['precision']:.3f}, recall {score['recall']:.3f})"
            )
    return lines


def _lowest(values: list[float]) -> float | None:
    """The smallest value, NaN first; None for none."""
    if not values:
        return None
    return next((v for v in values if math.isnan(v)), min(values))


def _judged(score: dict | None, bar: Bar | None) -> bool:
    """A score map whose F1 the bar judges: it has an F1 and (given a bar) enough positives."""
    return bool(score) and score["f1"] is not None and (bar is None or score["positives"] >= bar.min_positives)


def summary(report: dict, bar: Bar | None = None) -> dict:
    """The worst figure of each kind over all outputs: one ladder row (F1 only where ``bar`` judges it)."""
    outputs = report["outputs"].values()
    return {
        "cosine": _lowest([m["cosine"] for m in outputs]),
        "channel_cosine": _lowest([m["worst_channel"]["cosine"] for m in outputs if m.get("worst_channel")]),
        "top1": _lowest([m["top1_agreement"] for m in outputs if m.get("top1_agreement") is not None]),
        "f1": _lowest([m["score_map"]["f1"] for m in outputs if _judged(m.get("score_map"), bar)]),
    }


def format_table(report: dict, precision: str = "int8") -> str:
    """The fidelity figures as a small table for the terminal (under 100 columns)."""
    rows = [f"{precision} vs float ONNX on {report['samples']} held-out samples:",
            f"  {'output':<24} {'cosine':>8} {'min cos':>8} {'max|err|':>9} {'mean|err|':>9} "
            f"{'worst ch [i]':>14} {'top-1':>7} {'F1':>6}"]
    for name, m in report["outputs"].items():
        ch, top1 = m.get("worst_channel"), m.get("top1_agreement")
        f1 = (m.get("score_map") or {}).get("f1")
        ch_text = f"{ch['cosine']:.4f} [{ch['index']}]" if ch else "-"
        top1_text = f"{top1:.1%}" if top1 is not None else "-"
        f1_text = f"{f1:.3f}" if f1 is not None else "-"
        rows.append(
            f"  {name[:24]:<24} {m['cosine']:8.5f} {m['min_cosine']:8.5f} "
            f"{m['max_abs_error']:9.4g} {m['mean_abs_error']:9.4g} {ch_text:>14} {top1_text:>7} {f1_text:>6}"
        )
    return "\n".join(rows)
