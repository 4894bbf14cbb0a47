"""Preparation pass: ``Erf`` (exact GELU as exporters write it) in its tanh form.

BERT-style encoders export GELU as ``0.5 x (1 + Erf(x / sqrt 2))``. TFLite
has no Erf kernel at all, onnx2tf's pseudo-Erf divides by ``|x| + 1e-11``
(a division the int8 kernel rejects at run time), so such a model never
becomes full integer. ``Erf(u)`` is replaced by
``Tanh(1.1283792 u (1 + 0.0894293 u^2))``, built from ops every int8 kernel
set has; its error is at most 3.6e-4 over all u. Not exact, so the stage
holds it to the approximate bar and reports the cosine.
"""

from __future__ import annotations

import numpy as np

ALPHA, BETA = 1.1283792, 0.0894293  # 2/sqrt(pi), and the cubic term of the tanh approximation


def run(proto) -> list[str]:
    """Replace every main-graph ``Erf`` by its tanh form, in place."""
    from onnx import helper, numpy_helper

    graph = proto.graph
    erfs = [n for n in graph.node if n.op_type == "Erf" and n.domain in ("", "ai.onnx")]
    if not erfs:
        return []
    prefix = "edgepack_erf"
    graph.initializer.extend([numpy_helper.from_array(np.array(ALPHA, np.float32), f"{prefix}_alpha"),
                              numpy_helper.from_array(np.array(BETA, np.float32), f"{prefix}_beta"),
                              numpy_helper.from_array(np.array(1.0, np.float32), f"{prefix}_one")])
    nodes = []
    for node in graph.node:
        if node not in erfs:
            nodes.append(node)
            continue
        u, y, p = node.input[0], node.output[0], f"{node.output[0]}_{prefix}"
        nodes += [helper.make_node("Mul", [u, u], [f"{p}_u2"], name=f"{p}_u2"),
                  helper.make_node("Mul", [f"{p}_u2", f"{prefix}_beta"], [f"{p}_bu2"], name=f"{p}_bu2"),
                  helper.make_node("Add", [f"{p}_bu2", f"{prefix}_one"], [f"{p}_1bu2"], name=f"{p}_1bu2"),
                  helper.make_node("Mul", [u, f"{prefix}_alpha"], [f"{p}_au"], name=f"{p}_au"),
                  helper.make_node("Mul", [f"{p}_au", f"{p}_1bu2"], [f"{p}_arg"], name=f"{p}_arg"),
                  helper.make_node("Tanh", [f"{p}_arg"], [y], name=p)]
    kept = [type(n)() for n in nodes]
    for new, old in zip(kept, nodes):
        new.CopyFrom(old)
    del graph.node[:]
    graph.node.extend(kept)
    return [f"{len(erfs)} Erf replaced by its tanh form (max error 3.6e-4; TFLite has no Erf kernel)"]
