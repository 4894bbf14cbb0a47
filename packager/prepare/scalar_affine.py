"""Preparation pass: a scalar scale and shift of a feature map, x * s + b, as a 1x1 depthwise Conv.

PP-LCNetV3 (the PP-OCRv4 detector's backbone) follows its activations with
a learnable affine block: one scalar scale and one scalar shift. In int8 the
shift's ADD reads a one-element constant whose scale is |b| / 255; where b is
small against the feature map's range, XNNPACK refuses the ADD (an input to
output scale ratio below 1/1024, xnnpack_delegate.cc VisitBinaryNode) and
every such ADD splits the graph: 4 extra partitions on PP-OCRv4 det, which
float XNNPACK takes whole. A depthwise 1x1 Conv with weight s and bias b per
channel computes the same (exact up to rounding); its bias is int32 at the
input-times-weight scale, so no ratio check applies, and it replaces two ops.

Only on rank-4 float32 maps with a static channel count that come from a
convolution (through elementwise ops): the Conv reads axis 1 as channels, and
the converter lays such maps out channels-last as it does the conv's own. A
conv's own output read by nothing else is left alone: the converter folds
the scale and shift into that conv's weights and bias.
"""

from __future__ import annotations

import collections

import numpy as np

from .graph_reads import names_read

STD = ("", "ai.onnx")
ELEMENTWISE = ("Add", "Sub", "Mul", "Div", "Clip", "Relu", "LeakyRelu", "PRelu", "HardSwish", "HardSigmoid",
               "Sigmoid", "Tanh", "Max", "Min")
MAPS = ("Conv", "ConvTranspose", "BatchNormalization", "MaxPool", "AveragePool")
HOPS = 8  # elementwise ops walked up from the scaled map to its convolution


class _Graph:
    """Producers, read counts, one-element constants and (inferred) float32 4-D shapes of the main graph."""

    def __init__(self, proto):
        import onnx
        from onnx import numpy_helper

        graph = proto.graph
        self.producer = {o: n for n in graph.node for o in n.output}
        self.reads = collections.Counter(names_read(graph))
        self.outputs = {o.name for o in graph.output}
        values = {t.name: t for t in graph.initializer}
        values.update({n.output[0]: a.t for n in graph.node if n.op_type == "Constant"
                       for a in n.attribute if a.name == "value" and a.HasField("t")})
        self.constants = set(values)
        self.scalars = {k: float(numpy_helper.to_array(t).ravel()[0]) for k, t in values.items()
                        if np.prod(t.dims) == 1 and t.data_type == onnx.TensorProto.FLOAT}
        typed = onnx.shape_inference.infer_shapes(proto).graph
        self.maps = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
                     for v in (*typed.input, *typed.value_info, *typed.output)
                     if v.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
                     and v.type.tensor_type.HasField("shape") and len(v.type.tensor_type.shape.dim) == 4}
        self.floats = {v.name for v in (*typed.input, *typed.value_info, *typed.output)
                       if v.type.tensor_type.elem_type == onnx.TensorProto.FLOAT}

    def op(self, name: str, *ops: str):
        node = self.producer.get(name)
        return node if node is not None and node.op_type in ops and node.domain in STD else None

    def read_once(self, name: str) -> bool:
        return self.reads[name] == 1 and name not in self.outputs


def _from_convolution(g: _Graph, name: str) -> bool:
    """True when ``name`` is computed from a convolution's output through elementwise ops only."""
    for _ in range(HOPS):
        node = g.producer.get(name)
        if node is None or node.domain not in STD:
            return False
        if node.op_type in MAPS:
            return True
        live = [i for i in node.input if i and i not in g.constants]
        if node.op_type not in ELEMENTWISE or not live:
            return False
        name = live[0]
    return False


def _sites(g: _Graph, nodes) -> list[tuple]:
    """(map, scale, shift, mul node, add node) of every Add(Mul(map, s), b) with one-element s and b."""
    sites = []
    for add in nodes:
        if add.op_type != "Add" or add.domain not in STD or len(add.input) != 2 or add.output[0] not in g.floats:
            continue
        for t, b in (add.input, add.input[::-1]):
            mul = g.op(t, "Mul") if b in g.scalars and g.read_once(t) else None
            for x, s in (mul.input, mul.input[::-1]) if mul is not None and len(mul.input) == 2 else ():
                shape = g.maps.get(x, [])
                folds = g.op(x, "Conv") is not None and g.read_once(x)  # the converter folds it into the conv
                if s in g.scalars and shape and shape[1] and not folds and _from_convolution(g, x):
                    sites.append((x, g.scalars[s], g.scalars[b], mul, add))
                    break
            if sites and sites[-1][-1] is add:
                break
    return sites


def run(proto) -> list[str]:
    """Replace every x * s + b (scalars s, b) on a convolution's feature map by a 1x1 depthwise Conv, in place."""
    from onnx import helper, numpy_helper

    graph = proto.graph
    g = _Graph(proto)
    sites = _sites(g, graph.node)
    if not sites:
        return []
    final, dropped, gone, bounds = {}, set(), set(), set()
    for x, scale, shift, mul, add in sites:
        channels, out = g.maps[x][1], add.output[0]
        weight, bias = f"{out}_edgepack_dw_w", f"{out}_edgepack_dw_b"
        graph.initializer.extend([numpy_helper.from_array(np.full((channels, 1, 1, 1), scale, np.float32), weight),
                                  numpy_helper.from_array(np.full(channels, shift, np.float32), bias)])
        final[id(add)] = helper.make_node("Conv", [x, weight, bias], [out], name=add.name or out,
                                          kernel_shape=[1, 1], group=channels)
        dropped.add(id(mul))
        gone.add(mul.output[0])
        bounds.update([*mul.input, *add.input])
    kept = [final.get(id(n), n) for n in graph.node if id(n) not in dropped]
    copies = [type(n)() for n in kept]
    for new, old in zip(copies, kept):
        new.CopyFrom(old)
    del graph.node[:]
    graph.node.extend(copies)
    unread = bounds - set(names_read(graph))  # the scalars s and b, unless something else reads them
    inits = [t for t in graph.initializer if t.name not in unread]
    del graph.initializer[:]
    graph.initializer.extend(inits)
    infos = [v for v in graph.value_info if v.name not in gone]  # the products no longer exist
    del graph.value_info[:]
    graph.value_info.extend(infos)
    return [f"{len(sites)} scalar scale-and-shift (x * s + b) made a 1x1 depthwise Conv (int8 XNNPACK refuses "
            "an ADD of a small constant)"]
