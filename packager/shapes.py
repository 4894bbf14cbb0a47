"""Stage 1 (with loading): fix every dynamic dimension of the model's inputs.

An int8 TFLite model has static shapes. Dynamic input dimensions are fixed
from ``--input-shape NAME=d0,d1,...``; a dynamic batch (first) dimension
defaults to 1. Anything else left dynamic is an error that names every such
input and dimension and shows the flag to use.
"""

from __future__ import annotations

import copy

from edge_runtime.errors import UserError

from .onnx_model import OnnxModel, TensorSpec


def parse_input_shapes(specs: tuple[str, ...] | list[str]) -> dict[str, list[int]]:
    """Parse ``NAME=1,3,224,224`` flags into {name: dims}."""
    shapes: dict[str, list[int]] = {}
    for spec in specs:
        name, sep, dims = spec.rpartition("=")
        try:
            values = [int(d) for d in dims.split(",")] if sep and name else None
        except ValueError:
            values = None
        if not values or any(v < 1 for v in values):
            raise UserError(
                f"--input-shape expects NAME=D0,D1,... with positive integers, found '{spec}'",
                "e.g. --input-shape x=1,3,224,224",
            )
        if name in shapes:
            raise UserError(f"--input-shape given twice for input '{name}'", "give each input once")
        shapes[name] = values
    return shapes


def _flag_example(spec: TensorSpec, given: list[int] | None = None) -> str:
    dims = []
    for i, d in enumerate(spec.shape):
        if isinstance(d, int):
            dims.append(str(d))
        elif given:
            dims.append(str(given[i]))
        else:
            dims.append("1" if i == 0 else f"<{d}>" if d != "?" else f"<dim{i}>")
    return f"--input-shape {spec.name}={','.join(dims)}"


def resolve_shapes(inputs: list[TensorSpec], overrides: dict[str, list[int]]) -> dict[str, list[int]]:
    """Decide the static shape of every input.

    Returns:
        {input name: static dims}.

    Raises:
        UserError: an override names an unknown input, has the wrong rank,
            contradicts a fixed dimension, or a dynamic dimension is left.
    """
    names = [s.name for s in inputs]
    for name in overrides:
        if name not in names:
            raise UserError(
                f"--input-shape names input '{name}', but the model's inputs are {', '.join(names)}",
                "use one of the model's input names",
            )
    resolved: dict[str, list[int]] = {}
    missing: list[str] = []
    for spec in inputs:
        given = overrides.get(spec.name)
        if given is not None:
            if len(given) != len(spec.shape):
                raise UserError(
                    f"--input-shape {spec.name} has {len(given)} dimensions, "
                    f"but the model's input has {len(spec.shape)} {spec.shape}",
                    f"e.g. {_flag_example(spec)}",
                )
            for i, (want, have) in enumerate(zip(spec.shape, given)):
                if isinstance(want, int) and want != have:
                    raise UserError(
                        f"--input-shape {spec.name} sets dimension {i} to {have}, but the model fixes it at {want}",
                        f"e.g. {_flag_example(spec, given)}",
                    )
            resolved[spec.name] = list(given)
            continue
        dims = []
        for i, d in enumerate(spec.shape):
            if isinstance(d, int):
                dims.append(d)
            elif i == 0:
                dims.append(1)  # the batch: one sample at a time on a device
            else:
                missing.append(f"{spec.name} dimension {i} ('{d}')")
                dims.append(None)
        resolved[spec.name] = dims
    if missing:
        flags = " ".join(_flag_example(s) for s in inputs if None in resolved[s.name])
        raise UserError(
            f"the model has dynamic dimensions with no size: {'; '.join(missing)}",
            f"fix them with {flags} (replace each <...> with the size you will run)",
        )
    return resolved


def _graphs(graph):
    """The graph and every subgraph inside it (If branches, Loop bodies), depth first."""
    yield graph
    for node in graph.node:
        for attr in node.attribute:
            for sub in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
                yield from _graphs(sub)


def fix_shapes(model: OnnxModel, shapes: dict[str, list[int]]):
    """A copy of the model's proto with static input shapes and re-inferred
    inner and output shapes."""
    import onnx

    proto = copy.deepcopy(model.proto)
    for vi in proto.graph.input:
        if vi.name not in shapes:
            continue  # an initializer listed as input
        for dim, size in zip(vi.type.tensor_type.shape.dim, shapes[vi.name]):
            dim.Clear()
            dim.dim_value = size
    # Stale inner/output shapes (often written for batch 'N') would clash
    # with the fixed inputs; let shape inference recompute them. Branches of
    # If/Loop nodes carry their own (Silero VAD's do: onnxruntime refuses them).
    for graph in _graphs(proto.graph):
        del graph.value_info[:]
        for vi in graph.output:
            for dim in vi.type.tensor_type.shape.dim:
                dim.Clear()
    try:
        return onnx.shape_inference.infer_shapes(proto, strict_mode=True)
    except Exception as exc:  # onnx raises InferenceError, but also others
        if "expected to have type but instead is null" in str(exc):
            # A gap in onnx's inference (e.g. GroupNormalization-21 gives no output type),
            # not a wrong shape: onnxruntime checks the shapes on the samples later.
            return onnx.shape_inference.infer_shapes(proto)
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(
            f"the model does not accept the input shapes {shapes}: {first}",
            "check --input-shape against what the model was trained on",
        ) from None
