"""The dynamic forms of onnxruntime's quantization, back to float (used by the dequantize pass).

``quantize_dynamic`` writes ``DynamicQuantizeLinear -> MatMulInteger /
ConvInteger -> Cast -> Mul(scales)`` chains and ``DynamicQuantizeLSTM``;
its graph optimizer fuses them into ``DynamicQuantizeMatMul`` and
``MatMulIntegerToFloat``. Each becomes the float op on the float input with
dequantized weights (the activation's own rounding goes: our calibration
quantizes it again).
"""

from __future__ import annotations

import numpy as np

from .quantized_graph import MS_DOMAIN, QDQ_OPS, STD_DOMAINS, QuantizedGraph, along, attributes


def _integer_weight(op: str, q, zp, scale):
    """Float weight of a MatMulInteger (per column) or ConvInteger (per output channel) constant."""
    zp = np.zeros((), q.dtype) if zp is None else np.asarray(zp)
    scale = np.asarray(scale, np.float32)
    if op == "ConvInteger":
        padded = (1,) * (q.ndim - scale.ndim) + scale.shape
        if scale.size > 1 and padded != (1, q.shape[0]) + (1,) * (q.ndim - 2):
            return None  # the scale would not broadcast over output channels
        scale, zp = along(scale, q.ndim, 0), along(zp, q.ndim, 0)
    weight = (q.astype(np.int64) - zp.astype(np.int64)).astype(np.float32) * scale
    return weight.astype(np.float32) if weight.shape == q.shape else None


def _integer_operand(g: QuantizedGraph, q: str, zp: str) -> tuple:
    """How a MatMulInteger/ConvInteger input was quantized: ("dynamic", x, scale), ("const", q, zp) or
    ("static", q, zp) for an 8-bit activation with a constant zero point (e.g. a Gather of an 8-bit table)."""
    source = g.producer.get(q)
    if source is not None and source.op_type == "DynamicQuantizeLinear" and zp in ("", source.output[2]):
        return "dynamic", source.input[0], source.output[1]
    if zp and zp not in g.const:
        return ("none",)
    return ("const", g.const[q], g.const.get(zp)) if q in g.const else ("static", q, zp)


def _integer_float(g: QuantizedGraph, op: str, operand: tuple, scale: str, pre: list) -> str | None:
    """The float tensor an integer op's input stands for, given the scale the output Mul applies to it."""
    kind, value, extra = operand  # extra: the DynamicQuantizeLinear scale, else the zero point
    if kind == "dynamic":
        return value if scale == extra else None
    if scale not in g.const:
        return None
    if kind == "static":
        return g.float_of(value, scale, extra, pre) if g.const[scale].size == 1 else None
    weight = _integer_weight(op, value, extra, g.const[scale])
    return None if weight is None else g.add_const("weight_float", weight)


def _integer_chain(g: QuantizedGraph, node):
    """``node -> Cast(float) -> Mul(S)`` with S = Mul(scale a, scale b): (nodes before, float a, float b, Mul, Cast)."""
    a = _integer_operand(g, node.input[0], node.input[2] if len(node.input) > 2 else "")
    b = _integer_operand(g, node.input[1], node.input[3] if len(node.input) > 3 else "")
    cast = g.only_consumer(node.output[0], "Cast")
    if a[0] not in ("dynamic", "static") or b[0] == "none" or not cast or attributes(cast).get("to") != 1:
        return None
    mul = g.only_consumer(cast.output[0], "Mul")
    scales = mul and g.producer.get(mul.input[1] if mul.input[0] == cast.output[0] else mul.input[0])
    if not scales or scales.op_type != "Mul":
        return None
    sa, sb = scales.input  # onnxruntime multiplies A's scale by B's
    if a[0] == "dynamic" or b[0] == "dynamic":
        known = a[2] if a[0] == "dynamic" else b[2]
        if known not in scales.input:
            return None
        other = sb if sa == known else sa
        sa, sb = (known, other) if a[0] == "dynamic" else (other, known)
    pre = []
    fa = _integer_float(g, "", a, sa, pre)
    fb = _integer_float(g, node.op_type, b, sb, pre)
    return None if fa is None or fb is None else (pre, fa, fb, mul, cast)


def _lstm(g: QuantizedGraph, node) -> list | None:
    """DynamicQuantizeLSTM -> LSTM: W [nd, in, 4h] / R [nd, h, 4h] int8 become [nd, 4h, in] / [nd, 4h, h]."""
    inputs = list(node.input) + [""] * (12 - len(node.input))
    weights = []
    for q, scale, zp in ((inputs[1], inputs[8], inputs[9]), (inputs[2], inputs[10], inputs[11])):
        if q not in g.const or scale not in g.const or (zp and zp not in g.const):
            return None
        value = g.const[q]
        per = (value.shape[0], 1, -1) if g.const[scale].size > 1 else ()  # per direction or per direction+column
        s = g.const[scale].reshape(per)
        z = np.zeros((), value.dtype) if not zp else g.const[zp].reshape(per)
        weight = ((value.astype(np.int64) - z.astype(np.int64)).astype(np.float32) * s).astype(np.float32)
        weights.append(g.add_const(q + "_float", np.ascontiguousarray(weight.transpose(0, 2, 1))))
    lstm_inputs = [inputs[0], *weights, *inputs[3:8]]
    while not lstm_inputs[-1]:
        lstm_inputs.pop()
    return [g.node("LSTM", lstm_inputs, node.output, name=node.name, **attributes(node))]


def _matmul_to_float(g: QuantizedGraph, node) -> list | None:
    """DynamicQuantizeMatMul / MatMulIntegerToFloat -> MatMul (+ Add bias)."""
    inputs = list(node.input) + [""] * (7 - len(node.input))
    if node.op_type == "DynamicQuantizeMatMul":
        x, (q, scale, zp, bias) = inputs[0], inputs[1:5]
    else:
        source = g.producer.get(inputs[0])
        if source is None or source.op_type != "DynamicQuantizeLinear" or inputs[2] != source.output[1] \
                or inputs[4] not in ("", source.output[2]):
            return None
        x, q, scale, zp, bias = source.input[0], inputs[1], inputs[3], inputs[5], inputs[6]
    if q not in g.const or scale not in g.const or (zp and zp not in g.const):
        return None
    weight = _integer_weight("MatMulInteger", g.const[q], g.const.get(zp), g.const[scale])
    if weight is None:
        return None
    w = g.add_const(q + "_float", weight)
    if not bias:
        return [g.node("MatMul", [x, w], node.output)]
    mid = g.fresh(node.output[0] + "_matmul")
    return [g.node("MatMul", [x, w], [mid]), g.node("Add", [mid, bias], node.output)]


def rewrite(g: QuantizedGraph) -> None:
    """Every dynamic-quantization chain or contrib op of the main graph made float."""
    replace, drop = {}, set()
    for node in g.each():
        new = None
        if node.op_type in ("MatMulInteger", "ConvInteger") and node.domain in STD_DOMAINS:
            match = _integer_chain(g, node)
            if match:
                pre, x, w, mul, cast = match
                new = pre + [g.node("MatMul" if node.op_type == "MatMulInteger" else "Conv", [x, w], mul.output,
                                    **attributes(node))]
                drop.update((id(cast), id(mul)))
        elif node.domain == MS_DOMAIN and node.op_type == "DynamicQuantizeLSTM":
            new = _lstm(g, node)
        elif node.domain == MS_DOMAIN and node.op_type in ("DynamicQuantizeMatMul", "MatMulIntegerToFloat"):
            new = _matmul_to_float(g, node)
        if new:
            g.counts[f"{node.op_type} -> {'+'.join(n.op_type for n in new if n.op_type not in QDQ_OPS)}"] += 1
            replace[id(node)] = new
    g.rewrite(replace, drop)
