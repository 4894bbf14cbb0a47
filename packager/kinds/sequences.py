"""Measures of class outputs: one class per sample (classes), per position (tags), or a CTC sequence (ctc).

Arrays arrive stacked: (N samples, *ONNX output shape); ``axis`` is the
class axis of the ONNX shape. Every other axis of size > 1 is a position.
"""

from __future__ import annotations

import numpy as np

MAX_EXAMPLES = 3


def rows(array: np.ndarray, axis: int) -> np.ndarray:
    """(N, positions, classes): the class axis last, every other per-sample axis folded into positions."""
    moved = np.moveaxis(array, axis + 1, -1)
    return moved.reshape(len(array), -1, moved.shape[-1])


def _nan_low(values: np.ndarray) -> np.ndarray:
    """A NaN is never the top class."""
    return np.where(np.isnan(values), -np.inf, values) if np.isnan(values).any() else values


def classes(ref: np.ndarray, got: np.ndarray, axis: int) -> dict:
    """Top-1 and top-5 agreement of the sample's class (positions beside it are 1)."""
    r, g = rows(ref, axis)[:, 0], _nan_low(rows(got, axis)[:, 0])
    top1 = float(np.mean(r.argmax(1) == g.argmax(1)))
    return {"top1_agreement": top1, "top5_agreement": _topk(r, g, 5) if r.shape[1] >= 5 else None}


def tags(ref: np.ndarray, got: np.ndarray, axis: int) -> dict:
    """Per-position top-1 agreement over every position of every sample, and the worst sample's."""
    r, g = rows(ref, axis), _nan_low(rows(got, axis))
    same = r.argmax(2) == g.argmax(2)
    return {"top1_agreement": float(same.mean()), "worst_sample_top1": float(same.mean(1).min()),
            "positions": int(same.shape[1])}


def are_ids(values: np.ndarray) -> bool:
    """Class ids (an ArgMax's output) rather than scores: every value a whole number."""
    return bool(values.size) and bool(np.all(np.isfinite(values))) and bool(np.all(values == np.round(values)))


def ids(ref: np.ndarray, got: np.ndarray, kind: str) -> dict:
    """Class ids compared as they are: per position (tags), or the sample's id (classes)."""
    same = ref.reshape(len(ref), -1) == got.reshape(len(got), -1)
    if kind == "classes":
        return {"top1_agreement": float(same.all(1).mean()), "top5_agreement": None}
    return {"top1_agreement": float(same.mean()), "worst_sample_top1": float(same.mean(1).min()),
            "positions": int(same.shape[1])}


def _topk(r: np.ndarray, g: np.ndarray, k: int) -> float:
    """Mean over samples of |topk(ref) ∩ topk(got)| / k."""
    top_r = np.argsort(-r, axis=1)[:, :k]
    top_g = np.argsort(-g, axis=1)[:, :k]
    return float(np.mean([len(set(a) & set(b)) / k for a, b in zip(top_r, top_g)]))


def greedy(steps: np.ndarray, blank: int) -> tuple[int, ...]:
    """Greedy CTC decoding of (T, C) scores: best class per step, repeats collapsed, blanks dropped."""
    best = steps.argmax(1)
    keep = np.ones(len(best), dtype=bool)
    keep[1:] = best[1:] != best[:-1]
    return tuple(int(c) for c in best[keep] if c != blank)


def edit_distance(a: tuple, b: tuple) -> int:
    """Levenshtein distance (one row of the classic table; strings here are tens of symbols, so a
    dependency for it would buy nothing)."""
    row = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        prev, row[0] = row[0], i
        for j, y in enumerate(b, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (x != y))
    return row[-1]


def ctc(ref: np.ndarray, got: np.ndarray, axis: int, blank: int, alphabet: tuple[str, ...] | None = None) -> dict:
    """Greedy CTC strings of both models: the share that match exactly, and the character error rate."""
    r, g = rows(ref, axis), _nan_low(rows(got, axis))
    want = [greedy(s, blank) for s in r]
    have = [greedy(s, blank) for s in g]
    errors = sum(edit_distance(a, b) for a, b in zip(want, have))
    length = sum(len(a) for a in want)
    differ = [(_text(a, blank, alphabet), _text(b, blank, alphabet)) for a, b in zip(want, have) if a != b]
    return {"exact_match": float(np.mean([a == b for a, b in zip(want, have)])),
            "cer": errors / max(1, length), "symbols": length, "examples": differ[:MAX_EXAMPLES]}


def _text(symbols: tuple[int, ...], blank: int, alphabet: tuple[str, ...] | None) -> str:
    """The string a user reads (class c is alphabet[c - 1] when the blank is class 0), else the class ids."""
    if alphabet is not None and blank == 0 and all(0 < c <= len(alphabet) for c in symbols):
        return "".join(alphabet[c - 1] for c in symbols)
    return " ".join(str(c) for c in symbols)
