"""Each output's kind, inferred from the graph (the op that makes it, its shape) and the float values.

Checked in this order, the first that fits wins (``--output-kind`` first of all):

  state       shaped like an input of a recurrent graph (LSTM/GRU/RNN/Loop/Scan)
  detections  scores [1, N, C] in [0, 1] beside an output of boxes [1, N, 4]
              (SSD, UltraFace, RetinaFace): corners or centre and size; a
              softmax's class 0 is the background; the boxes are regression
  tags        class ids from an ArgMax (ArgMin), one per position (a
              segmenter that ends in its argmax); classes for a single id
  detections  [1, 4+C, N] or [1, N, 4+C] (N >= 32): four box values (width and
              height never negative), then C score rows in [0, 1]; with an
              objectness row first (YOLOv5's [1, N, 5+C]) when the model's
              metadata names C classes
  ctc / tags  a class per position: [1, T, C] or [T, 1, C] from a softmax or a
              per-position linear layer (raw logits from MatMul/Gemm, no
              softmax output beside them, decisive as a segmenter's below);
              ctc when the model carries an alphabet of C-1 or C-2 symbols in
              its metadata, or when one edge class (0 or C-1) is the blank:
              the best class at >= 30% of positions, between non-blank runs
              (>= 2 runs a sample on average); else tags
  scores      a map of two or more axes with every value in [0, 1] (sigmoid or
              softmax maps); its channel axis is the softmax's axis, or axis 1
              of the convolution that made it, carried through transposes
  tags        a segmenter's logits: a plane of 4..1000 channels straight from
              a convolution (through resizes and transposes; an activation
              after it makes a feature map, regression), no score
              output beside it, and decisive: at most positions the best
              channel leads the second by >= 1% of the output's span (a
              keypoint heatmap's flat background, an image's RGB, a box map
              beside a score map stay regression); a class per pixel
  classes     a vector [1, K] from a softmax (or whose rows sum to 1), or raw
              logits when no other output is a softmax
  scores      a vector from a sigmoid (independent labels, threshold 0.5)
  embedding   a vector of >= 16 values whose every row has L2 norm 1
  regression  anything else (a vector beside a softmax head: landmarks, boxes)
"""

from __future__ import annotations

import dataclasses

import numpy as np

from . import DEFAULT_THRESHOLD, OutputKind

RECURRENT = {"LSTM", "GRU", "RNN", "Loop", "Scan", "DynamicQuantizeLSTM"}
PASSTHROUGH = {"Identity", "Cast", "Reshape", "Squeeze", "Unsqueeze", "Flatten", "Transpose", "Dropout"}
ELEMENTWISE = {"Sigmoid", "Relu", "Clip", "HardSigmoid", "Add", "Mul", "Sub", "Div", "Identity", "Cast",
               "BatchNormalization", "Transpose", "LeakyRelu", "PRelu"}
SOFTMAX = {"Softmax", "LogSoftmax"}
RESIZE = {"Resize", "Upsample"}
LAYOUT_ONLY = {"Identity", "Cast", "Transpose", "Dropout"}
ARGMAX = {"ArgMax", "ArgMin"}
MATMUL = {"MatMul", "Gemm", "MatMulInteger", "QLinearMatMul"}
SEGMENT_CLASSES = (4, 1000)  # fewer: an image's channels or a flow field as likely as classes
DECISIVE = 0.01  # median lead of the best channel over the second, as a share of the output's span
# (a trained colour segmenter: 5%, its far classes' logits stretch the span; a heatmap's background: ~0)
LINEAR = {"MatMul", "Gemm", "Add", "MatMulInteger", "QLinearMatMul"}
CHANNELS_FIRST = {"Conv", "ConvTranspose", "ConvInteger", "QLinearConv"}
BLANK_SHARE, MIN_RUNS = 0.3, 2.0


class Graph:
    """Who makes each tensor, walked backwards from an output."""

    def __init__(self, proto):
        self.nodes = {out: node for node in (proto.graph.node if proto is not None else ()) for out in node.output}
        self.ops = {node.op_type for node in self.nodes.values()}
        self.metadata = {p.key: p.value for p in proto.metadata_props} if proto is not None else {}

    def source(self, name: str, through: set[str]) -> tuple[object | None, list[list[int]]]:
        """The first node making ``name`` that is not in ``through``, and the Transpose perms on the way."""
        perms, node = [], self.nodes.get(name)
        while node is not None and node.op_type in through:
            if node.op_type == "Transpose":
                perms.append(list(_attr(node, "perm", [])))
            node = self.nodes.get(node.input[0]) if node.input else None
        return node, perms


def _attr(node, name: str, default):
    from onnx import helper

    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def _carried(axis: int, perms: list[list[int]], rank: int) -> int | None:
    """Where ``axis`` of a tensor ends up after the transposes (listed from the output backwards)."""
    for perm in reversed(perms):
        if not perm or len(perm) != rank:
            return None
        axis = perm.index(axis)
    return axis


def infer_kinds(proto, inputs: list[tuple[str, list[int]]], outputs: list[tuple[str, list[int]]],
                refs: dict[str, np.ndarray], declared: dict | None = None) -> dict[str, OutputKind]:
    """{output name: OutputKind} for every output; ``refs`` are the float outputs, stacked over samples."""
    graph = Graph(proto)
    declared = declared or {}
    softmaxed = {name for name, shape in outputs if _class_axis(graph, name, shape, refs[name]) is not None}
    scored = softmaxed | {name for name, _ in outputs if _unit(refs[name])}
    split = _split_heads(outputs, refs)
    boxes = {k.boxes: n for n, k in split.items()}
    kinds = {}
    for name, shape in outputs:
        kind, threshold = declared.get(name, (None, None))
        if name in split and kind in (None, "detections"):
            kinds[name] = dataclasses.replace(split[name], **({"why": "declared", "threshold": threshold}
                                                              if threshold is not None else {}))
        elif name in boxes and kind is None:
            kinds[name] = OutputKind("regression", f"the boxes of {boxes[name]}'s detections")
        elif kind is not None:
            kinds[name] = _declared(graph, name, shape, refs[name], kind, threshold)
        else:
            kinds[name] = _infer(graph, name, list(shape), refs[name], inputs, softmaxed - {name}, scored - {name})
    return kinds


def _split_heads(outputs: list[tuple[str, list[int]]], refs: dict[str, np.ndarray]) -> dict[str, OutputKind]:
    """Detections whose boxes are an output of their own (SSD, UltraFace, RetinaFace): scores [1, N, C] in
    [0, 1] beside boxes [1, N, 4] of the same N >= 32, corners or centre and size. A softmax's class 0 is the
    background. {scores output: its kind}."""
    found: dict[str, OutputKind] = {}
    for name, shape in outputs:
        shape, ref = list(shape), refs[name]
        if len(shape) != 3 or shape[0] != 1 or shape[1] < 32 or not _unit(ref):
            continue
        softmax = shape[2] >= 2 and bool(np.allclose(ref.sum(-1), 1, atol=1e-3))
        for other, other_shape in outputs:
            box = refs[other]
            if other == name or list(other_shape) != [1, shape[1], 4] or other in {k.boxes for k in found.values()}:
                continue
            if shape[2] == 4 and (not softmax or np.allclose(box.sum(-1), 1, atol=1e-3)):
                continue  # two [1, N, 4] outputs: the scores are the one whose rows sum to 1
            corners = _box_format(box)
            if corners is not None:
                form = "corners" if corners else "centre and size"
                found[name] = OutputKind("detections", f"scores beside the boxes of {other} ({form})",
                                         DEFAULT_THRESHOLD["detections"], layout="rows", boxes=other, corners=corners,
                                         background=0 if softmax else None)
                break
    return found


def _box_format(boxes: np.ndarray) -> bool | None:
    """True for corners (x1 y1 x2 y2, or y1 x1 y2 x2), False for centre and size, None for neither (encoded
    offsets a post-process decodes with anchors the model does not carry)."""
    b = boxes.reshape(-1, 4)
    if not len(b) or not np.isfinite(b).all():
        return None
    if np.mean((b[:, 2] >= b[:, 0]) & (b[:, 3] >= b[:, 1])) >= 0.99:
        return True
    if np.mean((b[:, 2] >= 0) & (b[:, 3] >= 0)) >= 0.99 and np.max(b) > 0:
        return False
    return None


def _declared(graph: Graph, name: str, shape, ref, kind: str, threshold: float | None) -> OutputKind:
    found = _infer(graph, name, list(shape), ref, [], set())
    if found.kind == kind:
        return dataclasses.replace(found, why="declared",
                                   threshold=threshold if threshold is not None else found.threshold)
    axis = _class_axis(graph, name, shape, ref)
    if kind == "tags" and axis is None and len([d for d in shape if d > 1]) >= 3:
        axis = _channel_axis(graph, name, shape, ref)  # a segmenter's logits: the convolution's channels
    layout = _detection_layout(list(shape), ref) if kind == "detections" else None
    if kind == "detections" and layout is None:
        layout = "columns" if shape[-2] < shape[-1] else "rows"
    blank = _blank(ref, axis if axis is not None else len(shape) - 1) if kind == "ctc" else None
    return OutputKind(kind, "declared", threshold if threshold is not None else DEFAULT_THRESHOLD.get(kind),
                      axis if kind != "scores" else _channel_axis(graph, name, shape, ref), blank if blank is not None
                      else (0 if kind == "ctc" else None), None, layout)


def _unit(ref: np.ndarray) -> bool:
    return bool(ref.size) and np.nanmin(ref) >= 0 and np.nanmax(ref) <= 1


def _infer(graph: Graph, name: str, shape: list[int], ref: np.ndarray, inputs, other_softmax: set[str],
           other_scores: set[str] = frozenset()) -> OutputKind:
    if _is_state(graph, shape, inputs):
        return OutputKind("state", "shaped like an input of a recurrent graph")
    node, _ = graph.source(name, PASSTHROUGH)
    if node is not None and node.op_type in ARGMAX:  # class ids: the decision itself, compared as such
        if len([d for d in shape if d > 1]) >= 1:
            return OutputKind("tags", f"class ids from an {node.op_type}, one per position")
        return OutputKind("classes", f"a class id from an {node.op_type}")
    layout = _detection_layout(shape, ref)
    if layout is not None:
        width = min(shape[1], shape[2])
        names = _class_names(graph.metadata)
        if names == width - 5:
            return OutputKind("detections", f"box + objectness + score head ({layout}; {names} class names in the "
                              "model's metadata)", DEFAULT_THRESHOLD["detections"], layout=layout, objectness=True)
        return OutputKind("detections", f"box + score head ({layout})", DEFAULT_THRESHOLD["detections"], layout=layout)
    big = [d for d in shape if d > 1]
    axis = _class_axis(graph, name, shape, ref)
    if axis is None and len(big) == 2 and len(shape) == 3 and not other_softmax:
        axis = _linear_axis(graph, name, shape, ref)  # a token classifier's raw logits
    if len(big) == 2 and axis is not None and shape[axis] == big[-1] and len(shape) == 3:
        return _sequence(graph, shape, ref, axis)
    unit = _unit(ref)
    if len(big) >= 2 and unit:
        channel = _channel_axis(graph, name, shape, ref)
        return OutputKind("scores", "a map of values in [0, 1]", DEFAULT_THRESHOLD["scores"], channel)
    segment = _segment_axis(graph, name, shape, ref) if len(big) >= 3 and not other_scores else None
    if segment is not None:
        return OutputKind("tags", "a class per pixel: a segmenter's logits from a convolution", axis=segment)
    if len(big) == 1:
        return _vector(graph, name, shape, ref, axis, other_softmax, unit)
    return OutputKind("regression", "values with no class or score structure")


def _class_names(metadata: dict[str, str]) -> int | None:
    """How many class names the model carries (YOLOv5 and ultralytics exports: names = str of a dict or list)."""
    import ast

    try:
        names = ast.literal_eval(metadata.get("names", ""))
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return None
    return len(names) if isinstance(names, (dict, list, tuple)) else None


def _is_state(graph: Graph, shape: list[int], inputs) -> bool:
    shaped = any(list(s) == list(shape) for _, s in inputs) and len(shape) >= 2
    return shaped and (not graph.nodes or bool(graph.ops & RECURRENT))


def _detection_layout(shape: list[int], ref: np.ndarray) -> str | None:
    if len(shape) != 3 or shape[0] != 1:
        return None
    a, b = shape[1], shape[2]
    layout, width, count = ("columns", a, b) if a < b else ("rows", b, a)
    if not 5 <= width <= 1004 or count < 32:
        return None
    rows = np.moveaxis(ref, 2, 3) if layout == "columns" else ref  # (N, 1, candidates, 4+C)
    scores, sizes = rows[..., 4:], rows[..., 2:4]
    in_unit = np.nanmin(scores) >= 0 and np.nanmax(scores) <= 1
    return layout if in_unit and np.mean(sizes >= 0) >= 0.99 and np.nanmax(rows[..., :4]) > 1 else None


def _class_axis(graph: Graph, name: str, shape, ref: np.ndarray) -> int | None:
    """The axis a softmax ran along (from the graph, or rows that sum to 1), or None."""
    node, perms = graph.source(name, {"Identity", "Cast", "Transpose", "Dropout"})
    if node is not None and node.op_type in SOFTMAX:
        axis = _attr(node, "axis", -1)
        return _carried(axis % len(shape), perms, len(shape))
    for axis in reversed(range(len(shape))):
        if shape[axis] >= 2 and ref.size and np.allclose(ref.sum(axis=axis + 1), 1, atol=1e-3):
            return axis
    return None


def _channel_axis(graph: Graph, name: str, shape, ref) -> int | None:
    """A map's channel axis: the softmax's, else axis 1 of the convolution that made it, carried."""
    axis = _class_axis(graph, name, shape, ref)
    if axis is not None:
        return axis
    node, perms = graph.source(name, ELEMENTWISE)
    if node is not None and node.op_type in CHANNELS_FIRST:
        return _carried(1, perms, len(shape))
    return 1 if len(shape) >= 3 else None


def _segment_axis(graph: Graph, name: str, shape, ref: np.ndarray) -> int | None:
    """The class axis of a segmenter's logit map (see the module's doc), or None."""
    node, perms = graph.source(name, LAYOUT_ONLY | RESIZE)  # logits: a linear layer's, no activation after it
    if node is None or node.op_type not in CHANNELS_FIRST:
        return None
    axis = _carried(1, perms, len(shape))
    plane = [d for k, d in enumerate(shape) if k != axis and d > 1]
    if axis is None or not SEGMENT_CLASSES[0] <= shape[axis] <= SEGMENT_CLASSES[1] or len(plane) != 2 \
            or min(plane) < 4 or not ref.size or not np.isfinite(ref).all():
        return None
    return axis if _decisive(ref, axis) else None


def _linear_axis(graph: Graph, name: str, shape, ref: np.ndarray) -> int | None:
    """The class axis of per-position logits from a linear layer (MatMul/Gemm, plus a bias Add), when
    decisive (a hidden state from a projection is not), or None."""
    node, perms = graph.source(name, PASSTHROUGH)
    if node is not None and node.op_type == "Add":
        node = next((graph.nodes[i] for i in node.input if i in graph.nodes and graph.nodes[i].op_type in MATMUL),
                    None)
    if node is None or node.op_type not in MATMUL or not ref.size or not np.isfinite(ref).all():
        return None
    axis = _carried(len(shape) - 1, perms, len(shape))
    return axis if axis is not None and shape[axis] >= 2 and _decisive(ref, axis) else None


def _decisive(ref: np.ndarray, axis: int) -> bool:
    """At most positions the best class leads the second by DECISIVE of the output's span."""
    top = np.sort(np.moveaxis(ref, axis + 1, -1).reshape(-1, ref.shape[axis + 1]), axis=1)[:, -2:]
    span = float(ref.max() - ref.min())
    return span > 0 and float(np.median(top[:, 1] - top[:, 0])) >= DECISIVE * span


def _sequence(graph: Graph, shape: list[int], ref: np.ndarray, axis: int) -> OutputKind:
    classes = shape[axis]
    alphabet = _alphabet(graph.metadata, classes)
    if alphabet is not None:
        return OutputKind("ctc", "a class per position, and the model carries its alphabet", axis=axis, blank=0,
                          alphabet=alphabet)
    blank = _blank(ref, axis)
    if blank is not None:
        return OutputKind("ctc", f"a class per position, class {blank} a blank between runs", axis=axis, blank=blank)
    return OutputKind("tags", "a class per position", axis=axis)


def _alphabet(metadata: dict[str, str], classes: int) -> tuple[str, ...] | None:
    """An alphabet of classes-1 symbols (classes-2 and a space) in the model's metadata, if any."""
    for value in metadata.values():
        symbols = value.splitlines()
        if len(symbols) == classes - 1:
            return tuple(symbols)
        if len(symbols) == classes - 2:
            return (*symbols, " ")
    return None


def _blank(ref: np.ndarray, axis: int) -> int | None:
    """An edge class that is the best at many positions, between runs of other classes."""
    best = np.moveaxis(ref, axis + 1, -1).reshape(len(ref), -1, ref.shape[axis + 1]).argmax(2)
    for blank in (0, ref.shape[axis + 1] - 1):
        is_blank = best == blank
        starts = (~is_blank[:, 1:]) & is_blank[:, :-1]  # a blank followed by a symbol
        if is_blank.mean() >= BLANK_SHARE and starts.sum(1).mean() >= MIN_RUNS:
            return blank
    return None


def _vector(graph: Graph, name: str, shape, ref, axis, other_softmax: set[str], unit: bool) -> OutputKind:
    node, _ = graph.source(name, PASSTHROUGH)
    width = max(shape) if shape else 1
    if axis is not None:
        return OutputKind("classes", "class scores from a softmax", axis=axis)
    if node is not None and node.op_type == "Sigmoid" or (node is None and unit and width == 1):
        return OutputKind("scores", "independent scores from a sigmoid", DEFAULT_THRESHOLD["scores"],
                          len(shape) - 1 if width > 1 else None)
    norms = np.linalg.norm(ref.reshape(len(ref), -1), axis=1) if ref.size else np.zeros(0)
    if width >= 16 and len(norms) and np.allclose(norms, 1, atol=1e-2):
        return OutputKind("embedding", "rows of unit length")
    if width >= 2 and not other_softmax:
        return OutputKind("classes", "a vector of logits (no softmax output beside it)", axis=shape.index(width))
    return OutputKind("regression", "a vector beside a class head" if other_softmax else "a single value")
