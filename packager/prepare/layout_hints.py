"""Preparation pass: make constant tensors' layout unambiguous for onnx2tf.

onnx2tf gives the two ways ONNX stores a constant different layouts:

* a graph initializer stays in ONNX order, and the op that uses it decides
  whether (and how) to transpose it to match its other input;
* the output of a ``Constant`` node of rank 3, 4 or 5 is transposed at once,
  blindly, to channels-last ([0, 2, 1], [0, 2, 3, 1], [0, 2, 3, 4, 1]), as if
  every such tensor were an NCW/NCHW/NCDHW activation.

The second is wrong wherever the constant meets a tensor onnx2tf keeps in
ONNX order, which is every tensor after a Reshape to 3-D: a detector head's
anchor grid [1, 2, N] is subtracted from DFL distances [1, 2, N], onnx2tf
sees [1, N, 2] against [1, 2, N], "fixes" the broadcast by transposing the
box branch, and the head's final Concat then joins [1, N, 4] with
[1, nc, N] (or, when N happens to equal a channel count, silently mixes
them). onnxsim, ours and onnx2tf's own, folds such in-graph anchor
computations into ``Constant`` nodes, so every YOLOv8-style head exported
with dynamic H/W meets this.

This pass turns those ``Constant`` nodes into initializers (same name, same
value), which onnxruntime runs identically and onnx2tf lays out by use.
"""

from __future__ import annotations

# onnx2tf transposes Constant-node tensors of these ranks (onnx2tf/ops/Constant.py).
TRANSPOSED_RANKS = (3, 4, 5)


def _tensor_value(node):
    """The ``value`` TensorProto of a Constant node, or None for the other forms."""
    for attr in node.attribute:
        if attr.name == "value" and attr.HasField("t"):
            return attr.t
    return None


def run(proto) -> list[str]:
    """Turn rank-3..5 ``Constant`` nodes of the main graph into initializers.

    Args:
        proto: the shape-fixed ONNX model, edited in place.

    Returns:
        One line saying how many constants moved, or [] when there were none.
    """
    graph = proto.graph
    graph_outputs = {o.name for o in graph.output}
    keep, moved = [], []
    for node in graph.node:
        tensor = _tensor_value(node) if node.op_type == "Constant" and node.domain in ("", "ai.onnx") else None
        if (tensor is None or len(tensor.dims) not in TRANSPOSED_RANKS
                or len(node.output) != 1 or node.output[0] in graph_outputs):
            keep.append(node)
            continue
        initializer = graph.initializer.add()
        initializer.CopyFrom(tensor)
        initializer.name = node.output[0]
        moved.append(list(tensor.dims))
    if not moved:
        return []
    del graph.node[:]
    graph.node.extend(keep)
    shown = ", ".join(str(dims) for dims in moved[:4]) + (" ..." if len(moved) > 4 else "")
    return [f"{len(moved)} Constant node(s) of rank 3-5 made initializers ({shown}) "
            "so onnx2tf does not transpose them to channels-last"]
