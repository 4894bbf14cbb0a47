"""Preparation pass: graphs fed by integer ids, laid out so onnx2tf converts them exactly.

Two onnx2tf 1.28.8 traps hit models that start with an embedding lookup
(``Gather`` on a float table with the ids):

* **Ambiguous token tensors.** onnx2tf keeps a tensor channels-last or in
  ONNX order and records which by comparing the two shapes after every op
  (``inverted_operation_enable_disable``). When all non-batch dimensions are
  equal ([1, 32, 32]: sequence length == embedding width) the shapes cannot
  tell, and it assumes "channels-last" unless a MatMul made the tensor. The
  embedding output and everything computed from it (Add, LayerNorm, Relu...)
  is really in ONNX order, so the next op that maps an ONNX axis onto the TF
  tensor without checking the result on data (Gather, Slice, Split, Flatten,
  Squeeze, Unsqueeze, ArgMax, TopK, Transpose, Conv...) reads the wrong
  axis: a [CLS] pick returns one feature of every token, Flatten interleaves
  them. Nothing fails; the float model is just wrong (cosine ~0).
  We put an exact identity ``MatMul`` (x @ I) in front of such consumers:
  its output is a MatMul's, so onnx2tf trusts its shape and keeps it in
  ONNX order. Ops that check their axis on data (LayerNorm, Softmax, Reduce*,
  Concat, Reshape) and elementwise ops are left alone, so the cost is a few
  small matrix products, and only when the shapes are ambiguous.
* **1-D int32 ids.** Keras attaches an inferred "shape value" to every rank
  0/1 int32 tensor, and onnx2tf's Gather then fails on it (``Unexpectedly
  found an instance of type <class 'list'>``). Such indices are cast to int64
  first (same values; int64 tensors carry no inferred value).

Only tensors that come from an id lookup and have no channels-last op (Conv,
pooling, BatchNorm...) or 3-5-D graph input upstream are touched: after a
Conv, onnx2tf's channels-last guess is the right one.
"""

from __future__ import annotations

from typing import Iterable

from .rewriting import fresh_name

# Ops that onnx2tf runs channels-last: their outputs really are transposed in TF.
CHANNELS_LAST_OPS = frozenset({
    "Conv", "ConvTranspose", "ConvInteger", "QLinearConv", "DeformConv",
    "MaxPool", "AveragePool", "LpPool", "GlobalAveragePool", "GlobalMaxPool", "GlobalLpPool",
    "MaxRoiPool", "RoiAlign", "MaxUnpool", "BatchNormalization", "InstanceNormalization", "LRN",
    "Resize", "Upsample", "DepthToSpace", "SpaceToDepth", "GridSample",
})
# Consumers that convert the ONNX axis by onnx2tf's layout flag and never check
# the result on data (onnx2tf/ops/*.py: convert_axis without a validation step);
# Reshape, Concat and GatherElements, whose check runs on onnx2tf's all-ones
# dummy ids and so can miss (a Flatten that onnxsim made a Reshape does); and
# the channels-last ops, which take a flagged input as already transposed.
AXIS_TRUSTING_OPS = frozenset({
    "Gather", "GatherND", "Slice", "Split", "Flatten", "Squeeze", "Unsqueeze",
    "ArgMax", "ArgMin", "TopK", "Transpose", "Reshape", "Concat", "GatherElements",
}) | CHANNELS_LAST_OPS
MULTI_DATA_OPS = frozenset({"Concat"})  # every input is data
INTEGER_TYPES = frozenset({2, 3, 4, 5, 6, 7, 12, 13})  # onnx.TensorProto uint8..int64
INT32, INT64, FLOAT = 6, 7, 1


def _shapes(proto) -> tuple[dict[str, list[int] | None], dict[str, int]]:
    """Static shape (None when unknown) and element type of every typed tensor."""
    import onnx

    inferred = onnx.shape_inference.infer_shapes(proto)
    shapes, types = {}, {}
    graph = inferred.graph
    for info in [*graph.input, *graph.value_info, *graph.output]:
        tensor_type = info.type.tensor_type
        types[info.name] = tensor_type.elem_type
        dims = tensor_type.shape.dim if tensor_type.HasField("shape") else None
        shapes[info.name] = (
            [d.dim_value for d in dims] if dims is not None and all(d.HasField("dim_value") for d in dims) else None
        )
    for init in graph.initializer:
        shapes[init.name] = list(init.dims)
        types[init.name] = init.data_type
    return shapes, types


def _constants(proto) -> set[str]:
    names = {t.name for t in proto.graph.initializer}
    names.update(o for n in proto.graph.node if n.op_type == "Constant" for o in n.output)
    return names


def _is_id_lookup(node, constants: set[str], shapes, types) -> bool:
    """Gather on a constant 2-D table with non-constant integer indices: an embedding."""
    return (node.op_type == "Gather" and len(node.input) == 2
            and node.input[0] in constants and len(shapes.get(node.input[0]) or []) == 2
            and node.input[1] not in constants and types.get(node.input[1]) in INTEGER_TYPES)


def _token_tensors(proto, shapes, types) -> set[str]:
    """Tensors computed from an id lookup with no channels-last op or 3-5-D input upstream."""
    constants = _constants(proto)
    channels_last = {i.name for i in proto.graph.input if len(shapes.get(i.name) or []) in (3, 4, 5)}
    token: set[str] = set()
    for node in proto.graph.node:  # ONNX graphs are topologically sorted
        inputs = [i for i in node.input if i]
        if node.op_type in CHANNELS_LAST_OPS or any(i in channels_last for i in inputs):
            channels_last.update(node.output)
        elif _is_id_lookup(node, constants, shapes, types) or any(i in token for i in inputs):
            token.update(node.output)
    return token


def _ambiguous(shape: list[int] | None) -> bool:
    """onnx2tf's own test: rank >= 3 and every non-batch dimension the same (> 1)."""
    return bool(shape) and len(shape) >= 3 and shape[1] > 1 and len(set(shape[1:])) == 1


def _producers(proto) -> dict[str, object]:
    return {o: n for n in proto.graph.node for o in n.output}


def _anchor_targets(proto, shapes, types) -> list[str]:
    """Ambiguous float token tensors read by an axis-trusting op, not made by a MatMul."""
    token = _token_tensors(proto, shapes, types)
    producers = _producers(proto)
    targets: list[str] = []
    for node in proto.graph.node:
        if node.op_type not in AXIS_TRUSTING_OPS or not node.input:
            continue
        for data in node.input if node.op_type in MULTI_DATA_OPS else node.input[:1]:
            producer = producers.get(data)
            if (data in token and data not in targets and producer is not None and producer.op_type != "MatMul"
                    and types.get(data) == FLOAT and _ambiguous(shapes.get(data))):
                targets.append(data)
    return targets


def _rewire(proto, old: str, new: str, consumers: Iterable[str]) -> None:
    """Point the given ops' inputs at ``new`` instead of ``old``."""
    wanted = set(consumers)
    for node in proto.graph.node:
        if node.op_type in wanted:
            for k, name in enumerate(node.input):
                if name == old:
                    node.input[k] = new


def _insert(proto, after: dict[str, list]) -> None:
    """Insert nodes right after the node making each key tensor (first, for graph inputs).

    One rebuild at the end: the node list is copied, so edits to nodes must be
    made before this.
    """
    made = {o for n in proto.graph.node for o in n.output}
    nodes = [new for tensor, news in after.items() if tensor not in made for new in news]
    for node in proto.graph.node:
        nodes.append(node)
        nodes.extend(new for out in node.output for new in after.get(out, []))
    copies = [type(n)() for n in nodes]
    for copy, node in zip(copies, nodes):
        copy.CopyFrom(node)
    del proto.graph.node[:]
    proto.graph.node.extend(copies)


def _anchor(proto, shapes, types) -> list[str]:
    import numpy as np
    from onnx import helper, numpy_helper

    targets = _anchor_targets(proto, shapes, types)
    if not targets:
        return []
    used = {o for n in proto.graph.node for o in n.output} | {t.name for t in proto.graph.initializer}
    used |= {i.name for i in proto.graph.input} | {n.name for n in proto.graph.node}
    identities: dict[int, str] = {}
    after: dict[str, list] = {}
    for tensor in targets:
        width = shapes[tensor][-1]
        if width not in identities:
            identities[width] = fresh_name(f"layout_anchor_identity_{width}", used)
            proto.graph.initializer.append(numpy_helper.from_array(np.eye(width, dtype=np.float32), identities[width]))
        anchored = fresh_name(f"{tensor}_layout_anchor", used)
        after[tensor] = [helper.make_node("MatMul", [tensor, identities[width]], [anchored], name=fresh_name(anchored, used))]
        _rewire(proto, tensor, anchored, AXIS_TRUSTING_OPS)
    _insert(proto, after)
    shown = ", ".join(f"{t} {shapes[t]}" for t in targets[:3]) + (" ..." if len(targets) > 3 else "")
    return [f"{len(targets)} token tensor(s) with equal sequence and width dimensions given an exact identity "
            f"MatMul so onnx2tf keeps their axes ({shown})"]


def _cast_vector_ids(proto, shapes, types) -> list[str]:
    from onnx import helper

    constants = _constants(proto)
    used = {o for n in proto.graph.node for o in n.output} | {i.name for i in proto.graph.input}
    used |= {n.name for n in proto.graph.node}
    cast: dict[str, str] = {}
    after: dict[str, list] = {}
    for node in proto.graph.node:
        if node.op_type != "Gather" or len(node.input) < 2:
            continue
        ids = node.input[1]
        shape = shapes.get(ids)
        if ids in constants or types.get(ids) != INT32 or shape is None or len(shape) > 1:
            continue
        if ids not in cast:
            cast[ids] = fresh_name(f"{ids}_int64", used)
            after[ids] = [helper.make_node("Cast", [ids], [cast[ids]], name=fresh_name(cast[ids], used), to=INT64)]
        node.input[1] = cast[ids]
    if not cast:
        return []
    _insert(proto, after)
    return [f"{len(cast)} rank-0/1 int32 Gather index tensor(s) cast to int64 ({', '.join(list(cast)[:3])})"]


def run(proto) -> list[str]:
    """Make id-fed graphs unambiguous for onnx2tf; edits ``proto`` in place.

    Args:
        proto: the shape-fixed ONNX model (static shapes).

    Returns:
        One line per kind of change, or [] when the graph needs none.
    """
    shapes, types = _shapes(proto)
    changes = _cast_vector_ids(proto, shapes, types)
    changes += _anchor(proto, shapes, types)
    return changes
