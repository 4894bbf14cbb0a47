"""Preparation pass: expand ops the converter has no handler for into the
simpler ops ONNX itself defines them with.

Newer exporters emit ops that ONNX specifies as *functions* of older ones:
``GroupNormalization`` (opset 18/21), ``RMSNormalization``, ``Attention``
and ``RotaryEmbedding`` (opset 23), ``Swish`` (24), ``CastLike``. onnx2tf
1.28 has no handler for them and stops. The ONNX schema carries each one's
body (``FunctionProto``, context-dependent for most: it depends on the
node's attributes and input types), so no rewrite rules of ours are needed:
the body is registered as a local function and inlined by ``onnx.inliner``.
Ops the converter handles are left as they are.
"""

from __future__ import annotations

import collections
import functools
import importlib.util
from pathlib import Path

_DOMAIN = "edgepack.expanded"


@functools.lru_cache(maxsize=1)
def converter_ops() -> frozenset[str]:
    """The ONNX op types onnx2tf has a handler for (its ``ops`` package), read without importing it."""
    spec = importlib.util.find_spec("onnx2tf")
    if spec is None or not spec.submodule_search_locations:
        return frozenset()
    ops = Path(next(iter(spec.submodule_search_locations))) / "ops"
    return frozenset(p.stem for p in ops.glob("*.py") if not p.stem.startswith("_"))


def _opset(proto, domain: str = "") -> int:
    return next((o.version for o in proto.opset_import if o.domain in (domain, "ai.onnx" if domain == "" else domain)), 0)


def _body(proto, node, types: dict):
    """The node's function body as a FunctionProto, or None when ONNX defines none."""
    import onnx
    from onnx import defs

    version = _opset(proto)
    try:
        schema = defs.get_schema(node.op_type, version, "")
    except Exception:  # not a standard op at this opset (SchemaError)
        return None
    body = None
    if schema.has_context_dependent_function:
        inputs = [types[name].SerializeToString() if name in types else onnx.TypeProto().SerializeToString()
                  for name in node.input]
        body = schema.get_context_dependent_function_with_opset_version(version, node.SerializeToString(), inputs)
    elif schema.has_function:
        body = schema.get_function_with_opset_version(version)
    if not body:
        return None
    function = onnx.FunctionProto()
    function.ParseFromString(body if isinstance(body, bytes) else body.SerializeToString())
    return function


MAX_ROUNDS = 4  # a body may use ops that need expanding too (Swish's CastLike)


def run(proto) -> list[str]:
    """Expand, in place, every main-graph node of a standard op the converter cannot handle but ONNX defines as a function."""
    total: collections.Counter = collections.Counter()
    for round_ in range(MAX_ROUNDS):
        expanded = _expand_once(proto, round_)
        if not expanded:
            break
        total.update(expanded)
    return [f"{op} x{n} expanded into the ops ONNX defines it with (no converter handler)"
            for op, n in total.most_common()]


def _expand_once(proto, round_: int) -> collections.Counter:
    import onnx
    from onnx import inliner

    supported = converter_ops()
    expanded: collections.Counter = collections.Counter()
    if not supported:
        return expanded
    graph = proto.graph
    candidates = [n for n in graph.node if n.domain in ("", "ai.onnx") and n.op_type not in supported]
    if not candidates:
        return expanded
    proto.CopyFrom(onnx.shape_inference.infer_shapes(proto))  # the bodies depend on input types
    graph = proto.graph
    candidates = [n for n in graph.node if n.domain in ("", "ai.onnx") and n.op_type not in supported]
    types = {v.name: v.type for v in [*graph.input, *graph.value_info, *graph.output]}
    selected = []
    for index, node in enumerate(candidates):
        function = _body(proto, node, types)
        if function is None:
            continue
        # Context-dependent bodies differ per node: one local function each.
        function.domain, function.name = _DOMAIN, f"{node.op_type}_{round_}_{index}"
        proto.functions.append(function)
        expanded[node.op_type] += 1
        node.domain, node.op_type = _DOMAIN, function.name  # attributes stay: the body may refer to them
        selected.append((_DOMAIN, function.name))
        for opset in function.opset_import:  # the body's own ops must be importable by the model
            if opset.domain not in ("", "ai.onnx") and not any(o.domain == opset.domain for o in proto.opset_import):
                proto.opset_import.append(onnx.helper.make_opsetid(opset.domain, opset.version))
    if not selected:
        return expanded
    proto.opset_import.append(onnx.helper.make_opsetid(_DOMAIN, 1))
    inlined = inliner.inline_selected_functions(proto, selected, exclude=False)
    proto.CopyFrom(inlined)
    del proto.opset_import[:]
    proto.opset_import.extend([o for o in inlined.opset_import if o.domain != _DOMAIN])
    del proto.functions[:]  # all inlined
    return expanded
