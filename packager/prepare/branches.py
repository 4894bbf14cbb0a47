"""Preparation pass: ``If`` nodes whose condition is a constant.

Once the input shapes are fixed (and constant inputs frozen), many ``If``
conditions become constants: a sample-rate switch, a "batch > 1" test. The
node is replaced by the nodes of the branch it would take, so the converter
never sees control flow.
"""

from __future__ import annotations


def _constant_values(proto) -> dict:
    """Values of the initializers, and of every main-graph node fed only by constants.

    The condition of an ``If`` is often a small expression (``Equal(sr,
    16000)``) over constants; onnx's reference evaluator computes it without
    onnxruntime, which may refuse to load the graph while its branches hold
    shapes that only fit the branch not taken.
    """
    from onnx import helper, numpy_helper
    from onnx.reference import ReferenceEvaluator

    graph = proto.graph
    values = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    shapes = _static_shapes(proto)
    for node in graph.node:
        if node.op_type in ("Shape", "Size") and node.input[0] in shapes:
            values[node.output[0]] = _shape_value(node, shapes[node.input[0]])
            continue
        if node.op_type in ("If", "Loop", "Scan") or not all(i in values for i in node.input if i):
            continue
        if node.op_type != "Constant" and sum(values[i].size for i in node.input if i) > 4096:
            continue  # conditions are small; folding big tensors is simplify's job
        try:
            single = helper.make_model(
                helper.make_graph([node], "one", [], [helper.make_value_info(o, helper.TypeProto()) for o in node.output],
                                  [numpy_helper.from_array(values[i], i) for i in dict.fromkeys(node.input) if i]),
                opset_imports=proto.opset_import,
            )
            outputs = ReferenceEvaluator(single).run(None, {})
        except Exception:  # an op the evaluator lacks: not a condition we can answer
            continue
        values.update(zip(node.output, outputs))
    return values


def _static_shapes(proto) -> dict[str, list[int]]:
    """Fully static shapes onnx's shape inference finds for main-graph tensors."""
    import onnx

    try:
        inferred = onnx.shape_inference.infer_shapes(proto, data_prop=True)  # through Shape->Concat->Pad chains
    except Exception:  # inference gaps: then only what the graph already says
        inferred = proto
    shapes = {}
    for vi in [*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output]:
        dims = vi.type.tensor_type.shape.dim
        if vi.type.tensor_type.HasField("shape") and all(d.HasField("dim_value") for d in dims):
            shapes[vi.name] = [d.dim_value for d in dims]
    return shapes


def _shape_value(node, shape: list[int]):
    import numpy as np

    if node.op_type == "Size":
        return np.array(int(np.prod(shape)), np.int64)
    attrs = {a.name: a.i for a in node.attribute}
    return np.array(shape[attrs.get("start", 0):attrs.get("end", len(shape)) or None], np.int64)


def _inline(graph, index: int, branch) -> None:
    """Put ``branch``'s nodes where the If at ``index`` stood."""
    from onnx import helper

    node = graph.node[index]
    new_nodes = list(branch.node)
    graph.initializer.extend(branch.initializer)
    # The branch's outputs become the If's outputs.
    for inner, outer in zip(branch.output, node.output):
        if not outer:
            continue
        new_nodes.append(helper.make_node("Identity", [inner.name], [outer], name=f"{node.name or 'If'}_{outer}_taken"))
    del graph.node[index]
    for offset, new in enumerate(new_nodes):
        graph.node.insert(index + offset, new)


def run(proto) -> list[str]:
    """Replace every ``If`` with a constant condition by its taken branch."""
    import numpy as np

    graph = proto.graph
    taken = []
    changed = True
    # Constant values cost a shape inference: only worth it while an If is left.
    while changed and any(n.op_type == "If" for n in graph.node):  # a branch may hold further Ifs
        changed = False
        constants = _constant_values(proto)
        for index, node in enumerate(graph.node):
            if node.op_type != "If" or node.input[0] not in constants:
                continue
            cond = bool(np.asarray(constants[node.input[0]]).reshape(-1)[0])
            branch = next(a.g for a in node.attribute if a.name == ("then_branch" if cond else "else_branch"))
            _inline(graph, index, branch)
            taken.append("then" if cond else "else")
            changed = True
            break
    if not taken:
        return []
    return [f"{len(taken)} If node(s) with a constant condition replaced by the branch taken "
            f"({', '.join(taken)})"]
