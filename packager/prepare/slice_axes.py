"""Preparation pass: one Slice per axis where onnx2tf would misplace the bounds.

onnx2tf 1.28 builds ``tf.strided_slice`` from an ONNX Slice by mapping each
listed axis to its channels-last position (for rank >= 3: 0 -> 0, 1 -> last,
k -> k-1) and then *inserting the starts/ends positionally*, in the order the
axes were listed. Its guard for axes that end up out of order checks
``len(axes.shape) > 1``, which a 1-D axes vector never satisfies, so the
re-ordering never happens. Whenever the mapped axes are not ascending, each
bound lands on the wrong dimension: Slice(axes=[1, 2]) of an NCW tensor
(channel half, frames from 1) becomes a slice of the *frames* by the channel
bounds, and the shapes only disagree later ("dummy_tensor" UnboundLocalError
in the next Add, a batch of 0, or a Conv that rejects its input).

onnxsim (our simplify pass) fuses a torch export's consecutive single-axis
Slices (``x[:, :n, 1:]``) into exactly such a multi-axis Slice, so every 1-D
convolutional audio front-end that splits an STFT into real and imaginary
halves (Silero VAD) meets this, as does an NCHW slice over channel and H.

This pass rewrites only the Slices at risk -- more than one listed axis, not
ascending in ONNX order or in channels-last order -- into a chain of
single-axis Slices with explicit, clamped bounds and steps; axes that keep
their full range are dropped. It must run after the last onnxsim run (which
would fuse the chain back).
"""

from __future__ import annotations

import numpy as np

from .rewriting import fresh_name


def channels_last_axis(axis: int, rank: int) -> int:
    """Where onnx2tf puts ONNX ``axis`` of a rank-``rank`` tensor it lays out channels-last."""
    if rank < 3 or axis == 0:
        return axis
    return rank - 1 if axis == 1 else axis - 1


def at_risk(axes: list[int], rank: int) -> bool:
    """True when onnx2tf would insert the bounds of a Slice over ``axes`` (normalised, >= 0) out of place."""
    if len(axes) < 2:
        return False
    moved = [channels_last_axis(a, rank) for a in axes]
    return axes != sorted(axes) or moved != sorted(moved)


def _constants(graph) -> dict:
    """name -> TensorProto of every initializer and Constant-node tensor of the main graph (read on use:
    converting every weight up front would cost a large model's size in memory)."""
    values = {t.name: t for t in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.domain in ("", "ai.onnx"):
            for attr in node.attribute:
                if attr.name == "value" and attr.HasField("t"):
                    values[node.output[0]] = attr.t
    return values


def _shapes(proto) -> dict[str, list[int]]:
    """name -> static dims (0 where unknown) of every tensor with shape information."""
    graph = proto.graph
    return {v.name: [d.dim_value if d.HasField("dim_value") else 0 for d in v.type.tensor_type.shape.dim]
            for v in (*graph.input, *graph.value_info, *graph.output) if v.type.tensor_type.HasField("shape")}


def _slice_params(node, constants: dict, opset: int):
    """(starts, ends, axes, steps) as int lists, or None when any is not a constant."""
    if opset < 10:  # attribute form
        attrs = {a.name: list(a.ints) for a in node.attribute}
        starts, ends = attrs.get("starts"), attrs.get("ends")
        if starts is None or ends is None:
            return None
        return starts, ends, attrs.get("axes", list(range(len(starts)))), [1] * len(starts)
    from onnx import numpy_helper

    inputs = list(node.input) + [""] * (5 - len(node.input))
    if any(name and name not in constants for name in inputs[1:]):
        return None
    starts, ends, axes, steps = (numpy_helper.to_array(constants[name]).tolist() if name else None
                                 for name in inputs[1:])
    axes = list(range(len(starts))) if axes is None else axes
    return starts, ends, axes, [1] * len(starts) if steps is None else steps


def _bounds(start: int, end: int, step: int, dim: int) -> tuple[int, int] | None:
    """Explicit in-range bounds, or None when the axis keeps its full range."""
    if dim <= 0 or step < 0:  # unknown size or reversed: keep the model's own values
        return start, end
    first, stop, _ = slice(start, end, step).indices(dim)
    if step == 1 and first == 0 and stop == dim:
        return None
    return first, max(stop, first)


def _chain(node, x: str, parts: list[tuple], names, opset: int) -> tuple[list, list]:
    """Single-axis Slice nodes (and their constant inputs) applying ``parts`` in turn."""
    from onnx import helper, numpy_helper

    nodes, inits = [], []
    for k, (axis, start, end, step) in enumerate(parts):
        base = names(f"{node.name or node.output[0]}/axis{axis}")
        out = node.output[0] if k == len(parts) - 1 else names(f"{base}_out")
        if opset < 10:
            nodes.append(helper.make_node("Slice", [x], [out], name=base, starts=[start], ends=[end], axes=[axis]))
        else:
            params = []
            for key, value in (("starts", start), ("ends", end), ("axes", axis), ("steps", step)):
                params.append(names(f"{base}_{key}"))
                inits.append(numpy_helper.from_array(np.array([value], np.int64), params[-1]))
            nodes.append(helper.make_node("Slice", [x, *params], [out], name=base))
        x = out
    return nodes, inits


def _rewrite(node, shape: list[int], params, names, opset: int):
    """The replacement nodes and initializers for one at-risk Slice."""
    from onnx import helper

    rank = len(shape)
    parts = []
    for start, end, axis, step in sorted(zip(*params), key=lambda p: p[2] % rank):
        axis %= rank
        bounds = _bounds(int(start), int(end), int(step), shape[axis])
        if bounds is not None:
            parts.append((axis, *bounds, int(step)))
    if not parts:  # every axis kept whole
        return [helper.make_node("Identity", [node.input[0]], [node.output[0]], name=node.name)], []
    return _chain(node, node.input[0], parts, names, opset)


def _namer(proto):
    """A function giving names no node, tensor or initializer of ``proto`` uses yet."""
    taken = {n.name for n in proto.graph.node} | {t.name for t in proto.graph.initializer}
    taken |= {name for n in proto.graph.node for name in (*n.input, *n.output)}

    return lambda base: fresh_name(base, taken)


def _used_names(graph) -> set[str]:
    """Every tensor name a node reads, subgraphs included (they may read outer-scope names)."""
    used = set()
    for node in graph.node:
        used.update(node.input)
        for attr in node.attribute:
            for sub in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
                used |= _used_names(sub)
    used.update(o.name for o in graph.output)
    return used


def _drop_unused(graph, candidates: set[str]) -> None:
    """Remove the rewritten Slices' old bounds when nothing else reads them."""
    dead = candidates - _used_names(graph)
    keep_inits = [t for t in graph.initializer if t.name not in dead]
    keep_nodes = [n for n in graph.node if not (n.op_type == "Constant" and n.output[0] in dead)]
    del graph.initializer[:]
    graph.initializer.extend(keep_inits)
    del graph.node[:]
    graph.node.extend(keep_nodes)


def run(proto) -> list[str]:
    """Split the main graph's at-risk multi-axis Slices into single-axis Slices.

    Args:
        proto: the shape-fixed, shape-inferred ONNX model, edited in place.

    Returns:
        One line saying how many Slices were split, or [] when none was at risk.
    """
    graph = proto.graph
    opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 13)
    constants, shapes, names = _constants(graph), _shapes(proto), _namer(proto)
    new_nodes, new_inits, split, old_bounds = [], [], [], set()
    for node in graph.node:
        shape = shapes.get(node.input[0]) if node.op_type == "Slice" and node.domain in ("", "ai.onnx") else None
        params = _slice_params(node, constants, opset) if shape else None
        if params is None or not at_risk([a % len(shape) for a in params[2]], len(shape)):
            new_nodes.append(node)
            continue
        nodes, inits = _rewrite(node, shape, params, names, opset)
        new_nodes.extend(nodes)
        new_inits.extend(inits)
        old_bounds.update(name for name in node.input[1:] if name)
        split.append(f"{len(shape)}-D axes {list(params[2])} -> {len(nodes)}")
    if not split:
        return []
    del graph.node[:]
    graph.node.extend(new_nodes)
    graph.initializer.extend(new_inits)
    _drop_unused(graph, old_bounds)
    shown = ", ".join(split[:3]) + (" ..." if len(split) > 3 else "")
    return [f"{len(split)} multi-axis Slice(s) split into one Slice per axis ({shown}) "
            "so onnx2tf places each bound on its own axis"]
