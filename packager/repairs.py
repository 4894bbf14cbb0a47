"""Ladder step 2: graph repairs on the float model, where the math allows.

Each repair is a function ``NAME(proto) -> list[str]`` that edits a
shape-fixed, simplified ONNX model in place and says what it changed (one
line per kind of change, [] when it found nothing to do). Both are exact in
float (equalization up to rounding): they change how the model quantizes,
never what it computes, and the ladder measures whether that helps.

  fuse_activations  hard-swish and hard-sigmoid as exporters spell them out
                    (Add/Clip/Mul/Div) fused back into one ``HardSwish`` or
                    ``HardSigmoid``, so the int8 graph gets one op with one
                    output range instead of a chain of intermediates;
  equalize          cross-layer equalization (Nagel et al. 2019) across
                    Conv -> Relu -> Conv: per channel, the first conv's
                    weights are divided and the second's multiplied by the
                    same factor, so that unequal per-channel ranges (a
                    depthwise conv with a BatchNorm folded in) no longer
                    share one int8 scale badly.
"""

from __future__ import annotations

import collections

import numpy as np

from .prepare.graph_reads import names_read

TOLERANCE = 1e-6  # how far a constant may be from the value a pattern needs
SWEEPS = 4  # equalization passes over the chains (the paper iterates to convergence; 3-5 suffice)
SCALE_LIMITS = (1e-4, 1e4)  # equalization factors outside this are left at 1
DEAD = 1e-8  # a channel whose range is below this fraction of its tensor's largest is dead (decayed to ~0)
CHANGED = 1.01  # a pair counts as equalized when some channel moved by more than this factor
HOMOGENEOUS = ("Relu", "LeakyRelu")  # f(s x) = s f(x) for s > 0
STD = ("", "ai.onnx")


class _Index:
    """Who produces and who reads each tensor of the main graph, and its constants."""

    def __init__(self, graph):
        self.graph = graph
        self.producer = {o: n for n in graph.node for o in n.output}
        self.readers = collections.defaultdict(list)  # main-graph nodes, once per input slot
        for node in graph.node:
            for name in node.input:
                self.readers[name].append(node)
        self.uses = collections.Counter(names_read(graph))  # subgraphs and graph outputs included
        self.outputs = {o.name for o in graph.output}
        self.constants = {t.name: t for t in graph.initializer}
        self.constants.update({n.output[0]: a.t for n in graph.node if n.op_type == "Constant"
                               for a in n.attribute if a.name == "value" and a.HasField("t")})
        self.rank = {v.name: len(v.type.tensor_type.shape.dim) for v in (*graph.input, *graph.value_info, *graph.output)
                     if v.type.tensor_type.HasField("shape")}

    def value(self, name: str):
        from onnx import numpy_helper

        return numpy_helper.to_array(self.constants[name]) if name in self.constants else None

    def only_read_by_one(self, name: str) -> bool:
        return self.uses[name] == 1 and name not in self.outputs


# ---- fuse_activations --------------------------------------------------------------------------

def _is(ix: _Index, name: str, value: float, beside: str = "") -> bool:
    """True when ``name`` is a float constant of one element equal to ``value`` that broadcasts
    against ``beside`` without changing its shape."""
    v = ix.value(name) if name else None
    return (v is not None and v.size == 1 and v.dtype.kind == "f" and v.ndim <= ix.rank.get(beside, 1)
            and abs(float(v.ravel()[0]) - value) <= TOLERANCE)


def _op(ix: _Index, name: str, *ops: str):
    node = ix.producer.get(name)
    return node if node is not None and node.op_type in ops and node.domain in STD else None


def _with_constant(ix: _Index, node, value: float, commutes: bool = True):
    """The non-constant input of binary ``node`` when its other input is the constant ``value``."""
    orders = ((0, 1), (1, 0)) if commutes else ((0, 1),)
    return next((node.input[a] for a, b in orders if len(node.input) == 2
                 and _is(ix, node.input[b], value, node.input[a])), None)


def _clip_0_6(ix: _Index, name: str):
    """(input, nodes) when ``name`` is Clip(input, 0, 6) (bounds as attributes or constant inputs)
    or Min(Max(input, 0), 6) in either order."""
    node = _op(ix, name, "Clip", "Min", "Max")
    if node is None:
        return None
    if node.op_type == "Clip":
        attrs = {a.name: a.f for a in node.attribute}
        low, high = (list(node.input) + ["", ""])[1:3]
        ok_low = _is(ix, low, 0.0) if low else abs(attrs.get("min", -np.inf)) <= TOLERANCE
        ok_high = _is(ix, high, 6.0) if high else abs(attrs.get("max", np.inf) - 6.0) <= TOLERANCE
        return (node.input[0], [node]) if ok_low and ok_high else None
    outer, inner = (6.0, 0.0) if node.op_type == "Min" else (0.0, 6.0)
    middle = _with_constant(ix, node, outer)
    first = _op(ix, middle, "Max" if node.op_type == "Min" else "Min") if middle else None
    x = _with_constant(ix, first, inner) if first is not None else None
    return (x, [first, node]) if x else None


def _relu6_of_x_plus_3(ix: _Index, name: str):
    """(x, nodes) when ``name`` is Clip(x + 3, 0, 6)."""
    clip = _clip_0_6(ix, name)
    add = _op(ix, clip[0], "Add") if clip else None
    x = _with_constant(ix, add, 3.0) if add is not None else None
    return (x, [add, *clip[1]]) if x else None


def _over_6(ix: _Index, node):
    """The input of ``node`` when it is Div(input, 6) or Mul(input, 1/6)."""
    if node.domain not in STD:
        return None
    if node.op_type == "Div":
        return _with_constant(ix, node, 6.0, commutes=False)
    return _with_constant(ix, node, 1 / 6) if node.op_type == "Mul" else None


def _hard_sigmoid(ix: _Index, name: str, spelled_only: bool = False):
    """(x, nodes) when ``name`` is Clip(x + 3, 0, 6) / 6, or HardSigmoid(x, alpha=1/6, beta=0.5)."""
    node = ix.producer.get(name)
    if node is None:
        return None
    if node.op_type == "HardSigmoid" and node.domain in STD and not spelled_only:
        attrs = {a.name: a.f for a in node.attribute}
        exact = abs(attrs.get("alpha", 0.2) - 1 / 6) <= TOLERANCE and abs(attrs.get("beta", 0.5) - 0.5) <= TOLERANCE
        return (node.input[0], [node]) if exact else None
    inner = _over_6(ix, node)
    found = _relu6_of_x_plus_3(ix, inner) if inner else None
    return (found[0], [*found[1], node]) if found else None


def _hard_swish(ix: _Index, node):
    """(x, nodes) when ``node`` ends x * hard_sigmoid(x), spelled as x * (Clip(x+3,0,6)/6)
    or (x * Clip(x+3,0,6)) / 6 (or * 1/6), the hard sigmoid possibly an ONNX HardSigmoid."""
    if node.op_type == "Mul" and node.domain in STD and len(node.input) == 2:
        for x, gate in (node.input, node.input[::-1]):
            found = _hard_sigmoid(ix, gate)
            if found and found[0] == x:
                return x, [*found[1], node]
    product = _over_6(ix, node)
    mul = _op(ix, product, "Mul") if product else None
    for x, gate in (mul.input, mul.input[::-1]) if mul is not None else ():
        found = _relu6_of_x_plus_3(ix, gate)
        if found and found[0] == x:
            return x, [*found[1], mul, node]
    return None


def _fusions(graph, kinds: tuple[str, ...]) -> dict[str, list]:
    """Kind -> [(x, nodes)] of every fusable pattern whose intermediates nothing else reads."""
    ix, taken, found = _Index(graph), set(), {"HardSwish": [], "HardSigmoid": []}
    matchers = {"HardSwish": lambda n: _hard_swish(ix, n),  # first: a hard-swish may contain a hard-sigmoid
                "HardSigmoid": lambda n: _hard_sigmoid(ix, n.output[0], spelled_only=True)}
    for kind, match in ((k, matchers[k]) for k in kinds):
        for node in graph.node:
            hit = match(node) if node.output and node.output[0] else None
            if not hit or any(id(n) in taken for n in hit[1]):
                continue
            if all(ix.only_read_by_one(n.output[0]) for n in hit[1][:-1]):
                taken.update(id(n) for n in hit[1])
                found[kind].append(hit)
    return found


def _opset(proto) -> int:
    return next((o.version for o in proto.opset_import if o.domain in STD), 1)


def fuse_activations(proto) -> list[str]:
    """Fuse spelled-out hard-swish and hard-sigmoid into single ops, in place.

    TFLite's converter re-fuses some spellings itself ((x * relu6(x + 3)) / 6, also from a
    Min/Max pair) but not others (relu6(x + 3) / 6 * x, * 1/6, x * HardSigmoid(x)), which
    stay three or four int8 ops with a range each; fused, every spelling is one HARD_SWISH.
    (XNNPACK has no int8 HARD_SWISH: the ladder's latency measurement judges that side.)
    ``HardSwish`` needs opset 14. In an older model (converting its opset breaks other ops
    for onnx2tf: Squeeze's axes, measured on PP-OCRv4 rec) each hard-swish is rewritten
    into the one spelling TFLite's converter fuses, (x * Clip(x + 3, 0, 6)) / 6.
    SiLU (x * Sigmoid(x)) is left alone: TFLite has no SiLU kernel, so it quantizes as
    LOGISTIC and MUL however it is spelled.
    """
    from onnx import helper

    found = _fusions(proto.graph, ("HardSwish", "HardSigmoid"))
    spelled = _opset(proto) < 14
    if spelled:  # those already in the fused spelling need nothing
        found["HardSwish"] = [(x, nodes) for x, nodes in found["HardSwish"] if not _fused_spelling(nodes)]
    if not any(found.values()):
        return []
    final, dropped, bounds, gone = {}, set(), set(), set()
    for kind, hits in found.items():
        for x, nodes in hits:
            last = nodes[-1]
            if kind == "HardSwish" and spelled:
                final[id(last)] = _canonical_hard_swish(proto.graph, x, last.output[0])
            else:
                attrs = {"alpha": 1 / 6, "beta": 0.5} if kind == "HardSigmoid" else {}
                final[id(last)] = [helper.make_node(kind, [x], [last.output[0]], name=last.name or last.output[0],
                                                    **attrs)]
            dropped.update(id(n) for n in nodes[:-1])
            bounds.update(name for n in nodes for name in n.input)
            gone.update(n.output[0] for n in nodes[:-1])
    _replace_nodes(proto.graph, [m for n in proto.graph.node if id(n) not in dropped for m in final.get(id(n), [n])])
    _drop_unread(proto.graph, bounds)
    infos = [v for v in proto.graph.value_info if v.name not in gone]  # the intermediates no longer exist
    del proto.graph.value_info[:]
    proto.graph.value_info.extend(infos)
    lines = {"HardSwish": ("hard_swish: {} hard-swish respelled (x * Clip(x+3,0,6)) / 6, which TFLite fuses into "
                           "HARD_SWISH (opset < 14 has no HardSwish op)") if spelled else
             "hard_swish: {} spelled-out hard-swish fused into HardSwish",
             "HardSigmoid": "hard_sigmoid: {} spelled-out hard-sigmoid Clip(x+3,0,6)/6 fused into HardSigmoid"}
    return [lines[kind].format(len(hits)) for kind, hits in found.items() if hits]


def _fused_spelling(nodes: list) -> bool:
    return [n.op_type for n in nodes] == ["Add", "Clip", "Mul", "Div"]


def _canonical_hard_swish(graph, x: str, out: str) -> list:
    """(x * Clip(x + 3, 0, 6)) / 6 as four nodes, their constants shared initializers."""
    from onnx import helper, numpy_helper

    names = {}
    have = {t.name for t in graph.initializer}
    for value in (0.0, 3.0, 6.0):
        name = names[value] = f"edgepack_hard_swish_{value:g}"
        if name not in have:
            graph.initializer.append(numpy_helper.from_array(np.array(value, np.float32), name))
    a, c, m = (f"{out}_hs_{k}" for k in ("add", "clip", "mul"))
    return [helper.make_node("Add", [x, names[3.0]], [a], name=a),
            helper.make_node("Clip", [a, names[0.0], names[6.0]], [c], name=c),
            helper.make_node("Mul", [x, c], [m], name=m),
            helper.make_node("Div", [m, names[6.0]], [out], name=out)]


def _replace_nodes(graph, nodes: list) -> None:
    copies = [type(n)() for n in nodes]
    for new, old in zip(copies, nodes):
        new.CopyFrom(old)
    del graph.node[:]
    graph.node.extend(copies)


def _drop_unread(graph, candidates: set[str]) -> None:
    """Remove the fused patterns' constants (their 3s and 6s) when nothing reads them any more."""
    dead = candidates - set(names_read(graph)) - {i.name for i in graph.input}
    inits = [t for t in graph.initializer if t.name not in dead]
    nodes = [n for n in graph.node if not (n.op_type == "Constant" and n.output[0] in dead)]
    del graph.initializer[:]
    graph.initializer.extend(inits)
    _replace_nodes(graph, nodes)


# ---- equalize ----------------------------------------------------------------------------------

def _own_weight(ix: _Index, name: str, inputs: set[str]) -> bool:
    """True when ``name`` is a float constant (initializer or Constant node) read only by this one
    node slot, so rewriting it changes nothing else."""
    from onnx import TensorProto

    tensor = ix.constants.get(name)
    floats = (TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.DOUBLE)
    return tensor is not None and ix.uses[name] == 1 and name not in inputs and tensor.data_type in floats


def _pairs(graph) -> tuple[list[tuple], dict]:
    """(first conv, activation, second conv) for every Conv -> Relu -> Conv the scaling cannot leak out of,
    and name -> TensorProto (in the graph: edit to change it) of the constants."""
    ix = _Index(graph)
    inputs = {i.name for i in graph.input}
    pairs = []
    for act in graph.node:
        first = _op(ix, act.input[0], "Conv") if act.op_type in HOMOGENEOUS and act.domain in STD else None
        readers = ix.readers.get(act.output[0], [])
        second = readers[0] if len(readers) == 1 and readers[0].op_type == "Conv" else None
        if first is None or second is None or second.domain not in STD or second.input[0] != act.output[0]:
            continue
        if not (ix.only_read_by_one(first.output[0]) and ix.only_read_by_one(act.output[0])):
            continue
        weights = [first.input[1], second.input[1]] + [b for b in first.input[2:3] if b]
        if not all(_own_weight(ix, w, inputs) for w in weights):
            continue
        channels, group = ix.constants[first.input[1]].dims[0], _group(second)
        w2 = ix.constants[second.input[1]].dims
        if channels % group == 0 and w2[1] * group == channels and w2[0] % group == 0:
            pairs.append((first, act, second))
    return pairs, ix.constants


def _group(conv) -> int:
    return next((a.i for a in conv.attribute if a.name == "group"), 1)


def _by_input_channel(w2: np.ndarray, group: int) -> np.ndarray:
    """W2 viewed as [group, outputs per group, input channels per group, rest]: axis (0, 2) is the input channel."""
    return w2.reshape(group, w2.shape[0] // group, w2.shape[1], -1)


def _ranges(w1: np.ndarray, w2: np.ndarray, group: int) -> tuple[np.ndarray, np.ndarray]:
    """Per channel between the convs: max |W1[i]| over its output channel i, and max |W2| over
    the weights that read input channel i."""
    return (np.abs(w1).reshape(w1.shape[0], -1).max(axis=1),
            np.abs(_by_input_channel(w2, group)).max(axis=(1, 3)).reshape(-1))


def _scales(w1: np.ndarray, w2: np.ndarray, group: int) -> np.ndarray:
    """The paper's s_i = sqrt(r1_i r2_i) / r2_i, which makes both ranges sqrt(r1_i r2_i); 1 where a
    channel is dead on either side or the factor is extreme."""
    r1, r2 = _ranges(w1, w2, group)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        s = np.sqrt(r1 * r2) / r2
    ok = (r1 > r1.max() * DEAD) & (r2 > r2.max() * DEAD) & (s >= SCALE_LIMITS[0]) & (s <= SCALE_LIMITS[1])
    return np.where(ok, s, 1.0)


def _spread(w1: np.ndarray, w2: np.ndarray, group: int) -> float:
    """The worse max/min ratio of the pair's per-channel ranges, dead channels aside."""
    return max(float(r.max() / r[r > r.max() * DEAD].min()) for r in _ranges(w1, w2, group) if r.max() > 0)


def equalize(proto) -> list[str]:
    """Cross-layer equalization across Conv -> Relu (or LeakyRelu) -> Conv, in place.

    Relu is positively homogeneous (relu(x / s) = relu(x) / s for s > 0), so dividing output
    channel i of the first conv (weights and bias) by s_i and multiplying the second conv's
    input channel i by s_i computes the same function. The first conv may have any group
    (depthwise included); the second any group whose channels line up (1 or depthwise).
    Left alone: Relu6 / Clip(0, 6), which is not homogeneous (the clip moves with the scale;
    it could be allowed where calibration shows the clip is never reached); a BatchNorm
    between the convs (onnxsim folds it into the conv); a tensor read by anything else;
    weights shared with another node or exposed as graph inputs.
    """
    from onnx import numpy_helper

    graph = proto.graph
    pairs, inits = _pairs(graph)
    if not pairs:
        return []
    arrays = {name: numpy_helper.to_array(inits[name]).astype(np.float64)
              for first, _, second in pairs for name in (*first.input[1:3], second.input[1]) if name}

    def spread(k: int) -> float:
        first, _, second = pairs[k]
        return _spread(arrays[first.input[1]], arrays[second.input[1]], _group(second))

    before = [spread(k) for k in range(len(pairs))]
    moved = set()
    for _ in range(SWEEPS):
        for k, (first, _, second) in enumerate(pairs):
            w1, w2, group = arrays[first.input[1]], arrays[second.input[1]], _group(second)
            s = _scales(w1, w2, group)
            if np.abs(np.log(s)).max() > np.log(CHANGED):
                moved.add(k)
            arrays[first.input[1]] = w1 / s.reshape(-1, *[1] * (w1.ndim - 1))
            if len(first.input) > 2 and first.input[2]:
                arrays[first.input[2]] = arrays[first.input[2]] / s
            scaled = _by_input_channel(w2, group) * s.reshape(group, 1, -1, 1)
            arrays[second.input[1]] = scaled.reshape(w2.shape)
    if not moved:
        return []
    for name, array in arrays.items():
        dtype = numpy_helper.to_array(inits[name]).dtype
        inits[name].CopyFrom(numpy_helper.from_array(array.astype(dtype), inits[name].name))
    moved = sorted(moved)
    before, after = [before[k] for k in moved], [spread(k) for k in moved]
    kinds = "/".join(sorted({pairs[k][1].op_type for k in moved}))
    return [f"equalize: {len(moved)} Conv->{kinds}->Conv pair(s) equalized (per-channel weight range "
            f"max/min, worse conv of the pair, median over pairs: {np.median(before):.3g} -> {np.median(after):.3g})"]
