"""Stage 1: load and validate the user's ONNX file.

Checks that the file is there, parses as ONNX, passes the ONNX checker and
that any external-data file it references stays inside the model's folder
(an ONNX file can name any path; we never read outside that folder).
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from edge_runtime.bundle import sha256_file
from edge_runtime.errors import UserError


@dataclasses.dataclass
class TensorSpec:
    """One model input or output as the ONNX model declares it.

    ``shape`` holds ints for fixed dimensions and strings (the symbol, or
    "?") for dynamic ones.
    """

    name: str
    shape: list
    dtype: str  # numpy dtype name, e.g. "float32", "int64"

    @property
    def dynamic_dims(self) -> list[int]:
        return [i for i, d in enumerate(self.shape) if not isinstance(d, int)]

    @property
    def is_float(self) -> bool:
        return self.dtype.startswith("float")


@dataclasses.dataclass
class OnnxModel:
    """A loaded, validated ONNX model and what we know about its file."""

    path: Path
    proto: object  # onnx.ModelProto
    sha256: str
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]


def _dims(value_info) -> list:
    dims = []
    for d in value_info.type.tensor_type.shape.dim:
        if d.HasField("dim_value") and d.dim_value > 0:
            dims.append(int(d.dim_value))
        else:
            # dim_param, missing, or the -1 some exporters write for "any"
            dims.append(d.dim_param or "?")
    return dims


def tensor_specs(graph, which: str) -> list[TensorSpec]:
    """Inputs (minus initializers, which old exporters list) or outputs."""
    import onnx

    initializers = {i.name for i in graph.initializer}
    specs = []
    for vi in getattr(graph, which):
        if vi.name in initializers:
            continue
        if not vi.type.HasField("tensor_type"):
            raise UserError(
                f"model {which[:-1]} '{vi.name}' is not a tensor (sequence/map types are not supported)",
                "export the model with plain tensor inputs and outputs",
            )
        elem = vi.type.tensor_type.elem_type
        dtype = onnx.helper.tensor_dtype_to_np_dtype(elem).name
        specs.append(TensorSpec(vi.name, _dims(vi), dtype))
    return specs


def _check_external_data(proto, folder: Path) -> None:
    from onnx.external_data_helper import uses_external_data, _get_all_tensors

    root = folder.resolve()
    for tensor in _get_all_tensors(proto):
        if not uses_external_data(tensor):
            continue
        info = {e.key: e.value for e in tensor.external_data}
        location = info.get("location", "")
        target = (root / location).resolve()
        if os.path.isabs(location) or not target.is_relative_to(root):
            raise UserError(
                f"tensor '{tensor.name}' points to external data '{location}', outside the model's folder {root}",
                "keep the external-data files next to the .onnx file (relative paths only)",
            )
        if not target.is_file():
            raise UserError(
                f"tensor '{tensor.name}' needs the external-data file '{location}', which is not in {root}",
                "copy the external-data file next to the .onnx file",
            )


def load_onnx(path: str | os.PathLike) -> OnnxModel:
    """Read and validate an ONNX file.

    Raises:
        UserError: missing, unreadable, not ONNX, invalid, or with external
            data outside its folder.
    """
    import onnx
    from google.protobuf.message import DecodeError

    path = Path(path)
    if not path.is_file():
        raise UserError(f"ONNX model {path} does not exist", "check the path to the .onnx file")
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except (DecodeError, RuntimeWarning, ValueError, OSError) as exc:
        raise UserError(
            f"{path} is not a readable ONNX model ({type(exc).__name__}: {exc})",
            "export the model again (e.g. torch.onnx.export) and pass the .onnx file",
        ) from None
    if not proto.graph.node:
        raise UserError(f"{path} parsed as ONNX but holds an empty graph", "pass the exported model file")
    _check_external_data(proto, path.parent)
    try:
        onnx.load_external_data_for_model(proto, str(path.parent))
        onnx.checker.check_model(proto)
    except onnx.checker.ValidationError as exc:
        first = str(exc).strip().splitlines()[0]
        raise UserError(
            f"{path} is not a valid ONNX model: {first}",
            "check that the exporter finished; `python -m onnx.checker` shows the full report",
        ) from None
    inputs = tensor_specs(proto.graph, "input")
    outputs = tensor_specs(proto.graph, "output")
    if not inputs or not outputs:
        raise UserError(f"{path} has no graph inputs or no outputs", "export the model with its inputs and outputs")
    return OnnxModel(path=path, proto=proto, sha256=sha256_file(path), inputs=inputs, outputs=outputs)
