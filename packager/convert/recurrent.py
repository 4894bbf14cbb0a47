"""The onnx2tf-unrolled strategies' lowering: ONNX ``LSTM``, ``GRU`` and ``RNN`` unrolled into primitive ops.

onnx2tf crashes on many real recurrent layers (state inputs, bidirectional
layers after convolutions). With static shapes the sequence length is known,
so each recurrent node can be written out step by step with MatMul, Add, Mul,
Sub, Sigmoid/Tanh, Split, Concat and Reshape, all of which it converts well.

Every per-step tensor is kept 2-D ([batch, hidden]): onnx2tf moves 3-D and
4-D tensors to channel-last and that re-layout is where its bugs live. The
input projection for all steps and directions is one MatMul on the 2-D
[seq*batch, input] view of X, cut into steps by Split; the outputs are
assembled by one 2-D Concat and one Reshape into the exact ONNX layout.
Weights are stored pre-transposed (x @ W^T) with the gates fused, so a step
needs one MatMul for the recurrent term and one Split for the gates.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from .recurrent_layers import RECURRENT, Layer, graph_constants, read_layer, static_shapes


# Nodes one step writes (packager.convert.recurrent's _lstm_step / _gru_step / the RNN step), without peepholes,
# and per layer the projection, the split into steps and the outputs' concat and reshape.
STEP_NODES = {"LSTM": 12, "GRU": 14, "RNN": 3}
LAYER_NODES = 6


@dataclasses.dataclass
class Estimate:
    """What unrolling would make, known before it starts: nodes, and the memory the conversion then takes."""

    nodes: int
    megabytes: int
    layers: list[str]  # "LSTM 'name': 2 directions x 500 steps"


def estimate(proto, mb_per_node: float, base_mb: int) -> Estimate:
    """The unrolled graph's size from each recurrent layer's steps, directions and kind (no unrolling done).

    ``mb_per_node``, ``base_mb``: what the converter takes per node and in all (measured: packager.convert).
    """
    graph = proto.graph
    constants, shapes = graph_constants(graph), static_shapes(proto)
    nodes, layers = len(graph.node), []
    for node in graph.node:
        layer = read_layer(node, constants, shapes) if node.op_type in RECURRENT else None
        if isinstance(layer, Layer):
            count = len(layer.directions)
            nodes += count * layer.seq * STEP_NODES[layer.kind] + LAYER_NODES - 1
            layers.append(f"{layer.kind} '{node.name}': {count} direction(s) x {layer.seq} steps")
    return Estimate(nodes, int(base_mb + nodes * mb_per_node), layers)


class _Builder:
    """Emits nodes and initializers with unique names derived from the layer's name."""

    def __init__(self, prefix: str, taken: set[str], opset: int, dtype, graph_info: tuple[dict, dict]):
        self.prefix, self.taken, self.opset, self.dtype = prefix, taken, opset, dtype
        self.producers, self.shapes = graph_info  # value name -> node making it; -> static shape
        self.nodes: list = []
        self.inits: list = []

    def name(self, tag: str) -> str:
        base = f"{self.prefix}/{tag}"
        name, k = base, 1
        while name in self.taken:
            name, k = f"{base}_{k}", k + 1
        self.taken.add(name)
        return name

    def op(self, op_type: str, inputs: list[str], tag: str, output: str | None = None, **attrs) -> str:
        from onnx import helper

        out = output or self.name(tag)
        self.nodes.append(helper.make_node(op_type, inputs, [out], name=self.name(f"{tag}_{op_type}"), **attrs))
        return out

    def const(self, array: np.ndarray, tag: str, dtype=None) -> str:
        from onnx import numpy_helper

        name = self.name(tag)
        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(array, dtype=dtype or self.dtype), name))
        return name

    def split(self, x: str, axis: int, count: int, tag: str) -> list[str]:
        """``x`` cut into ``count`` equal parts along ``axis`` (one node, so fewer ops per step than Slices)."""
        from onnx import helper

        if count == 1:
            return [x]
        outs = [self.name(f"{tag}{k}") for k in range(count)]
        attrs = {"num_outputs": count} if self.opset >= 18 else {}  # opset 18 wants the count said
        self.nodes.append(helper.make_node("Split", [x], outs, name=self.name(f"{tag}_Split"), axis=axis, **attrs))
        return outs

    def reshape(self, x: str, shape: list[int], tag: str, output: str | None = None) -> str:
        return self.op("Reshape", [x, self.const(np.array(shape), f"{tag}_shape", np.int64)], tag, output)

    def flat(self, x: str, shape: list[int], tag: str) -> str:
        """``x``'s data as the 2-D ``shape``.

        When ``x`` only reshapes a tensor that already has that shape (an
        Unsqueeze of a [batch, hidden] state, say), that tensor is used
        directly: onnx2tf mistranslates some 2-D -> 3-D -> 2-D round trips.
        """
        name = x
        while self.shapes.get(name) != shape:
            node = self.producers.get(name)
            if node is None or not _only_reshapes(node, self.shapes):
                return self.reshape(x, shape, tag)
            name = node.input[0]
        return name

    def concat(self, parts: list[str], axis: int, tag: str) -> str:
        return parts[0] if len(parts) == 1 else self.op("Concat", parts, tag, axis=axis)

    def add(self, a: str | None, b: str | None, tag: str) -> str | None:
        return a if b is None else b if a is None else self.op("Add", [a, b], tag)


def _only_reshapes(node, shapes: dict) -> bool:
    """Whether ``node`` keeps its first input's data in row-major order (changes only the shape)."""
    if node.op_type in ("Reshape", "Squeeze", "Unsqueeze", "Flatten", "Identity"):
        return True
    if node.op_type != "Transpose" or node.input[0] not in shapes:
        return False
    perm = next((list(a.ints) for a in node.attribute if a.name == "perm"), [])
    moved = [axis for axis in perm if shapes[node.input[0]][axis] != 1]  # size-1 axes move freely
    return bool(perm) and moved == sorted(moved)


def _initial_states(layer: Layer, build: _Builder, constants: dict, name: str, tag: str) -> list[str | None]:
    """Per direction, the [batch, hidden] initial state, or None when it is zero."""
    count, batch, hidden = len(layer.directions), layer.batch, layer.hidden
    if not name:
        return [None] * count
    if name in constants:
        value = constants[name].reshape(count, batch, hidden) if layer.layout == 0 else constants[name]
        parts = [value[d] if layer.layout == 0 else value[:, d] for d in range(count)]
        return [build.const(v, f"{tag}{d}") if np.any(v) else None for d, v in enumerate(parts)]
    if count == 1:
        return [build.flat(name, [batch, hidden], tag)]
    if layer.layout == 0:  # [D, batch, H] -> rows of [D*batch, H]
        return build.split(build.flat(name, [count * batch, hidden], tag), 0, count, tag)
    return build.split(build.flat(name, [batch, count * hidden], tag), 1, count, tag)  # columns of [batch, D*H]


def _projection(layer: Layer, build: _Builder, x: str) -> list[list[str]]:
    """X @ W^T + biases for every step and direction in one MatMul, cut into [step][direction] pieces."""
    count, seq, batch, width = len(layer.directions), layer.seq, layer.batch, RECURRENT[layer.kind] * layer.hidden
    weights = np.concatenate([layer.w[d].T for d in range(count)], axis=1)  # [I, D*G*H]
    bias = layer.b[:, :width] + layer.b[:, width:]
    if layer.kind == "GRU" and layer.lbr:  # Rbh is applied inside r * (...), in the step
        bias[:, 2 * layer.hidden:] = layer.b[:, 2 * layer.hidden:width]
    rows = build.flat(x, [seq * batch, layer.size], "x2d")
    xw = build.op("MatMul", [rows, build.const(weights, "Wt")], "xw")
    if np.any(bias):
        xw = build.op("Add", [xw, build.const(bias.reshape(-1), "Wb")], "xwb")
    if layer.layout == 1:  # rows are batch-major: each step is a column block of [batch, seq*D*G*H]
        pieces = build.split(build.reshape(xw, [batch, seq * count * width], "xw_steps"), 1, seq * count, "xw_t")
        return [pieces[t * count:(t + 1) * count] for t in range(seq)]
    steps = [build.split(part, 0, seq, f"d{d}/xw_t") for d, part in enumerate(build.split(xw, 1, count, "xw_d"))]
    return [[steps[d][t] for d in range(count)] for t in range(seq)]


def _direction_constants(layer: Layer, build: _Builder, d: int) -> dict:
    """Recurrent weights (pre-transposed), peepholes and GRU's recurrent h bias for direction d."""
    hid, r, kind = layer.hidden, layer.r[d], layer.kind
    out = {}
    if kind == "GRU" and not layer.lbr:  # r gates the state before the h MatMul: two MatMuls
        out["Rzr"] = build.const(r[:2 * hid].T, f"d{d}/Rzr_t")
        out["Rh"] = build.const(r[2 * hid:].T, f"d{d}/Rh_t")
    else:
        out["R"] = build.const(r.T, f"d{d}/R_t")
    if kind == "GRU" and layer.lbr:
        rbh = layer.b[d, 5 * hid:6 * hid]
        out["Rbh"] = build.const(rbh, f"d{d}/Rbh") if np.any(rbh) else None
        out["Rb"] = build.const(np.concatenate([0 * rbh, 0 * rbh, rbh]), f"d{d}/Rb") if np.any(rbh) else None
    if layer.p is not None:
        for k, gate in enumerate("iof"):
            out[f"P{gate}"] = build.const(layer.p[d, k * hid:(k + 1) * hid], f"d{d}/P{gate}")
    return out


def _lstm_step(layer, build, acts, k, xw, h, c, tag):
    """One LSTM step; ``h``/``c`` None means a zero state (terms dropped). Returns (H, C)."""
    f, g, act_h = acts
    pre = build.add(xw, build.op("MatMul", [h, k["R"]], f"{tag}/hr") if h else None, f"{tag}/gates")
    pre = dict(zip("iofc", build.split(pre, 1, 4, f"{tag}/pre_")))

    def gate(name, state):
        x = pre[name]
        if layer.p is not None and state:
            x = build.op("Add", [x, build.op("Mul", [state, k[f"P{name}"]], f"{tag}/{name}_peep")], f"{tag}/{name}_sum")
        return build.op(f, [x], f"{tag}/{name}")

    new_c = build.op("Mul", [gate("i", c), build.op(g, [pre["c"]], f"{tag}/c_in")], f"{tag}/ic")
    if c:
        new_c = build.op("Add", [build.op("Mul", [gate("f", c), c], f"{tag}/fc"), new_c], f"{tag}/c")
    return build.op("Mul", [gate("o", new_c), build.op(act_h, [new_c], f"{tag}/c_act")], f"{tag}/h"), new_c


def _gru_step(layer, build, acts, k, xw, h, tag):
    """One GRU step; ``h`` None means a zero state. Returns H."""
    f, g = acts
    xz, xr, xh = build.split(xw, 1, 3, f"{tag}/xw_")
    if layer.lbr:  # h~ = g(xw_h + r * (H @ Rh^T + Rbh))
        rec = build.add(build.op("MatMul", [h, k["R"]], f"{tag}/hr") if h else None, k["Rb"], f"{tag}/hrb")
        hz, hr, hh = build.split(rec, 1, 3, f"{tag}/hr_") if h else (None, None, k["Rbh"])
    else:  # h~ = g(xw_h + (r * H) @ Rh^T)
        hz, hr = build.split(build.op("MatMul", [h, k["Rzr"]], f"{tag}/hr"), 1, 2, f"{tag}/hr_") if h else (None, None)
        hh = None
    z = build.op(f, [build.add(xz, hz, f"{tag}/z_pre")], f"{tag}/z")
    gated = None
    if hh or (h and not layer.lbr):  # the reset gate only matters when it multiplies something non-zero
        r = build.op(f, [build.add(xr, hr, f"{tag}/r_pre")], f"{tag}/r")
        if layer.lbr:
            gated = build.op("Mul", [r, hh], f"{tag}/r_rec")
        else:
            gated = build.op("MatMul", [build.op("Mul", [r, h], f"{tag}/rh"), k["Rh"]], f"{tag}/rhR")
    cand = build.op(g, [build.add(xh, gated, f"{tag}/h_pre")], f"{tag}/h_cand")
    if not h:  # H = (1 - z) * h~
        return build.op("Sub", [cand, build.op("Mul", [z, cand], f"{tag}/zh")], f"{tag}/h")
    # H = (1 - z) * h~ + z * H_prev, written with one Mul
    delta = build.op("Mul", [z, build.op("Sub", [h, cand], f"{tag}/dh")], f"{tag}/zdh")
    return build.op("Add", [cand, delta], f"{tag}/h")


def _lower(layer: Layer, build: _Builder, constants: dict, outputs: list[str]) -> None:
    """Emit the unrolled layer into ``build``, writing the wanted outputs under their own names."""
    node, count, seq, batch, hid = layer.node, len(layer.directions), layer.seq, layer.batch, layer.hidden
    inputs = list(node.input) + [""] * (8 - len(node.input))
    outputs = outputs + [""] * (3 - len(outputs))
    xw = _projection(layer, build, inputs[0])
    h0 = _initial_states(layer, build, constants, inputs[5], "h0_")
    c0 = _initial_states(layer, build, constants, inputs[6], "c0_") if layer.kind == "LSTM" else []
    hs, last_h, last_c = [], [], []
    for d, reverse in enumerate(layer.directions):
        k, acts = _direction_constants(layer, build, d), layer.activations[d]
        h, c, steps = h0[d], (c0[d] if c0 else None), [None] * seq
        for t in (reversed(range(seq)) if reverse else range(seq)):
            tag = f"d{d}/t{t}"
            if layer.kind == "LSTM":
                h, c = _lstm_step(layer, build, acts, k, xw[t][d], h, c, tag)
            elif layer.kind == "GRU":
                h = _gru_step(layer, build, acts, k, xw[t][d], h, tag)
            else:
                pre = build.add(xw[t][d], build.op("MatMul", [h, k["R"]], f"{tag}/hr") if h else None, f"{tag}/pre")
                h = build.op(acts[0], [pre], f"{tag}/h")
            steps[t] = h
        hs.append(steps)
        last_h.append(h)
        last_c.append(c)
    axis = 0 if layer.layout == 0 else 1  # 2-D pieces in the order of the flattened ONNX layout
    if outputs[0]:
        shape = [seq, count, batch, hid] if layer.layout == 0 else [batch, seq, count, hid]
        parts = [hs[d][t] for t in range(seq) for d in range(count)]
        build.reshape(build.concat(parts, axis, "Y_2d"), shape, "Y", outputs[0])
    state_shape = [count, batch, hid] if layer.layout == 0 else [batch, count, hid]
    for name, last, tag in ((outputs[1], last_h, "Y_h"), (outputs[2], last_c, "Y_c")):
        if name:
            build.reshape(build.concat(last, axis, f"{tag}_2d"), state_shape, tag, name)


def run(proto) -> list[str]:
    """Replace every LSTM, GRU and RNN node of the main graph by its unrolled steps.

    Args:
        proto: a shape-fixed onnx.ModelProto, edited in place.

    Returns:
        One line per kind of layer lowered, plus one per layer that had to be kept.

    Raises:
        UserError: a layer uses something that has no exact lowering
            (variable sequence lengths, clip, input_forget, other activations).
    """
    graph = proto.graph
    if not any(n.op_type in RECURRENT for n in graph.node):
        return []
    opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 7)
    constants, shapes = graph_constants(graph), static_shapes(proto)
    taken = {n.name for n in graph.node} | {o for n in graph.node for o in n.output} | set(constants)
    taken |= {i.name for i in graph.input}
    wanted = _readers(graph)
    producers = {o: n for n in graph.node for o in n.output}
    nodes, lowered, kept, replaced = [], {}, [], set()
    for node in graph.node:
        layer = read_layer(node, constants, shapes) if node.op_type in RECURRENT else None
        if isinstance(layer, str):
            kept.append(f"{node.op_type} '{node.name}' kept: {layer}")
        if not isinstance(layer, Layer):
            nodes.append(node)
            continue
        prefix = node.name or f"{node.op_type.lower()}{len(replaced)}"
        build = _Builder(prefix, taken, opset, layer.w.dtype, (producers, shapes))
        _lower(layer, build, constants, [o if o in wanted else "" for o in node.output])
        nodes.extend(build.nodes)
        graph.initializer.extend(build.inits)
        replaced.update(node.input)
        lowered.setdefault((node.op_type, layer.seq), []).append(node)
    del graph.node[:]
    graph.node.extend(nodes)
    _drop_dead(graph, replaced)
    return [f"{len(v)} {op} unrolled into primitive ops (seq {seq})" for (op, seq), v in lowered.items()] + kept


def _readers(graph):
    """How many times each value is read: by nodes, subgraphs (If, Loop read outer names) and graph outputs."""
    import collections

    readers = collections.Counter(o.name for o in graph.output)
    stack = [graph]
    while stack:
        for node in stack.pop().node:
            readers.update(node.input)
            stack.extend(a.g for a in node.attribute if a.HasField("g"))
            stack.extend(g for a in node.attribute for g in a.graphs)
    return readers


def _drop_dead(graph, candidates: set[str]) -> None:
    """Remove what only the lowered layers read: their weights and the reshapes they looked through.

    onnx2tf converts every node, dead or not, so a dangling 3-D reshape could still break it.
    """
    readers = _readers(graph)
    producers = {o: n for n in graph.node for o in n.output if o}
    dead_inits, queue = set(), [c for c in candidates if c]
    while queue:
        name = queue.pop()
        node = producers.get(name)
        if readers[name] or (node is not None and any(readers[o] for o in node.output if o)):
            continue
        if node is None:
            dead_inits.add(name)
        elif node in graph.node and node.domain in ("", "ai.onnx"):
            graph.node.remove(node)
            readers.subtract(node.input)
            queue.extend(i for i in node.input if i)
    inputs = {i.name for i in graph.input}
    keep = [t for t in graph.initializer if t.name not in dead_inits or t.name in inputs]
    if len(keep) != len(graph.initializer):
        del graph.initializer[:]
        graph.initializer.extend(keep)