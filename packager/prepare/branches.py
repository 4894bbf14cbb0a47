"""Preparation pass: ``If`` nodes whose condition is a constant.

Once the input shapes are fixed (and constant inputs frozen), many ``If``
conditions become constants: a sample-rate switch, a "batch > 1" test. The
node is replaced by the nodes of the branch it would take, so the converter
never sees control flow.
"""

from __future__ import annotations


def _constant_values(graph) -> dict:
    from onnx import numpy_helper

    values = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and len(node.output) == 1:
            for attr in node.attribute:
                if attr.name == "value":
                    values[node.output[0]] = numpy_helper.to_array(attr.t)
    return values


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
    while changed:  # a branch may hold further Ifs
        changed = False
        constants = _constant_values(graph)
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
