"""For passes that rebuild the node list: what a node reads, a name no tensor has, and an order ONNX accepts."""

from __future__ import annotations


def fresh_name(base: str, taken: set[str]) -> str:
    """``base``, or ``base_1``, ``base_2``... whichever is not in ``taken`` (which then holds it)."""
    name, k = base, 0
    while name in taken:
        k += 1
        name = f"{base}_{k}"
    taken.add(name)
    return name


def reads(node) -> list[str]:
    """Every tensor ``node`` reads, including those its If/Loop bodies take from the outer scope."""
    names = list(node.input)
    for attr in node.attribute:
        for sub in [attr.g] if attr.HasField("g") else list(attr.graphs):
            names.extend(n for inner in sub.node for n in reads(inner))
    return names


def topological(nodes: list, available: set) -> list:
    """``nodes`` with every producer before its readers (``available``: graph inputs and constants)."""
    produced = {o for n in nodes for o in n.output}
    ready, done, pending = set(available) | {""}, [], list(nodes)
    while pending:
        waiting = {id(n) for n in pending if not all(i in ready or i not in produced for i in reads(n))}
        if len(waiting) == len(pending):  # a cycle: leave the rest in their order
            return done + pending
        for node in pending:
            if id(node) not in waiting:
                done.append(node)
                ready.update(node.output)
        pending = [n for n in pending if id(n) in waiting]
    return done
