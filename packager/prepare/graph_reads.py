"""Which tensor names an ONNX graph reads: what a rewrite may drop only when nothing else needs it."""

from __future__ import annotations


def names_read(graph):
    """Every tensor name read by a node (subgraphs included: they may read outer names) or a graph output."""
    for node in graph.node:
        yield from node.input
        for attr in node.attribute:
            for sub in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
                yield from names_read(sub)
    yield from (o.name for o in graph.output)
