"""Preparation pass: pre-quantized ONNX (onnxruntime's three forms) back to float.

onnx2tf has no handler for onnxruntime's contrib ops and cannot convert
integer arithmetic, and our own calibration re-quantizes the model anyway.
So every quantized op becomes its float op with dequantized weights:

  dynamic     ``DynamicQuantizeLinear -> MatMulInteger/ConvInteger -> Cast ->
              Mul(scales)`` chains, ``DynamicQuantizeLSTM``,
              ``DynamicQuantizeMatMul`` and ``MatMulIntegerToFloat``
              (integer_ops);
  QOperator   ``QLinearX`` ops expanded to ``DequantizeLinear -> X ->
              QuantizeLinear``; ops that work on 8-bit tensors directly
              (MaxPool, Reshape, Gather, ...) moved into float the same way;
  QDQ         ``DequantizeLinear`` of constants folded into float
              initializers, ``QuantizeLinear -> DequantizeLinear`` pairs on
              activations removed (the float tensor passes straight through).

onnxruntime deletes a Relu or Clip before quantizing when the quantized range
already clamps at zero, so removing the Q/DQ pair would lose that clamp: a
one-sided range (zero point at the type's minimum) on a tensor that can be
negative gets a Relu back (Clip 0..6 when the range tops out at 6).
Q/DQ on the graph's own integer inputs and outputs stay: removing them would
change the model's interface.
"""

from __future__ import annotations

import collections

import numpy as np

from edge_runtime.errors import UserError

from . import integer_ops
from .rewriting import reads, topological
from .quantized_graph import (
    DIRECT, MS_DOMAIN, NONNEG, QDQ_OPS, QLINEAR, SIGN_KEEPING, STD_DOMAINS,
    QuantizedGraph, attributes, dequantize_array, is_quantized, quantize_array, walk_graphs,
)

# --- QOperator expansion, ops on 8-bit tensors ---------------------------------------------------------


def _float_attrs(g: QuantizedGraph, node, attrs: dict, pre: list, post: list, x: str, y: str) -> tuple[str, str] | None:
    """Attributes the contrib op has and the float op has not; None when they cannot be expressed."""
    if attrs.pop("channels_last", 0):  # NHWC in and out: transpose around the NCHW float op
        rank = g.rank.get(node.input[0]) or (len(attrs["kernel_shape"]) + 2 if "kernel_shape" in attrs else 0)
        if not rank:
            return None
        to_first, to_last = [0, rank - 1, *range(1, rank - 1)], [0, *range(2, rank), 1]
        x_first, y_first = g.fresh(x + "_nchw"), g.fresh(y + "_nchw")
        pre.append(g.node("Transpose", [x], [x_first], perm=to_first))
        post.insert(0, g.node("Transpose", [y_first], [y], perm=to_last))
        x, y = x_first, y_first
    op_set = attrs.pop("opset", None)
    if node.op_type == "QLinearSoftmax" and op_set is not None and (op_set < 13) != (g.opset < 13):
        if attrs.get("axis", -1) not in (-1, g.rank.get(node.input[0], 0) - 1):
            return None  # softmax over a flattened tail: not the float op's semantics
    return x, y


def _expand(g: QuantizedGraph, node) -> list | None:
    """QLinearX -> DequantizeLinear(inputs) -> X -> QuantizeLinear, weights folded."""
    op, spec, (ys, yzp) = QLINEAR[node.op_type]
    inputs = list(node.input) + [""] * 10
    if spec is None:  # QLinearConcat: y_scale, y_zp, then (q, scale, zp) triplets
        spec = [(k, k + 1, k + 2) for k in range(2, len(node.input), 3)]
    attrs = attributes(node)
    pre, post, float_inputs = [], [], []
    for item in spec:
        if item[0] == "raw":
            float_inputs.append(inputs[item[1]])
        elif item[0] == "bias":
            _, k, sa, sb = item
            if not inputs[k]:
                continue
            if not all(n in g.const for n in (inputs[k], inputs[sa], inputs[sb])):
                return None
            bias = g.const[inputs[k]].astype(np.float64) * g.const[inputs[sa]] * g.const[inputs[sb]]
            float_inputs.append(g.add_const(inputs[k] + "_float", bias.astype(np.float32)))
        else:
            axis = item[3] if len(item) > 3 else None
            axis = (1 - attrs.get("transB", 0)) if axis == "transB" else axis
            if axis == -1 and inputs[item[0]] in g.const:
                axis = g.const[inputs[item[0]]].ndim - 1
            float_inputs.append(g.float_of(inputs[item[0]], inputs[item[1]], inputs[item[2]], pre, axis))
    out = g.fresh(node.output[0] + "_float") if inputs[ys] else node.output[0]
    if inputs[ys]:
        post.append(g.node("QuantizeLinear", [out, inputs[ys]] + ([inputs[yzp]] if inputs[yzp] else []),
                           node.output))
    x_y = _float_attrs(g, node, attrs, pre, post, float_inputs[0], out)
    if x_y is None:
        return None
    float_inputs[0], out = x_y
    if op == "ReduceMean" and g.opset >= 18 and "axes" in attrs:
        float_inputs.append(g.add_const(node.output[0] + "_axes", np.array(attrs.pop("axes"), np.int64)))
    return [*pre, g.node(op, float_inputs, [out], name=node.name, **attrs), *post]


def _expand_qlinear(g: QuantizedGraph) -> None:
    replace = {}
    for node in g.each():
        if node.domain in (*STD_DOMAINS, MS_DOMAIN) and node.op_type in QLINEAR:
            new = _expand(g, node)
            if new:
                g.counts[f"{node.op_type} -> {QLINEAR[node.op_type][0]}"] += 1
                replace[id(node)] = new
    g.rewrite(replace, set())


def _direct_params(g: QuantizedGraph, node):
    """The quantization of a direct op's 8-bit data input: from its Q producer, else from DQ consumers."""
    source = g.producer.get(node.input[0])
    if source is not None and source.op_type == "QuantizeLinear":
        return g.params(source)
    if node.input[0] not in g.const and (source is not None or node.input[0] not in g.inputs):
        return None  # an 8-bit constant (initializer or Constant node) or graph input is read by DQs
    users = [u for k in DIRECT[node.op_type] if k < len(node.output) for u in g.consumers.get(node.output[k], [])]
    found = [g.params(u) if u.op_type == "DequantizeLinear" else None for u in users]
    ok = found and all(found) and all(g.same(found[0], p) for p in found[1:])
    return found[0] if ok else None


def _direct_node(g: QuantizedGraph, node, params, drop: set) -> list | None:
    inputs, attrs, new = list(node.input), attributes(node), []
    inputs[0] = g.float_of(inputs[0], *params, new)
    if node.op_type == "Pad":  # the pad value is a quantized integer too
        if len(inputs) > 2 and inputs[2]:
            if inputs[2] not in g.const:
                return None
            inputs[2] = g.add_const(inputs[2] + "_float", dequantize_array(g.const[inputs[2]], *(
                g.const.get(p) for p in params)).astype(np.float32))
        elif "value" in attrs:
            attrs["value"] = float(dequantize_array(np.array(attrs["value"]), *(g.const.get(p) for p in params)))
    quantized = [k for k in DIRECT[node.op_type] if k < len(node.output) and node.output[k]]
    outputs = [g.fresh(o + "_float") if k in quantized else o for k, o in enumerate(node.output)]
    new.append(g.node(node.op_type, inputs, outputs, **attrs))
    for k in quantized:
        old, users = node.output[k], g.consumers.get(node.output[k], [])
        for user in users:
            if user.op_type == "DequantizeLinear" and g.params(user) and g.same(g.params(user), params):
                g.alias[user.output[0]] = outputs[k]
                drop.add(id(user))
        if old in g.outputs or any(id(u) not in drop for u in users):
            new.append(g.node("QuantizeLinear", [outputs[k], *(p for p in params if p)], [old]))
    return new


def _direct(g: QuantizedGraph) -> bool:
    """Ops that run on 8-bit tensors (MaxPool, Reshape, Gather, ...) moved into float between Q/DQ."""
    replace, drop = {}, set()
    for node in g.each():
        params = _direct_params(g, node) if node.op_type in DIRECT and node.domain in STD_DOMAINS else None
        new = params and _direct_node(g, node, params, drop)
        if new:
            g.counts[f"{node.op_type} on 8-bit tensors -> float"] += 1
            replace[id(node)] = new
    g.rewrite(replace, drop)
    g.apply_alias()
    return bool(replace)


# --- constants and Q/DQ pairs --------------------------------------------------------------------------


def _fold_constants(g: QuantizedGraph) -> None:
    """DequantizeLinear (and QuantizeLinear) of constants computed into initializers."""
    from onnx import helper

    drop = set()
    for node in g.each():
        if node.op_type not in QDQ_OPS or not all(i in g.const for i in node.input if i):
            continue
        x, scale, zp = (list(g.const.get(i) if i else None for i in node.input) + [None])[:3]
        attrs = attributes(node)
        axis = attrs.get("axis", 1) % max(x.ndim, 1)
        if node.op_type == "DequantizeLinear":
            value = dequantize_array(x, scale, zp, axis, attrs.get("block_size", 0))
        elif attrs.get("block_size"):
            continue
        else:
            dtype = helper.tensor_dtype_to_np_dtype(attrs["output_dtype"]) if attrs.get("output_dtype") else np.uint8
            value = quantize_array(x.astype(np.float64), scale, zp, axis, dtype)
        if node.op_type == "DequantizeLinear" and attrs.get("output_dtype"):
            value = value.astype(helper.tensor_dtype_to_np_dtype(attrs["output_dtype"]))
        g.add_const(node.output[0], value, exact=True)
        g.counts[f"{node.op_type} of constants folded"] += 1
        drop.add(id(node))
    g.rewrite({}, drop)


def _nonneg(g: QuantizedGraph, name: str, depth: int = 8) -> bool:
    """Whether ``name`` cannot be negative (so a restored Relu would do nothing)."""
    node = g.producer.get(name)
    if node is None or depth == 0:
        return False
    if node.op_type in NONNEG:
        return True
    if node.op_type == "Clip":
        low = node.input[1] if len(node.input) > 1 else ""
        return bool(low in g.const and g.const[low] >= 0) or attributes(node).get("min", -1.0) >= 0
    if node.op_type == "DequantizeLinear" and g.params(node):
        zp = g.const.get(node.input[2]) if len(node.input) > 2 else np.zeros((), np.uint8)
        return np.issubdtype(zp.dtype, np.integer) and int(zp) == np.iinfo(zp.dtype).min
    if node.op_type in ("Add", "Mul", "Max"):  # Max: one non-negative input is enough
        signs = [bool(np.all(g.const[i] >= 0)) if i in g.const else _nonneg(g, i, depth - 1) for i in node.input]
        return any(signs) if node.op_type == "Max" else all(signs)
    data = node.input if node.op_type == "Concat" else node.input[:1]
    return node.op_type in SIGN_KEEPING and all(_nonneg(g, d, depth - 1) for d in data)


def _clamp(g: QuantizedGraph, q) -> list:
    """A Relu (or Clip 0..6) for a QuantizeLinear whose range is one-sided, where the clamp matters."""
    params = g.params(q)
    x = q.input[0]
    users = [u for dq in g.consumers.get(q.output[0], []) for u in g.consumers.get(dq.output[0], [])]
    if params is None or x in g.inputs or _nonneg(g, x) or (users and all(u.op_type == "Relu" for u in users)):
        return []  # nothing negative to clamp, or the model clamps it itself
    zp = g.const[params[1]] if params[1] else np.zeros((), np.uint8)
    if not np.issubdtype(zp.dtype, np.integer) or int(zp) != np.iinfo(zp.dtype).min:
        return []
    scale = float(g.const[params[0]])
    top = (np.iinfo(zp.dtype).max - int(zp)) * scale
    out = g.fresh(x + "_clamped")
    if abs(top - 6.0) > scale:
        return [g.node("Relu", [x], [out])]
    if g.opset < 11:
        return [g.node("Clip", [x], [out], min=0.0, max=6.0)]
    low, high = (g.add_const(f"{x}_{n}", np.array(v, np.float32)) for n, v in (("min", 0.0), ("max", 6.0)))
    return [g.node("Clip", [x, low, high], [out])]


def _cancel_pairs(g: QuantizedGraph) -> None:
    """QuantizeLinear -> DequantizeLinear on activations: the float tensor passes straight through."""
    drop, passed, replace = set(), {}, {}
    for node in g.each():
        source = g.producer.get(node.input[0]) if node.op_type == "DequantizeLinear" else None
        if source is None or source.op_type != "QuantizeLinear":  # Constant nodes have no input at all
            continue
        if id(source) not in passed:
            clamp = _clamp(g, source)
            passed[id(source)] = clamp[-1].output[0] if clamp else source.input[0]
            replace[id(source)] = [*clamp, source]
            g.counts["Relu/Clip restored where a one-sided quantized range stood for it"] += len(clamp)
        g.alias[node.output[0]] = passed[id(source)]
        g.counts["QuantizeLinear -> DequantizeLinear pairs removed"] += 1
        drop.add(id(node))
    g.rewrite(replace, drop)
    g.apply_alias()


# --- clean-up ------------------------------------------------------------------------------------------


def _finish(g: QuantizedGraph) -> None:
    """Dead nodes and unused initializers out, nodes in order, stale value_info gone."""
    needed, kept = set(g.outputs), []
    for node in reversed(topological(g.nodes, g.inputs | set(g.const))):
        if any(o in needed for o in node.output):
            kept.append(node)
            needed.update(reads(node))
    g.graph.ClearField("node")
    g.graph.node.extend(reversed(kept))
    unused = {i.name for i in g.graph.initializer if i.name not in needed}
    kept_inits = [i for i in g.graph.initializer if i.name not in unused]
    g.graph.ClearField("initializer")
    g.graph.initializer.extend(kept_inits)
    kept_inputs = [i for i in g.graph.input if i.name not in unused]
    g.graph.ClearField("input")
    g.graph.input.extend(kept_inputs)
    g.graph.ClearField("value_info")  # tensor types changed; the runner infers shapes again
    if not any(n.domain == MS_DOMAIN for n in g.graph.node):
        kept_opsets = [o for o in g.proto.opset_import if o.domain != MS_DOMAIN]
        g.proto.ClearField("opset_import")
        g.proto.opset_import.extend(kept_opsets)


def _rewrite(g: QuantizedGraph) -> None:
    for node in g.nodes:  # onnxruntime's contrib Q/DQ mean the standard ones for these types
        if node.domain == MS_DOMAIN and node.op_type in QDQ_OPS:
            node.domain = ""
    integer_ops.rewrite(g)
    _expand_qlinear(g)
    _fold_constants(g)
    for _ in range(len(g.nodes)):  # a chain of them moves one op per round
        if not _direct(g):
            break
    _fold_constants(g)
    _cancel_pairs(g)
    _finish(g)


def _named(nodes) -> str:
    """"ConvInteger (conv1, conv2), DynamicQuantizeLinear (x_q)": each op type with its first node names."""
    by_op = collections.defaultdict(list)
    for node in nodes:
        by_op[node.op_type].append(node.name or node.output[0])
    return ", ".join(f"{op} ({', '.join(names[:3])}{', ...' if len(names) > 3 else ''})"
                     for op, names in sorted(by_op.items()))


def run(proto) -> list[str]:
    """Turn ``proto``'s quantized ops back into float ops with dequantized weights, in place.

    Returns:
        One line per kind of rewrite, e.g. "QLinearConv -> Conv x3"; empty if nothing was quantized.

    Raises:
        UserError: quantized ops are left that this pass cannot turn back into float (named), or
            rewriting one of them failed (that node named).
    """
    if not any(is_quantized(n) or n.op_type in QDQ_OPS for n in walk_graphs(proto.graph)):
        return []
    g = QuantizedGraph(proto)
    try:
        _rewrite(g)
    except UserError:
        raise
    except Exception as exc:  # a form this pass has not met: name the node, never leave it half-done
        node = g.current
        where = f"{node.op_type} node '{node.name or node.output[0]}'" if node is not None else "the graph"
        raise UserError(
            f"the model's quantized ops cannot be turned back into float: rewriting {where} failed "
            f"({type(exc).__name__}: {str(exc).strip()[:160]})",
            "this is an edgepack bug; please report it with the model. Exporting the float model (before "
            "onnxruntime quantization) works around it: edgepack quantizes it itself") from exc
    left = [n for n in g.graph.node if is_quantized(n)]
    nested = [n for n in walk_graphs(g.graph) if is_quantized(n) and all(n is not m for m in left)]
    if left or nested:  # control-flow bodies are not rewritten: their names live in another scope
        where = [f"{_named(left)} left after dequantizing"] * bool(left) + [
            f"{_named(nested)} inside If/Loop bodies whose condition is not a constant"] * bool(nested)
        raise UserError(
            f"the model's quantized ops cannot be turned back into float: {'; '.join(where)}",
            "export the float model (before onnxruntime quantization) instead; edgepack quantizes it itself")
    changes = [f"{what} x{n}" for what, n in g.counts.items() if n]
    kept = collections.Counter(n.op_type for n in g.graph.node if n.op_type in QDQ_OPS)
    if kept:
        changes.append("kept at the model's integer inputs/outputs: "
                       + ", ".join(f"{op} x{n}" for op, n in sorted(kept.items())))
    return changes
