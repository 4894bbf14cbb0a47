"""The recurrent layers of an ONNX graph (``LSTM``, ``GRU``, ``RNN``), read and checked for unrolling.

A layer is unrolled (:mod:`packager.convert.recurrent`) only when its
weights are constants and its input shape is static; what has no exact
lowering (variable sequence lengths, clip, input_forget, activations that
are not one plain ONNX op) is refused with a hint.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from edge_runtime.errors import UserError

RECURRENT = {"LSTM": 4, "GRU": 3, "RNN": 1}  # op type -> number of gates
DEFAULT_ACTIVATIONS = {"LSTM": ("Sigmoid", "Tanh", "Tanh"), "GRU": ("Sigmoid", "Tanh"), "RNN": ("Tanh",)}
# Activations that are one parameterless ONNX op each (PyTorch's nn.RNN offers Relu).
PLAIN_ACTIVATIONS = {"sigmoid": "Sigmoid", "tanh": "Tanh", "relu": "Relu"}
HINT = "export the model with the default settings of the recurrent layer, or replace the layer"


@dataclasses.dataclass
class Layer:
    """A recurrent node's parameters, read and checked."""

    node: object
    kind: str  # LSTM / GRU / RNN
    hidden: int
    directions: list[bool]  # per direction: True = reverse
    layout: int
    activations: list[tuple[str, ...]]  # per direction
    lbr: bool  # GRU linear_before_reset
    seq: int
    batch: int
    size: int  # input size
    w: np.ndarray  # [D, G*H, I]
    r: np.ndarray  # [D, G*H, H]
    b: np.ndarray  # [D, 2*G*H]
    p: np.ndarray | None  # [D, 3*H]


def graph_constants(graph) -> dict[str, np.ndarray]:
    """Every constant value of the graph by name: initializers and Constant nodes."""
    from onnx import numpy_helper

    values = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            values[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
    return values


def static_shapes(proto) -> dict[str, list[int]]:
    """Every value's static shape that the graph declares (inferred when a recurrent input's is not)."""
    import onnx

    def collect(graph):
        found = {}
        for info in [*graph.input, *graph.value_info, *graph.output]:
            dims = info.type.tensor_type.shape.dim
            if info.type.tensor_type.HasField("shape") and all(d.HasField("dim_value") for d in dims):
                found[info.name] = [d.dim_value for d in dims]
        return found

    found = collect(proto.graph)
    if any(n.op_type in RECURRENT and n.input[0] not in found for n in proto.graph.node):
        found.update(collect(onnx.shape_inference.infer_shapes(proto).graph))  # value_info was stale or absent
    return found


def _attrs(node) -> dict:
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _activations(node, attrs: dict, count: int) -> list[tuple[str, ...]]:
    """Activations per direction; only parameterless ones that are single ONNX ops."""
    given = [a.decode() if isinstance(a, bytes) else a for a in attrs.get("activations", [])]
    per = len(DEFAULT_ACTIVATIONS[node.op_type])
    if not given:
        return [DEFAULT_ACTIVATIONS[node.op_type]] * count
    if len(given) == per:  # one set for every direction
        given = given * count
    if len(given) != per * count or any(a.lower() not in PLAIN_ACTIVATIONS for a in given):
        raise UserError(
            f"{node.op_type} node '{node.name}' uses activations {given}, which edgepack cannot lower "
            f"(supported: {', '.join(PLAIN_ACTIVATIONS.values())}, {per} per direction)", HINT)
    return [tuple(PLAIN_ACTIVATIONS[a.lower()] for a in given[d * per:(d + 1) * per]) for d in range(count)]


def read_layer(node, constants: dict, shapes: dict) -> Layer | str:
    """The layer's parameters, or why it cannot be lowered (a string)."""
    kind, attrs = node.op_type, _attrs(node)
    for name in ("clip", "input_forget"):
        if name in attrs and (name == "clip" or attrs[name]):
            raise UserError(f"{kind} node '{node.name}' sets attribute '{name}', which edgepack cannot lower", HINT)
    direction = attrs.get("direction", b"forward")
    direction = direction.decode() if isinstance(direction, bytes) else direction
    if direction not in ("forward", "reverse", "bidirectional"):
        raise UserError(f"{kind} node '{node.name}' has unknown direction '{direction}'", HINT)
    reverse = {"forward": [False], "reverse": [True], "bidirectional": [False, True]}[direction]
    inputs = list(node.input) + [""] * (8 - len(node.input))
    missing = [n for n in (inputs[1], inputs[2], inputs[3]) if n and n not in constants]
    if missing:
        return f"weights {missing} are not constant"
    if inputs[0] not in shapes or len(shapes[inputs[0]]) != 3:
        return "the shape of its input is not static"
    layout = int(attrs.get("layout", 0))
    seq, batch, size = shapes[inputs[0]] if layout == 0 else [shapes[inputs[0]][k] for k in (1, 0, 2)]
    _check_lengths(node, inputs[4], constants, seq)
    w, r = constants[inputs[1]], constants[inputs[2]]
    hidden = int(attrs.get("hidden_size", r.shape[-1]))
    gates = RECURRENT[kind]
    b = constants[inputs[3]] if inputs[3] else np.zeros((len(reverse), 2 * gates * hidden), w.dtype)
    p = None
    if kind == "LSTM" and inputs[7]:
        if inputs[7] not in constants:
            return "peephole weights are not constant"
        p = constants[inputs[7]]
    return Layer(node, kind, hidden, reverse, layout, _activations(node, attrs, len(reverse)),
                  bool(attrs.get("linear_before_reset", 0)), seq, batch, size, w, r, b, p)


def _check_lengths(node, name: str, constants: dict, seq: int) -> None:
    """sequence_lens may only say that every sequence is full length."""
    if not name:
        return
    if name in constants and np.all(constants[name] == seq):
        return
    found = constants[name].tolist() if name in constants else "computed at run time"
    raise UserError(
        f"{node.op_type} node '{node.name}' has sequence_lens ({found}) that may differ from the sequence "
        f"length {seq}; variable-length sequences are not supported",
        "export the model without sequence_lens (pad the sequences to the fixed length instead)")
