"""Output joins of ranges far apart: the float islands that need no search.

A detector joins its box coordinates (0..640) and its scores (0..1) into one
output. int8 gives a join (concat, pack) one scale for all its inputs, so the
small ones keep a few levels or none: every score rounds to 0 and no
detection is left. Left float with the layout ops between it and the output,
each input keeps its own scale. When the arithmetic that decodes the head
(anchors, strides, sigmoid: the ops between the join and the last weighted
op of each branch) also needs float, the second island adds it. Both are
tried before the island search (packager.ladder.searches), which would find
them only in blocks of an eighth of the graph.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from ..quantize import Calibrated, op_graph, scope

JOINS = {"CONCATENATION", "PACK"}
LAYOUT = JOINS | {"RESHAPE", "TRANSPOSE", "SQUEEZE", "EXPAND_DIMS"}  # ops that move values, never change them
WEIGHTED = {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "TRANSPOSE_CONV", "CONV_3D", "BATCH_MATMUL"}
JOIN_SPREAD = 100.0  # input ranges this far apart share one int8 scale badly
MAX_DECODE_SHARE = 1 / 3  # a "decode" doing more of the graph's computing (not layout) is not a head's


@dataclasses.dataclass(frozen=True)
class Joins:
    tail: list[str]  # op scopes: the joins and the layout ops after them
    decode: list[str]  # the same plus the unweighted ops before them, back to each branch's last weighted op
    spread: float  # the widest ratio of input ranges found (0 when none)


def output_joins(cal: Calibrated) -> Joins:
    """The joins whose input ranges lie JOIN_SPREAD apart and that reach the outputs through layout ops only."""
    ops, outputs = op_graph(cal.float_tflite)
    producer = {t: i for i, (_, _, outs) in enumerate(ops) for t in outs}
    consumers: dict[str, list[int]] = {}
    for i, (_, inputs, _) in enumerate(ops):
        for name in inputs:
            consumers.setdefault(name, []).append(i)
    tail: dict[int, bool] = {}
    for i in reversed(range(len(ops))):  # consumers come later in execution order
        tail[i] = all(t in outputs or (t in consumers and all(ops[j][0] in LAYOUT and tail[j] for j in consumers[t]))
                      for t in ops[i][2])
    after, before, widest = set(), set(), 0.0
    for i, (kind, inputs, _) in enumerate(ops):
        spans = [_span(cal.qsv[t]) for t in inputs if t in cal.qsv] if kind in JOINS and tail[i] else []
        spans = [s for s in spans if s > 0]
        if len(spans) >= 2 and max(spans) >= JOIN_SPREAD * min(spans):
            widest = max(widest, max(spans) / min(spans))
            after |= _downstream(i, ops, consumers)
            before |= _decode(inputs, ops, producer)
    computing = [i for i, (kind, _, _) in enumerate(ops) if kind not in LAYOUT]
    if len(before.intersection(computing)) > MAX_DECODE_SHARE * len(computing):
        before = set()
    scopes = [scope(outs) for _, _, outs in ops]
    return Joins([scopes[k] for k in sorted(after)], [scopes[k] for k in sorted(after | before)], widest)


def _span(stats: dict) -> float:
    """max - min of a calibrated tensor; 0 (not judged) when the Quantizer kept no range for it."""
    if "min" not in stats or "max" not in stats:
        return 0.0
    return float(np.max(stats["max"]) - np.min(stats["min"]))


def _downstream(start: int, ops: list, consumers: dict[str, list[int]]) -> set[int]:
    found, todo = set(), [start]
    while todo:
        i = todo.pop()
        if i not in found:
            found.add(i)
            todo += [j for t in ops[i][2] for j in consumers.get(t, [])]
    return found


def _decode(inputs: list[str], ops: list, producer: dict[str, int]) -> set[int]:
    """The unweighted ops that make ``inputs``, back to (not including) the last weighted op of each path."""
    found, todo = set(), [producer[t] for t in inputs if t in producer]
    while todo:
        i = todo.pop()
        if i in found or ops[i][0] in WEIGHTED:
            continue
        found.add(i)
        todo += [producer[t] for t in ops[i][1] if t in producer]
    return found
