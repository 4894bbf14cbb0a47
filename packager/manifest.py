"""The bundle's manifest.json, assembled in one place (DESIGN.md, "The bundle").

A multi-target build ships one model: :class:`Shipped` is what every
target's manifest shares, measured once; :func:`assemble` adds one target's
own part (its profile, wheels, memory, health sample, accelerators).
``packager.bundle.seal`` then lists the files and seals it.
"""

from __future__ import annotations

import dataclasses
import datetime
from pathlib import Path

from . import __version__
from .layout import io_entry

SCHEMA_VERSION = 1


@dataclasses.dataclass
class Shipped:
    """The chosen model and everything measured about it: the same for every target of one build."""

    opts: object  # BuildOptions
    model: object  # OnnxModel (the user's, with the pixel input in front for camera bundles)
    io_dtype: str
    quantized: object  # packager.quantize.Quantized: the chosen step's model
    samples: tuple[int, int]  # (calibration, held out)
    preparation: object  # packager.prepare's report
    conversion: object  # packager.convert.Conversion
    image: object | None  # packager inputs' ImageInput for camera bundles
    fixed_inputs: list[dict]
    calibration_warnings: list[str]
    precision: dict
    kinds: dict  # {output name: packager.kinds.OutputKind}
    fidelity: dict
    ops: dict
    input_statistics: dict


def assemble(shipped: Shipped, name: str, profile, packages: list[str], memory: dict, health: dict,
             accelerators: dict) -> dict:
    """One target's manifest, before sealing (files, sizes and the digest come from packager.bundle.seal)."""
    opts, q, conversion = shipped.opts, shipped.quantized, shipped.conversion
    return {
        "schema_version": SCHEMA_VERSION,
        "name": name,
        "target": profile.to_dict(),
        "created_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "edgepack_version": __version__,
        "source": {"file": shipped.model.path.name, "sha256": shipped.model.sha256},
        "converter": {**converter_versions(), "strategy": conversion.strategy},
        "preparation": shipped.preparation.to_dict(),
        "conversion": conversion.report(),
        "quantization": _quantization(shipped),
        "inputs": input_entries(q, conversion, shipped.image),
        "outputs": [{**io_entry(m, q.io), "kind": shipped.kinds[m.spec.name].to_dict()} for m in conversion.out_maps],
        "float_conversion_cosine": conversion.float_cosine,
        "device_packages": packages,
        "wheels": opts.wheels,
        "fixed_inputs": shipped.fixed_inputs,
        "precision": shipped.precision,
        "fidelity": shipped.fidelity,
        "ops": shipped.ops,
        "memory": memory,
        "health": health,
        "input_statistics": shipped.input_statistics,
        **accelerators,
    }


def input_entries(q, conversion, image=None) -> list[dict]:
    """The manifest's inputs: each ONNX input and its TFLite tensor (a camera input as the frame it takes)."""
    entries = [io_entry(m, q.io) for m in conversion.in_maps]
    if image is None:
        return entries
    return [image.manifest_entry(e) if e["name"] == image.name else e for e in entries]


def _quantization(shipped: Shipped) -> dict:
    opts, q = shipped.opts, shipped.quantized
    calibrated, held_out = shipped.samples
    return {
        "io_dtype": shipped.io_dtype if q.precision.startswith("int8") else "float32",
        "tool": "litert-quantizer" if q.recipe is not None else "tflite-converter",
        "recipe": "recipe.json" if q.recipe is not None else None,
        "ranges_per_tensor": len(q.ranges or {}),
        "float_ops_kept": len(q.float_ops),
        "per_channel": not opts.per_tensor,
        "full_integer": q.strict,
        # ops respelled for the int8 path (packager.int8_spelling), by type
        "respelled": q.respelled or {},
        "calibration": {
            "source": "random" if opts.calibration == "random" else Path(opts.calibration).name,
            "samples": calibrated,
            "held_out": held_out,
            "warnings": shipped.calibration_warnings,
        },
    }


def converter_versions() -> dict:
    from importlib.metadata import version

    return {
        "name": "onnx2tf",
        "onnx2tf": version("onnx2tf"),
        "tensorflow": version("tensorflow"),
        "onnx": version("onnx"),
        "onnxruntime": version("onnxruntime"),
    }
