"""Preparation pass: pre-quantized ONNX (onnxruntime's three forms) back to float.

onnx2tf has no handler for onnxruntime's contrib ops and cannot convert
integer arithmetic, and our own calibration re-quantizes the model anyway.
So every quantized op becomes its float op with dequantized weights:

  dynamic     ``DynamicQuantizeLinear -> MatMulInteger/ConvInteger -> Cast ->
              Mul(scales)`` chains, ``DynamicQuantizeLSTM``,
              ``DynamicQuantizeMatMul`` and ``MatMulIntegerToFloat``;
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
import itertools

import numpy as np

from edge_runtime.errors import UserError

_MS = "com.microsoft"
_STD = ("", "ai.onnx")
_QDQ = ("QuantizeLinear", "DequantizeLinear")
_INTEGER_OPS = {"MatMulInteger", "ConvInteger", "DynamicQuantizeLinear", "QLinearConv", "QLinearMatMul"}
_MS_QUANTIZED = ("QLinear", "QGemm", "QAttention", "QEmbed", "QOrdered", "QMoE", "MatMulNBits")
# float op, quantized inputs as (q, scale, zero point[, weight axis]) or ("raw", i) or ("bias", i, scale_a,
# scale_b), and the output's (scale, zero point) inputs
_QLINEAR = {
    "QLinearConv": ("Conv", [(0, 1, 2), (3, 4, 5, 0), ("bias", 8, 1, 4)], (6, 7)),
    "QLinearMatMul": ("MatMul", [(0, 1, 2), (3, 4, 5, -1)], (6, 7)),
    "QGemm": ("Gemm", [(0, 1, 2), (3, 4, 5, "transB"), ("bias", 6, 1, 4)], (7, 8)),
    "QLinearAdd": ("Add", [(0, 1, 2), (3, 4, 5)], (6, 7)),
    "QLinearMul": ("Mul", [(0, 1, 2), (3, 4, 5)], (6, 7)),
    "QLinearWhere": ("Where", [("raw", 0), (1, 2, 3), (4, 5, 6)], (7, 8)),
    "QLinearConcat": ("Concat", None, (0, 1)),
    **{f"QLinear{op}": (op, [(0, 1, 2)], (3, 4)) for op in (
        "Sigmoid", "LeakyRelu", "Softmax", "AveragePool", "GlobalAveragePool", "ReduceMean")},
}
# ops onnxruntime runs on 8-bit tensors as they are: which outputs carry the input's quantization
_DIRECT = {op: (0,) for op in (
    "MaxPool", "GlobalMaxPool", "Reshape", "Squeeze", "Unsqueeze", "Flatten", "Transpose", "Pad", "Resize", "Gather",
    "GatherElements", "GatherND", "Slice", "Identity", "DepthToSpace", "SpaceToDepth", "Expand", "Tile", "TopK",
    "ReduceMax", "ReduceMin")}
_DIRECT.update({"ArgMax": (), "ArgMin": (), "Split": tuple(range(64))})
_NONNEG = {"Relu", "Sigmoid", "Softmax", "Exp", "Abs", "Sqrt", "Softplus", "HardSigmoid"}
_SIGN_KEEPING = {"MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "Reshape", "Transpose", "Flatten",
                 "Squeeze", "Unsqueeze", "Slice", "Split", "Resize", "Identity", "Concat", "DepthToSpace"}


def _is_quantized(node) -> bool:
    if node.domain in _STD:
        return node.op_type in _INTEGER_OPS
    return node.domain == _MS and (node.op_type.startswith(_MS_QUANTIZED) or "Quant" in node.op_type
                                   or "Integer" in node.op_type)


def _walk(graph):
    """Every node of ``graph``, inside If/Loop/Scan bodies too."""
    for node in graph.node:
        yield node
        for attr in node.attribute:
            for sub in [attr.g] if attr.HasField("g") else list(attr.graphs):
                yield from _walk(sub)


def _attrs(node, skip=()) -> dict:
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in node.attribute if a.name not in skip}


def _along(v, ndim: int, axis: int) -> np.ndarray:
    """A scale or zero point shaped to broadcast along ``axis`` of an ``ndim`` tensor."""
    v = np.asarray(v)
    if v.size == 1:
        return v.reshape(())
    shape = [1] * ndim
    shape[axis % ndim] = -1
    return v.reshape(shape)


def _dequantize(q, scale, zp=None, axis=1, block=0) -> np.ndarray:
    scale = np.asarray(scale)
    if block and scale.ndim == q.ndim:  # blocked: one scale per ``block`` values along ``axis``
        scale = np.repeat(scale, block, axis)[tuple(slice(0, d) for d in q.shape)]
        zp = None if zp is None else np.repeat(zp, block, axis)[tuple(slice(0, d) for d in q.shape)]
    else:
        scale = _along(scale, q.ndim, axis)
        zp = None if zp is None else _along(zp, q.ndim, axis)
    centred = q.astype(np.int64) - (0 if zp is None else zp.astype(np.int64))
    return (centred.astype(scale.dtype) * scale).astype(scale.dtype)


def _quantize(x, scale, zp, axis, dtype) -> np.ndarray:
    zp = np.zeros((), dtype) if zp is None else zp
    info = np.iinfo(zp.dtype)
    q = np.rint(x / _along(scale, x.ndim, axis)) + _along(zp, x.ndim, axis).astype(np.float64)
    return np.clip(q, info.min, info.max).astype(zp.dtype)


class _Graph:
    """The main graph's node list plus the lookups every rewrite needs."""

    def __init__(self, proto):
        from onnx import numpy_helper

        self.proto, self.graph = proto, proto.graph
        self.opset = next((o.version for o in proto.opset_import if o.domain in _STD), 1)
        self.const = {i.name: numpy_helper.to_array(i) for i in self.graph.initializer}
        for node in self.graph.node:
            if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
                self.const[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
        self.rank = {v.name: len(v.type.tensor_type.shape.dim)
                     for v in itertools.chain(self.graph.input, self.graph.value_info, self.graph.output)
                     if v.type.tensor_type.HasField("shape")}
        self.inputs = {i.name for i in self.graph.input}
        self.outputs = {o.name for o in self.graph.output}
        self.nodes = list(self.graph.node)
        self.names = {n for node in self.nodes for n in itertools.chain(node.input, node.output)} | set(self.const)
        self.alias: dict[str, str] = {}
        self.counts: collections.Counter = collections.Counter()
        self.index()

    def index(self):
        """Recompute producer/consumer maps after the node list changed."""
        self.producer, self.consumers = {}, collections.defaultdict(list)
        for node in self.nodes:
            self.producer.update((name, node) for name in node.output)
            for name in node.input:
                self.consumers[name].append(node)

    def fresh(self, base: str) -> str:
        name, k = base, 0
        while name in self.names:
            k += 1
            name = f"{base}_{k}"
        self.names.add(name)
        return name

    def add_const(self, base: str, value: np.ndarray, exact: bool = False) -> str:
        from onnx import numpy_helper

        name = base if exact else self.fresh(base)
        self.graph.initializer.append(numpy_helper.from_array(np.asarray(value), name))
        self.const[name] = np.asarray(value)
        return name

    @staticmethod
    def node(op, inputs, outputs, **attrs):
        from onnx import helper

        return helper.make_node(op, list(inputs), list(outputs), **attrs)

    def only_consumer(self, name: str, op: str):
        users = self.consumers.get(name, [])
        ok = len(users) == 1 and users[0].op_type == op and name not in self.outputs
        return users[0] if ok else None

    def params(self, node) -> tuple[str, str] | None:
        """(scale, zero point) of a Q/DQ node when constant and per tensor."""
        scale, zp = node.input[1], node.input[2] if len(node.input) > 2 else ""
        ok = scale in self.const and self.const[scale].size == 1 and (not zp or zp in self.const)
        return (scale, zp) if ok else None

    def same(self, a, b) -> bool:
        zero = np.zeros((), np.uint8)
        za, zb = self.const.get(a[1], zero), self.const.get(b[1], zero)
        return bool(np.array_equal(self.const[a[0]], self.const[b[0]]) and np.array_equal(za, zb)
                    and za.dtype == zb.dtype)

    def float_of(self, q: str, scale: str, zp: str, out: list, axis=None) -> str:
        """A float tensor for quantized ``q``: a folded initializer if constant, else a DequantizeLinear."""
        if q in self.const and scale in self.const and (not zp or zp in self.const):
            value = self.const[q]
            return self.add_const(q + "_float", _dequantize(value, self.const[scale], self.const.get(zp),
                                                            (axis if axis is not None else 1) % max(value.ndim, 1)))
        name = self.fresh(q + "_dequantized")
        out.append(self.node("DequantizeLinear", [q, scale, zp] if zp else [q, scale], [name]))
        return name

    def rewrite(self, replace: dict, drop: set) -> None:
        """Swap nodes (by id) for their replacements and drop others, keeping the order."""
        out = []
        for node in self.nodes:
            if id(node) in replace:
                out.extend(replace[id(node)])
            elif id(node) not in drop:
                out.append(node)
        self.nodes = out
        self.index()

    def apply_alias(self) -> None:
        """Point every use of a removed tensor at its replacement (an Identity keeps output names)."""
        def final(name):
            while name in self.alias:
                name = self.alias[name]
            return name

        def rename(nodes):
            for node in nodes:
                node.input[:] = [final(n) for n in node.input]
                for attr in node.attribute:
                    for sub in [attr.g] if attr.HasField("g") else list(attr.graphs):
                        rename(sub.node)

        rename(self.nodes)
        self.nodes.extend(self.node("Identity", [final(o)], [o]) for o in self.outputs if o in self.alias)
        self.alias.clear()
        self.index()


# --- dynamic quantization ------------------------------------------------------------------------------


def _integer_weight(op: str, q, zp, scale):
    """Float weight of a MatMulInteger (per column) or ConvInteger (per output channel) constant."""
    zp = np.zeros((), q.dtype) if zp is None else np.asarray(zp)
    scale = np.asarray(scale, np.float32)
    if op == "ConvInteger":
        padded = (1,) * (q.ndim - scale.ndim) + scale.shape
        if scale.size > 1 and padded != (1, q.shape[0]) + (1,) * (q.ndim - 2):
            return None  # the scale would not broadcast over output channels
        scale, zp = _along(scale, q.ndim, 0), _along(zp, q.ndim, 0)
    weight = (q.astype(np.int64) - zp.astype(np.int64)).astype(np.float32) * scale
    return weight.astype(np.float32) if weight.shape == q.shape else None


def _integer_operand(g: _Graph, q: str, zp: str) -> tuple:
    """How a MatMulInteger/ConvInteger input was quantized: ("dynamic", x, scale), ("const", q, zp) or
    ("static", q, zp) for an 8-bit activation with a constant zero point (e.g. a Gather of an 8-bit table)."""
    source = g.producer.get(q)
    if source is not None and source.op_type == "DynamicQuantizeLinear" and zp in ("", source.output[2]):
        return "dynamic", source.input[0], source.output[1]
    if zp and zp not in g.const:
        return ("none",)
    return ("const", g.const[q], g.const.get(zp)) if q in g.const else ("static", q, zp)


def _integer_float(g: _Graph, op: str, operand: tuple, scale: str, pre: list) -> str | None:
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


def _integer_chain(g: _Graph, node):
    """``node -> Cast(float) -> Mul(S)`` with S = Mul(scale a, scale b): (nodes before, float a, float b, Mul, Cast)."""
    a = _integer_operand(g, node.input[0], node.input[2] if len(node.input) > 2 else "")
    b = _integer_operand(g, node.input[1], node.input[3] if len(node.input) > 3 else "")
    cast = g.only_consumer(node.output[0], "Cast")
    if a[0] not in ("dynamic", "static") or b[0] == "none" or not cast or _attrs(cast).get("to") != 1:
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


def _lstm(g: _Graph, node) -> list | None:
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
    return [g.node("LSTM", lstm_inputs, node.output, name=node.name, **_attrs(node))]


def _matmul_to_float(g: _Graph, node) -> list | None:
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


def _dynamic(g: _Graph) -> None:
    replace, drop = {}, set()
    for node in g.nodes:
        new = None
        if node.op_type in ("MatMulInteger", "ConvInteger") and node.domain in _STD:
            match = _integer_chain(g, node)
            if match:
                pre, x, w, mul, cast = match
                new = pre + [g.node("MatMul" if node.op_type == "MatMulInteger" else "Conv", [x, w], mul.output,
                                    **_attrs(node))]
                drop.update((id(cast), id(mul)))
        elif node.domain == _MS and node.op_type == "DynamicQuantizeLSTM":
            new = _lstm(g, node)
        elif node.domain == _MS and node.op_type in ("DynamicQuantizeMatMul", "MatMulIntegerToFloat"):
            new = _matmul_to_float(g, node)
        if new:
            g.counts[f"{node.op_type} -> {'+'.join(n.op_type for n in new if n.op_type not in _QDQ)}"] += 1
            replace[id(node)] = new
    g.rewrite(replace, drop)


# --- QOperator expansion, ops on 8-bit tensors ---------------------------------------------------------


def _float_attrs(g: _Graph, node, attrs: dict, pre: list, post: list, x: str, y: str) -> tuple[str, str] | None:
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


def _expand(g: _Graph, node) -> list | None:
    """QLinearX -> DequantizeLinear(inputs) -> X -> QuantizeLinear, weights folded."""
    op, spec, (ys, yzp) = _QLINEAR[node.op_type]
    inputs = list(node.input) + [""] * 10
    if spec is None:  # QLinearConcat: y_scale, y_zp, then (q, scale, zp) triplets
        spec = [(k, k + 1, k + 2) for k in range(2, len(node.input), 3)]
    attrs = _attrs(node)
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


def _expand_qlinear(g: _Graph) -> None:
    replace = {}
    for node in g.nodes:
        if node.domain in (*_STD, _MS) and node.op_type in _QLINEAR:
            new = _expand(g, node)
            if new:
                g.counts[f"{node.op_type} -> {_QLINEAR[node.op_type][0]}"] += 1
                replace[id(node)] = new
    g.rewrite(replace, set())


def _direct_params(g: _Graph, node):
    """The quantization of a direct op's 8-bit data input: from its Q producer, else from DQ consumers."""
    source = g.producer.get(node.input[0])
    if source is not None and source.op_type == "QuantizeLinear":
        return g.params(source)
    if source is not None or (node.input[0] not in g.const and node.input[0] not in g.inputs):
        return None
    users = [u for k in _DIRECT[node.op_type] if k < len(node.output) for u in g.consumers.get(node.output[k], [])]
    found = [g.params(u) if u.op_type == "DequantizeLinear" else None for u in users]
    ok = found and all(found) and all(g.same(found[0], p) for p in found[1:])
    return found[0] if ok else None


def _direct_node(g: _Graph, node, params, drop: set) -> list | None:
    inputs, attrs, new = list(node.input), _attrs(node), []
    inputs[0] = g.float_of(inputs[0], *params, new)
    if node.op_type == "Pad":  # the pad value is a quantized integer too
        if len(inputs) > 2 and inputs[2]:
            if inputs[2] not in g.const:
                return None
            inputs[2] = g.add_const(inputs[2] + "_float", _dequantize(g.const[inputs[2]], *(
                g.const.get(p) for p in params)).astype(np.float32))
        elif "value" in attrs:
            attrs["value"] = float(_dequantize(np.array(attrs["value"]), *(g.const.get(p) for p in params)))
    quantized = [k for k in _DIRECT[node.op_type] if k < len(node.output) and node.output[k]]
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


def _direct(g: _Graph) -> bool:
    """Ops that run on 8-bit tensors (MaxPool, Reshape, Gather, ...) moved into float between Q/DQ."""
    replace, drop = {}, set()
    for node in g.nodes:
        params = _direct_params(g, node) if node.op_type in _DIRECT and node.domain in _STD else None
        new = params and _direct_node(g, node, params, drop)
        if new:
            g.counts[f"{node.op_type} on 8-bit tensors -> float"] += 1
            replace[id(node)] = new
    g.rewrite(replace, drop)
    g.apply_alias()
    return bool(replace)


# --- constants and Q/DQ pairs --------------------------------------------------------------------------


def _fold_constants(g: _Graph) -> None:
    """DequantizeLinear (and QuantizeLinear) of constants computed into initializers."""
    from onnx import helper

    drop = set()
    for node in g.nodes:
        if node.op_type not in _QDQ or not all(i in g.const for i in node.input if i):
            continue
        x, scale, zp = (list(g.const.get(i) if i else None for i in node.input) + [None])[:3]
        attrs = _attrs(node)
        axis = attrs.get("axis", 1) % max(x.ndim, 1)
        if node.op_type == "DequantizeLinear":
            value = _dequantize(x, scale, zp, axis, attrs.get("block_size", 0))
        elif attrs.get("block_size"):
            continue
        else:
            dtype = helper.tensor_dtype_to_np_dtype(attrs["output_dtype"]) if attrs.get("output_dtype") else np.uint8
            value = _quantize(x.astype(np.float64), scale, zp, axis, dtype)
        if node.op_type == "DequantizeLinear" and attrs.get("output_dtype"):
            value = value.astype(helper.tensor_dtype_to_np_dtype(attrs["output_dtype"]))
        g.add_const(node.output[0], value, exact=True)
        g.counts[f"{node.op_type} of constants folded"] += 1
        drop.add(id(node))
    g.rewrite({}, drop)


def _nonneg(g: _Graph, name: str, depth: int = 8) -> bool:
    """Whether ``name`` cannot be negative (so a restored Relu would do nothing)."""
    node = g.producer.get(name)
    if node is None or depth == 0:
        return False
    if node.op_type in _NONNEG:
        return True
    if node.op_type == "Clip":
        low = node.input[1] if len(node.input) > 1 else ""
        return bool(low in g.const and g.const[low] >= 0) or _attrs(node).get("min", -1.0) >= 0
    if node.op_type == "DequantizeLinear" and g.params(node):
        zp = g.const.get(node.input[2]) if len(node.input) > 2 else np.zeros((), np.uint8)
        return np.issubdtype(zp.dtype, np.integer) and int(zp) == np.iinfo(zp.dtype).min
    if node.op_type in ("Add", "Mul", "Max"):  # Max: one non-negative input is enough
        signs = [bool(np.all(g.const[i] >= 0)) if i in g.const else _nonneg(g, i, depth - 1) for i in node.input]
        return any(signs) if node.op_type == "Max" else all(signs)
    data = node.input if node.op_type == "Concat" else node.input[:1]
    return node.op_type in _SIGN_KEEPING and all(_nonneg(g, d, depth - 1) for d in data)


def _clamp(g: _Graph, q) -> list:
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


def _cancel_pairs(g: _Graph) -> None:
    """QuantizeLinear -> DequantizeLinear on activations: the float tensor passes straight through."""
    drop, passed, replace = set(), {}, {}
    for node in g.nodes:
        source = g.producer.get(node.input[0])
        if node.op_type != "DequantizeLinear" or source is None or source.op_type != "QuantizeLinear":
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


def _used(node) -> list[str]:
    """Every tensor ``node`` reads, including those its subgraphs take from the outer scope."""
    names = list(node.input)
    for attr in node.attribute:
        for sub in [attr.g] if attr.HasField("g") else list(attr.graphs):
            names.extend(n for inner in sub.node for n in _used(inner))
    return names


def _topological(nodes: list, available: set) -> list:
    produced = {o for n in nodes for o in n.output}
    ready, done, pending = set(available) | {""}, [], list(nodes)
    while pending:
        rest = [n for n in pending if not all(i in ready or i not in produced for i in _used(n))]
        if len(rest) == len(pending):  # a cycle: leave the rest in their order
            return done + rest
        for node in pending:
            if node not in rest:
                done.append(node)
                ready.update(node.output)
        pending = rest
    return done


def _finish(g: _Graph) -> None:
    """Dead nodes and unused initializers out, nodes in order, stale value_info gone."""
    needed, kept = set(g.outputs), []
    for node in reversed(_topological(g.nodes, g.inputs | set(g.const))):
        if any(o in needed for o in node.output):
            kept.append(node)
            needed.update(_used(node))
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
    if not any(n.domain == _MS for n in g.graph.node):
        kept_opsets = [o for o in g.proto.opset_import if o.domain != _MS]
        g.proto.ClearField("opset_import")
        g.proto.opset_import.extend(kept_opsets)


def run(proto) -> list[str]:
    """Turn ``proto``'s quantized ops back into float ops with dequantized weights, in place.

    Returns:
        One line per kind of rewrite, e.g. "QLinearConv -> Conv x3"; empty if nothing was quantized.

    Raises:
        UserError: quantized ops are left that this pass cannot turn back into float.
    """
    if not any(_is_quantized(n) or n.op_type in _QDQ for n in _walk(proto.graph)):
        return []
    g = _Graph(proto)
    for node in g.nodes:  # onnxruntime's contrib Q/DQ mean the standard ones for these types
        if node.domain == _MS and node.op_type in _QDQ:
            node.domain = ""
    _dynamic(g)
    _expand_qlinear(g)
    _fold_constants(g)
    for _ in range(len(g.nodes)):  # a chain of them moves one op per round
        if not _direct(g):
            break
    _fold_constants(g)
    _cancel_pairs(g)
    _finish(g)
    left = sorted({n.op_type for n in g.graph.node if _is_quantized(n)})
    nested = sorted({n.op_type for n in _walk(g.graph) if _is_quantized(n)} - set(left))
    if left or nested:  # control-flow bodies are not rewritten: their names live in another scope
        where = [f"{', '.join(left)} left after dequantizing"] * bool(left) + [
            f"{', '.join(nested)} inside If/Loop bodies"] * bool(nested)
        raise UserError(
            f"the model's quantized ops cannot be turned back into float: {'; '.join(where)}",
            "export the float model (before onnxruntime quantization) instead; edgepack quantizes it itself")
    changes = [f"{what} x{n}" for what, n in g.counts.items() if n]
    kept = collections.Counter(n.op_type for n in g.graph.node if n.op_type in _QDQ)
    if kept:
        changes.append("kept at the model's integer inputs/outputs: "
                       + ", ".join(f"{op} x{n}" for op, n in sorted(kept.items())))
    return changes
