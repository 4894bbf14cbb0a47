"""Preparation pass: 1-D convolutions written as 2-D ones made 1-D again.

tf2onnx writes Keras' Conv1D as ``Unsqueeze`` ([N, C, L] -> [N, C, 1, L]),
a Conv with a 1 x k kernel and a ``Squeeze`` back, and models built from
(1, k) Conv2d kernels unsqueeze a waveform once and run a chain of them.
onnx2tf moves the 3-D tensor channels-last ([N, L, C]) before the Unsqueeze
and then reads the 4-D result as NHWC with H = L, so the kernel slides over
the wrong axis: "Negative dimension size caused by subtracting 256 from 1"
on a raw-audio filterbank, "Can not squeeze dim[1]" after it, "number of
input channels must be evenly divisible by the number of groups" on grouped
ones -- with every conversion strategy. Its 1-D Conv handler makes no such
guess.

Each Conv whose input is an Unsqueeze adding a size-1 spatial axis, with a
kernel of 1, stride 1, dilation 1 and no padding along that axis, becomes a
1-D Conv on the 3-D tensor (weights squeezed), followed by the Unsqueeze --
dropped where a Squeeze of that axis is all that reads it. An Unsqueeze
moves past the element-wise activations that follow it first, so a chain of
such convs becomes a chain of 1-D convs. Exact: the same arithmetic.
"""

from __future__ import annotations

import collections

import numpy as np

from .rewriting import fresh_name, reads, topological

STD = ("", "ai.onnx")
# Element-wise ops of one tensor (attributes only): f(Unsqueeze(x)) == Unsqueeze(f(x)).
ELEMENTWISE = {"Relu", "LeakyRelu", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh", "Elu", "Selu", "Softplus",
               "Softsign", "Abs", "Neg", "Exp", "Log", "Sqrt", "Erf", "Gelu", "Mish", "Identity"}


class _Graph:
    """The main graph's nodes (detached copies, written back in order by ``finish``), who produces and who
    reads each tensor, and the constants (initializers and Constant nodes)."""

    def __init__(self, proto):
        import onnx

        self.graph = proto.graph
        self.opset = next((o.version for o in proto.opset_import if o.domain in STD), 1)
        self.nodes = []
        for node in self.graph.node:
            self.nodes.append(onnx.NodeProto())
            self.nodes[-1].CopyFrom(node)
        self.const = {t.name: t for t in self.graph.initializer}
        for node in self.nodes:
            if node.op_type == "Constant" and node.domain in STD:
                self.const.update((node.output[0], a.t) for a in node.attribute if a.name == "value")
        self.outputs = {o.name for o in self.graph.output}
        self.replaced: set[str] = set()  # 2-D weights swapped for 1-D ones
        self.names = {n for node in self.nodes for n in (*node.input, *node.output)} | set(self.const)
        self.index()

    def index(self) -> None:
        self.producer = {o: n for n in self.nodes for o in n.output}
        self.readers = collections.defaultdict(list)
        for node in self.nodes:
            for name in reads(node):
                self.readers[name].append(node)

    def fresh(self, base: str) -> str:
        return fresh_name(base, self.names)

    def array(self, name: str) -> np.ndarray:
        from onnx import numpy_helper

        return numpy_helper.to_array(self.const[name])

    def add_const(self, base: str, value: np.ndarray) -> str:
        from onnx import numpy_helper

        name = self.fresh(base)
        self.const[name] = numpy_helper.from_array(np.ascontiguousarray(value), name)
        self.graph.initializer.append(self.const[name])
        return name

    def axes(self, node) -> list[int] | None:
        """The axes of an Unsqueeze/Squeeze, from its constant input (opset 13+) or its attribute."""
        if len(node.input) > 1:
            return self.array(node.input[1]).tolist() if node.input[1] in self.const else None
        return next((list(a.ints) for a in node.attribute if a.name == "axes"), None)

    def unsqueeze(self, x: str, axis: int, out: str):
        from onnx import helper

        if self.opset < 13:
            return helper.make_node("Unsqueeze", [x], [out], axes=[axis])
        return helper.make_node("Unsqueeze", [x, self.add_const("conv1d_axis", np.array([axis], np.int64))], [out])

    def only_reader(self, name: str):
        readers = self.readers.get(name, [])
        return readers[0] if len(readers) == 1 and name not in self.outputs else None

    def finish(self) -> None:
        """Unread Unsqueezes and weights out, nodes back into the graph in a valid order, shapes re-inferred
        later (the 4-D tensors are 3-D now)."""
        self.index()
        dead = {id(n) for n in self.nodes if n.op_type in ("Unsqueeze", "Squeeze", "Constant")
                and not any(self.readers.get(o) or o in self.outputs for o in n.output)}
        self.nodes = [n for n in self.nodes if id(n) not in dead]
        self.index()
        kept = [t for t in self.graph.initializer if t.name not in self.replaced or self.readers.get(t.name)]
        self.graph.ClearField("initializer")
        self.graph.initializer.extend(kept)
        self.graph.ClearField("node")
        self.graph.node.extend(topological(self.nodes, {i.name for i in self.graph.input} | set(self.const)))
        self.graph.ClearField("value_info")


def _spatial_axis(g: _Graph, node) -> int | None:
    """The axis (2 or 3) of the 4-D tensor an Unsqueeze of a 3-D tensor adds, if that is all it does."""
    if node is None or node.op_type != "Unsqueeze" or node.domain not in STD:
        return None
    axes = g.axes(node)
    if axes is None or len(axes) != 1 or axes[0] % 4 not in (2, 3):
        return None
    return axes[0] % 4


def _sink(g: _Graph) -> int:
    """Unsqueeze -> activation becomes activation -> Unsqueeze wherever the activation alone reads it."""
    moved = 0
    for node in g.nodes:
        source = g.producer.get(node.input[0]) if node.input else None
        if (node.op_type in ELEMENTWISE and node.domain in STD and len(node.input) == 1 and len(node.output) == 1
                and _spatial_axis(g, source) is not None and g.only_reader(source.output[0]) is node):
            squeezed = g.fresh(node.output[0] + "_3d")
            node.input[0], source.input[0] = source.input[0], squeezed
            node.output[0], source.output[0] = squeezed, node.output[0]
            g.index()
            moved += 1
    return moved


def _conv_1d(g: _Graph, conv) -> bool:
    """Rewrite ``conv`` (a 2-D Conv over an Unsqueezed 3-D tensor, 1 wide along that axis) as a 1-D Conv."""
    from onnx import helper

    if conv.op_type != "Conv" or conv.domain not in STD:
        return False
    source = g.producer.get(conv.input[0])
    axis = _spatial_axis(g, source)
    if axis is None or conv.input[1] not in g.const:
        return False
    weight = g.array(conv.input[1])
    attrs = {a.name: helper.get_attribute_value(a) for a in conv.attribute}
    drop, keep = axis - 2, 3 - axis  # the spatial entry that goes, the one that stays
    pads = attrs.get("pads", [0, 0, 0, 0])
    if (weight.ndim != 4 or weight.shape[axis] != 1 or pads[drop] or pads[drop + 2]
            or any(attrs.get(a, [1, 1])[drop] != 1 for a in ("strides", "dilations", "kernel_shape"))):
        return False
    for name in ("strides", "dilations", "kernel_shape"):
        if name in attrs:
            attrs[name] = [attrs[name][keep]]
    if "pads" in attrs:
        attrs["pads"] = [pads[keep], pads[keep + 2]]
    squeeze = g.only_reader(conv.output[0])
    direct = (squeeze is not None and squeeze.op_type == "Squeeze" and squeeze.domain in STD
              and [a % 4 for a in (g.axes(squeeze) or [])] == [axis])
    out = squeeze.output[0] if direct else g.fresh(conv.output[0] + "_3d")
    flat = helper.make_node("Conv", [source.input[0], g.add_const(conv.input[1] + "_1d", weight.squeeze(axis)),
                                     *conv.input[2:]], [out], name=conv.name, **attrs)
    tail = [] if direct else [g.unsqueeze(out, axis, conv.output[0])]
    g.replaced.add(conv.input[1])
    at = next(k for k, n in enumerate(g.nodes) if n is conv)
    g.nodes[at:at + 1] = [flat, *tail]
    g.nodes = [n for n in g.nodes if not (direct and n is squeeze)]
    g.index()
    return True


def run(proto) -> list[str]:
    """Make every 2-D Conv over an Unsqueezed 3-D tensor, 1 wide along the added axis, a 1-D Conv.

    Returns:
        One line naming the convs rewritten, or [] when there were none.
    """
    if not any(n.op_type == "Unsqueeze" for n in proto.graph.node):
        return []
    g = _Graph(proto)
    rewritten, moved = [], 0
    while True:  # a chain: each rewritten conv's Unsqueeze moves on to the next conv
        moved += _sink(g)
        done = [conv.name or conv.output[0] for conv in list(g.nodes) if _conv_1d(g, conv)]
        if not done:
            break
        rewritten += done
    if not rewritten:
        return []
    g.finish()
    shown = ", ".join(rewritten[:4]) + (" ..." if len(rewritten) > 4 else "")
    return [f"{len(rewritten)} 2-D Conv(s) over an Unsqueezed 3-D tensor, 1 wide on the added axis, made 1-D "
            f"({shown}); onnx2tf lays out their input wrongly" + (f"; {moved} activation(s) moved past the "
                                                                 "Unsqueeze" if moved else "")]
