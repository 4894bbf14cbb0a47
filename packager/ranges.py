"""Activation ranges chosen per tensor, judged by the model's outputs.

LiteRT Quantizer calibrates each activation to its min/max. That is right for
tensors whose tails carry the answer and wrong for tensors where a rare
outlier stretches the range until the bulk of the values falls into a few
int8 steps. No global rule works (the 99.9th percentile fixes a detector
and destroys a recogniser, measured in issue 13), so:

1. one more pass over the calibration samples gives each activation a
   histogram over its calibrated min..max;
2. from it, candidate ranges per tensor: min/max, the 99.99th and 99.9th
   percentiles, and the range with the least expected squared quantization
   error (clipping error outside, step**2/12 inside: the classic MSE
   criterion);
3. which candidate each tensor gets is decided by quantizing and measuring
   the model's outputs (``search``): first one rule for every tensor, then
   block by block in graph order, keeping a change only when the outputs
   get closer to float.

Written here rather than taken from a library: LiteRT Quantizer's own MSE
and OCTAV algorithms act on weights (OCTAV refuses asymmetric activations),
and TensorFlow's calibrator exposes no per-tensor choice.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np

BINS = 2048
LEVELS = 256  # int8
RULES = ("minmax", "mse", "p99.99", "p99.9")


@dataclasses.dataclass
class Histogram:
    lo: float
    hi: float
    counts: np.ndarray  # BINS counts over [lo, hi]

    def edges(self) -> np.ndarray:
        return np.linspace(self.lo, self.hi, BINS + 1)


def collect(float_tflite: bytes, dataset: list[dict[str, np.ndarray]], qsv: dict[str, dict],
            signature: str = "serving_default") -> dict[str, Histogram]:
    """Histograms of every calibrated activation over its calibrated range.

    Args:
        float_tflite: the float model the calibration ran on.
        dataset: signature feeds, one dict per sample.
        qsv: LiteRT Quantizer's calibration result ({tensor: {min, max}}).
    """
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    interp = Interpreter(model_content=float_tflite, experimental_preserve_all_tensors=True,
                         experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    runner = interp.get_signature_runner(signature)
    index = {d["name"]: d["index"] for d in interp.get_tensor_details()}
    hists: dict[str, Histogram] = {}
    for name, stats in qsv.items():
        if name in index and "min" in stats and "max" in stats:
            lo, hi = float(np.min(stats["min"])), float(np.max(stats["max"]))
            if np.isfinite(lo) and np.isfinite(hi) and hi > lo:
                hists[name] = Histogram(lo, hi, np.zeros(BINS, np.int64))
    for feeds in dataset:
        runner(**feeds)
        for name, h in hists.items():
            x = interp.get_tensor(index[name])
            if x.dtype.kind != "f":
                continue
            h.counts += np.histogram(x, bins=BINS, range=(h.lo, h.hi))[0]
    return {n: h for n, h in hists.items() if h.counts.sum()}


def _quantile(h: Histogram, q: float) -> float:
    cum = np.cumsum(h.counts) / h.counts.sum()
    i = int(np.searchsorted(cum, q))
    return float(h.edges()[min(i + 1, BINS)])


def _expected_error(h: Histogram, lo: float, hi: float) -> float:
    """Expected squared error of int8 fake-quantization with range [lo, hi]."""
    centers = (h.edges()[:-1] + h.edges()[1:]) / 2
    step = (hi - lo) / (LEVELS - 1)
    clipped = np.clip(centers, lo, hi)
    inside = (centers >= lo) & (centers <= hi)
    err = (centers - clipped) ** 2 + np.where(inside, step * step / 12, 0.0)
    return float((err * h.counts).sum() / h.counts.sum())


def _with_zero(lo: float, hi: float) -> tuple[float, float]:
    """int8 must hold 0 exactly (padding, ReLU): the range always spans it."""
    return min(lo, 0.0), max(hi, 0.0)


def candidates(h: Histogram) -> dict[str, tuple[float, float]]:
    """Candidate (min, max) per rule for one activation."""
    out = {"minmax": _with_zero(h.lo, h.hi)}
    for rule, q in (("p99.99", 1e-4), ("p99.9", 1e-3)):
        lo = _quantile(h, q) if h.lo < 0 else h.lo
        out[rule] = _with_zero(lo, _quantile(h, 1 - q))
    tails = [0.0, 1e-5, 1e-4, 1e-3, 1e-2]
    los = sorted({h.lo if h.lo >= 0 or t == 0 else _quantile(h, t) for t in tails})
    his = sorted({h.hi if t == 0 else _quantile(h, 1 - t) for t in tails})
    best = min(((lo, hi) for lo in los for hi in his if hi > lo), key=lambda r: _expected_error(h, *_with_zero(*r)))
    out["mse"] = _with_zero(*best)
    return out


def override(qsv: dict[str, dict], ranges: dict[str, tuple[float, float]]) -> dict[str, dict]:
    """A copy of the calibration result with the given tensors' min/max replaced."""
    new = dict(qsv)
    for name, (lo, hi) in ranges.items():
        stats = qsv[name]
        new[name] = {**stats,
                     "min": np.full_like(np.asarray(stats["min"]), lo),
                     "max": np.full_like(np.asarray(stats["max"]), hi)}
    return new


@dataclasses.dataclass
class Choice:
    rules: dict[str, str]  # tensor -> rule
    score: float  # the judge's figure for this choice (higher is closer to float)
    trials: list[tuple[str, float]]  # (what was tried, score), in order

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for rule in self.rules.values():
            out[rule] = out.get(rule, 0) + 1
        return out


def search(order: list[str], cands: dict[str, dict[str, tuple[float, float]]],
           judge: Callable[[dict[str, tuple[float, float]]], float], blocks: int = 8,
           good_enough: float | None = None) -> Choice:
    """Choose a rule per tensor by the model outputs.

    Args:
        order: tensors in graph order (blocks are contiguous in it).
        cands: per tensor, its candidate ranges by rule.
        judge: ranges -> score of the quantized model's outputs (higher is better).
        blocks: how many contiguous blocks the refinement walks.
        good_enough: stop as soon as a choice scores this much.
    """
    order = [t for t in order if t in cands]

    def ranges(rules: dict[str, str]) -> dict[str, tuple[float, float]]:
        return {t: cands[t][r] for t, r in rules.items()}

    trials = []
    best_rules: dict[str, str] | None = None
    best = -np.inf
    for rule in RULES:
        rules = {t: rule for t in order}
        score = judge(ranges(rules))
        trials.append((f"all {rule}", score))
        if best_rules is None or score > best:  # the first rule stands even when nothing runs
            best_rules, best = rules, score
        if good_enough is not None and best >= good_enough:
            return Choice(best_rules, best, trials)
    size = max(1, -(-len(order) // blocks))
    for start in range(0, len(order), size):
        block = order[start:start + size]
        base = best_rules[block[0]]
        for rule in RULES:
            if rule == base or all(best_rules[t] == rule for t in block):
                continue
            rules = {**best_rules, **{t: rule for t in block}}
            score = judge(ranges(rules))
            trials.append((f"tensors {start}-{start + len(block) - 1} {rule}", score))
            if score > best:
                best_rules, best = rules, score
        if good_enough is not None and best >= good_enough:
            break
    return Choice(best_rules, best, trials)
