"""The graph view and numeric helpers the dequantize pass works with.

Which ops are quantized and how (tables), array (de)quantization along an
axis, and ``QuantizedGraph``: the main graph's node list with the constant,
rank and consumer lookups every rewrite needs.
"""

from __future__ import annotations

import collections
import itertools

import numpy as np

from .rewriting import fresh_name

MS_DOMAIN = "com.microsoft"
STD_DOMAINS = ("", "ai.onnx")
QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")
INTEGER_OPS = {"MatMulInteger", "ConvInteger", "DynamicQuantizeLinear", "QLinearConv", "QLinearMatMul"}
MS_QUANTIZED = ("QLinear", "QGemm", "QAttention", "QEmbed", "QOrdered", "QMoE", "MatMulNBits")
# float op, quantized inputs as (q, scale, zero point[, weight axis]) or ("raw", i) or ("bias", i, scale_a,
# scale_b), and the output's (scale, zero point) inputs
QLINEAR = {
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
DIRECT = {op: (0,) for op in (
    "MaxPool", "GlobalMaxPool", "Reshape", "Squeeze", "Unsqueeze", "Flatten", "Transpose", "Pad", "Resize", "Gather",
    "GatherElements", "GatherND", "Slice", "Identity", "DepthToSpace", "SpaceToDepth", "Expand", "Tile", "TopK",
    "ReduceMax", "ReduceMin")}
DIRECT.update({"ArgMax": (), "ArgMin": (), "Split": tuple(range(64))})
NONNEG = {"Relu", "Sigmoid", "Softmax", "Exp", "Abs", "Sqrt", "Softplus", "HardSigmoid"}
SIGN_KEEPING = {"MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "Reshape", "Transpose", "Flatten",
                 "Squeeze", "Unsqueeze", "Slice", "Split", "Resize", "Identity", "Concat", "DepthToSpace"}


def is_quantized(node) -> bool:
    if node.domain in STD_DOMAINS:
        return node.op_type in INTEGER_OPS
    return node.domain == MS_DOMAIN and (node.op_type.startswith(MS_QUANTIZED) or "Quant" in node.op_type
                                   or "Integer" in node.op_type)


def constant_value(node) -> np.ndarray | None:
    """The value of a standard ``Constant`` node, whichever attribute holds it (None for strings, sparse)."""
    from onnx import helper, numpy_helper

    if node.op_type != "Constant" or node.domain not in STD_DOMAINS or len(node.attribute) != 1:
        return None
    attr = node.attribute[0]
    if attr.name == "value":
        return numpy_helper.to_array(attr.t)
    dtypes = {"value_float": np.float32, "value_floats": np.float32, "value_int": np.int64, "value_ints": np.int64}
    return np.array(helper.get_attribute_value(attr), dtypes[attr.name]) if attr.name in dtypes else None


def walk_graphs(graph):
    """Every node of ``graph``, inside If/Loop/Scan bodies too."""
    for node in graph.node:
        yield node
        for attr in node.attribute:
            for sub in [attr.g] if attr.HasField("g") else list(attr.graphs):
                yield from walk_graphs(sub)


def attributes(node, skip=()) -> dict:
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in node.attribute if a.name not in skip}


def along(v, ndim: int, axis: int) -> np.ndarray:
    """A scale or zero point shaped to broadcast along ``axis`` of an ``ndim`` tensor."""
    v = np.asarray(v)
    if v.size == 1:
        return v.reshape(())
    shape = [1] * ndim
    shape[axis % ndim] = -1
    return v.reshape(shape)


def dequantize_array(q, scale, zp=None, axis=1, block=0) -> np.ndarray:
    scale = np.asarray(scale)
    if block and scale.ndim == q.ndim:  # blocked: one scale per ``block`` values along ``axis``
        scale = np.repeat(scale, block, axis)[tuple(slice(0, d) for d in q.shape)]
        zp = None if zp is None else np.repeat(zp, block, axis)[tuple(slice(0, d) for d in q.shape)]
    else:
        scale = along(scale, q.ndim, axis)
        zp = None if zp is None else along(zp, q.ndim, axis)
    centred = q.astype(np.int64) - (0 if zp is None else zp.astype(np.int64))
    return (centred.astype(scale.dtype) * scale).astype(scale.dtype)


def quantize_array(x, scale, zp, axis, dtype) -> np.ndarray:
    zp = np.zeros((), dtype) if zp is None else zp
    info = np.iinfo(zp.dtype)
    q = np.rint(x / along(scale, x.ndim, axis)) + along(zp, x.ndim, axis).astype(np.float64)
    return np.clip(q, info.min, info.max).astype(zp.dtype)


class QuantizedGraph:
    """The main graph's node list plus the lookups every rewrite needs."""

    def __init__(self, proto):
        from onnx import numpy_helper

        self.proto, self.graph = proto, proto.graph
        self.opset = next((o.version for o in proto.opset_import if o.domain in STD_DOMAINS), 1)
        self.const = {i.name: numpy_helper.to_array(i) for i in self.graph.initializer}
        for node in self.graph.node:
            value = constant_value(node)
            if value is not None:
                self.const[node.output[0]] = value
        self.rank = {v.name: len(v.type.tensor_type.shape.dim)
                     for v in itertools.chain(self.graph.input, self.graph.value_info, self.graph.output)
                     if v.type.tensor_type.HasField("shape")}
        self.inputs = {i.name for i in self.graph.input}
        self.outputs = {o.name for o in self.graph.output}
        self.nodes = list(self.graph.node)
        self.names = {n for node in self.nodes for n in itertools.chain(node.input, node.output)} | set(self.const)
        self.alias: dict[str, str] = {}
        self.counts: collections.Counter = collections.Counter()
        self.current = None  # the node a rewrite is looking at (``each``), named if it fails
        self.index()

    def each(self):
        """The nodes, one by one, each remembered as ``current`` while a rewrite looks at it."""
        for node in list(self.nodes):
            self.current = node
            yield node
        self.current = None

    def index(self):
        """Recompute producer/consumer maps after the node list changed."""
        self.producer, self.consumers = {}, collections.defaultdict(list)
        for node in self.nodes:
            self.producer.update((name, node) for name in node.output)
            for name in node.input:
                self.consumers[name].append(node)

    def fresh(self, base: str) -> str:
        return fresh_name(base, self.names)

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
            return self.add_const(q + "_float", dequantize_array(value, self.const[scale], self.const.get(zp),
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
