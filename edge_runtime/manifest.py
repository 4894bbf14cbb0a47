"""The manifest, checked by type and range before the runner reads a field of it.

The manifest's digest proves it was not changed after sealing, not who
sealed it: a manifest edited by hand and resealed passes the integrity check.
Every field the runner reads (the tensors' contract, the target, the reports
``edge-run info`` and ``/metrics`` show) is checked here first, so a
malformed one is refused with an error naming the field, never a traceback
halfway through loading, predicting or describing. Fields the runner does not
read are left alone (newer builds may add some); ``files``, ``integrity``
and ``schema_version`` are the bundle verifier's (bundle.py).
"""

from __future__ import annotations

import math
import re

import numpy as np

from .errors import UserError
from .fields import (CONTROL, INT64_MAX, INT64_MIN, MAX_DIM, MISSING, Malformed, check_integer, check_list, check_name,
                     check_text, is_int, is_number, need, object_field, required, show)

# numpy names of the tensor types the runner feeds and returns (the OIP datatypes of `edge-run serve`)
DTYPES = ("bool", "uint8", "uint16", "uint32", "uint64", "int8", "int16", "int32", "int64",
          "float16", "float32", "float64")
DELEGATES = ("xnnpack", "edgetpu", "nnapi", "cpu", "external")
MAX_DELEGATE_OPTIONS = 64
MAX_OPTION_TEXT = 1024  # an option key or value (a cache path, a core list)
MAX_PATH = 4096
MAX_TENSORS = 256  # inputs, outputs or fixed inputs of one model
MAX_DIMS = 16
MAX_ELEMENTS = 2 ** 30  # per tensor: 4 GB of float32, far beyond any device
MAX_THREADS = 1024
MAX_FIXED_VALUES = 4  # what edgepack build fixes: small integer configuration inputs
# Python floats: comparing a JSON integer with numpy's float32 would cast it (and warn on overflow)
FLOAT32_TINY, FLOAT32_MAX = float(np.finfo(np.float32).tiny), float(np.finfo(np.float32).max)
HEX64 = re.compile(r"[0-9a-f]{64}")
HINT = "rebuild the bundle with edgepack build: this manifest is not what it writes"


def validate(manifest: dict, where: str) -> None:
    """Check every manifest field the runner reads, by type and range.

    Args:
        manifest: the parsed manifest.json (its digest already checked).
        where: how to name it in errors, e.g. the manifest's path.

    Raises:
        UserError: names the first malformed field, e.g. ``manifest.json:
            inputs[0].shape[2] must be a positive integer, found -3``.
    """
    try:
        check(manifest)
    except Malformed as bad:
        raise UserError(f"{where}: {bad.path} must be {bad.expected}, found {bad.found()}", HINT) from None


def check(manifest: dict) -> None:
    """:func:`validate` without the wording: raises :class:`Malformed`."""
    need(isinstance(manifest, dict), "(the manifest)", "an object", manifest)
    check_name(required(manifest, "name"), "name")
    for key in ("edgepack_version", "created_at"):
        check_text(manifest.get(key), key, optional=True)
    _target(object_field(manifest, "target"))
    source = object_field(manifest, "source")
    check_text(required(source, "file", "source"), "source.file")
    sha = required(source, "sha256", "source")
    need(isinstance(sha, str) and HEX64.fullmatch(sha), "source.sha256", "64 lowercase hex digits", sha)
    inputs = _tensors(manifest, "inputs")
    _tensors(manifest, "outputs")
    check_fixed_inputs(manifest.get("fixed_inputs", []), {spec["name"] for spec in inputs})
    check_precision(manifest.get("precision"))
    _fidelity(manifest.get("fidelity"))
    _conversion(manifest)
    _ops(manifest.get("ops"))
    check_input_statistics(manifest.get("input_statistics"), {spec["name"]: spec["shape"] for spec in inputs},
                           {spec["name"] for spec in inputs if "format" in spec})


# --- the pieces of a manifest ---

def _target(target: dict) -> None:
    check_name(required(target, "name", "target"), "target.name")
    check_text(required(target, "human_name", "target"), "target.human_name")
    threads = target.get("default_threads")
    if threads is not None:
        check_integer(threads, "target.default_threads", 1, MAX_THREADS)
    delegates = check_list(target.get("delegates", []), "target.delegates", 8)
    for i, delegate in enumerate(delegates):
        need(delegate in DELEGATES, f"target.delegates[{i}]", f"one of {', '.join(DELEGATES)}", delegate)
    table = target.get("external_delegate")
    if "external" in delegates or table is not None:
        _external_delegate(table)


def _external_delegate(table) -> None:
    """The library the "external" delegate loads, and its options (both strings, as the plugin ABI passes them)."""
    path = "target.external_delegate"
    need(isinstance(table, dict), path, 'an object {"library": "/abs/path.so", "options": {...}} '
          'when target.delegates holds "external"', MISSING if table is None else table)
    library = required(table, "library", path)
    need(isinstance(library, str) and library.startswith("/") and len(library) <= MAX_PATH
          and not CONTROL.search(library), f"{path}.library",
          f"an absolute path of at most {MAX_PATH} characters without control characters", library)
    options = table.get("options", {})
    need(isinstance(options, dict) and len(options) <= MAX_DELEGATE_OPTIONS, f"{path}.options",
          f"an object of at most {MAX_DELEGATE_OPTIONS} string options", options)
    for key, value in options.items():
        for what, text in (("key", key), ("value", value)):
            need(isinstance(text, str) and len(text) <= MAX_OPTION_TEXT and not CONTROL.search(text)
                  and (what == "value" or text), f"{path}.options[{show(key)}]",
                  f"a string {what} of {'0' if what == 'value' else '1'} to {MAX_OPTION_TEXT} characters "
                  "without control characters", text)


def _tensors(manifest: dict, kind: str) -> list[dict]:
    """inputs or outputs: at least one tensor, names unique."""
    specs = check_list(required(manifest, kind), kind, MAX_TENSORS)
    need(bool(specs), kind, "a list of at least one tensor", specs)
    seen = set()
    for i, spec in enumerate(specs):
        _tensor(spec, f"{kind}[{i}]")
        need(spec["name"] not in seen, f"{kind}[{i}].name", f"unique among the {kind}", spec["name"])
        seen.add(spec["name"])
    return specs


def _tensor(spec, path: str) -> None:
    """One tensor's contract: the ONNX side, the TFLite side, and how one maps to the other."""
    need(isinstance(spec, dict), path, "an object", spec)
    check_name(required(spec, "name", path), f"{path}.name")
    shape = _shape(required(spec, "shape", path), f"{path}.shape")
    for key in ("dtype", "tflite_dtype"):
        need(spec.get(key, MISSING) in DTYPES, f"{path}.{key}", f"one of {', '.join(DTYPES)}", spec.get(key, MISSING))
    perm = check_list(required(spec, "permutation", path), f"{path}.permutation", MAX_DIMS)
    need(all(is_int(p) for p in perm) and sorted(perm) == list(range(len(shape))), f"{path}.permutation",
          f"a permutation of 0..{len(shape) - 1} (one per axis of shape {shape})", perm)
    tflite_shape, want = required(spec, "tflite_shape", path), [shape[p] for p in perm]
    need(isinstance(tflite_shape, list) and all(is_int(d) for d in tflite_shape) and tflite_shape == want,
          f"{path}.tflite_shape", f"shape {shape} in the permutation's order, {want}", tflite_shape)
    check_integer(required(spec, "tflite_index", path), f"{path}.tflite_index", 0, MAX_DIM)
    _quantization(spec, path)
    if "format" in spec:
        _image_format(spec, path)


def _image_format(spec: dict, path: str) -> None:
    """A camera-frame input (--input-format image-uint8): uint8 [N, H, W, C] frames, C 1 or 3, into the model."""
    need(spec["format"] == "image-uint8", f"{path}.format", "image-uint8 (or no format: a tensor)", spec["format"])
    shape = spec["shape"]
    need(spec["dtype"] == "uint8" and len(shape) == 4 and shape[3] in (1, 3), path,
          "uint8 frames of shape [N, H, W, C] with 1 or 3 channels", f"{spec['dtype']} {shape}")
    norm = required(spec, "normalisation", path)
    need(isinstance(norm, dict), f"{path}.normalisation", "an object", norm)
    for key in ("mean", "std"):
        values = required(norm, key, f"{path}.normalisation")
        need(isinstance(values, list) and len(values) == shape[3] and all(is_number(v) and math.isfinite(v)
              and (key == "mean" or v > 0) for v in values), f"{path}.normalisation.{key}",
              f"a list of {shape[3]} finite numbers{' above 0' if key == 'std' else ''}", values)


def _shape(shape, path: str) -> list[int]:
    check_list(shape, path, MAX_DIMS)
    for i, dim in enumerate(shape):
        need(is_int(dim) and 1 <= dim <= MAX_DIM, f"{path}[{i}]", "a positive integer", dim)
    need(math.prod(shape) <= MAX_ELEMENTS, path, f"at most {MAX_ELEMENTS:,} elements", shape)
    return shape


def _quantization(spec: dict, path: str) -> None:
    """scale 0 means not quantized; a float tensor carried as integers needs its scale and zero point."""
    tflite = np.dtype(spec["tflite_dtype"])
    quantized = np.dtype(spec["dtype"]).kind == "f" and tflite.kind in "iu"
    # every integer the tensor holds must dequantize to a finite float32
    most = FLOAT32_MAX / (int(np.iinfo(tflite).max) - int(np.iinfo(tflite).min)) if quantized else FLOAT32_MAX
    scale = spec.get("scale", 0.0)
    need(is_number(scale) and (scale == 0 or FLOAT32_TINY <= scale <= most), f"{path}.scale",
          f"0 (not quantized) or a positive number from {FLOAT32_TINY:.3g} to {most:.3g}", scale)
    need(scale > 0 or not quantized, f"{path}.scale",
          f"positive: {spec['dtype']} values are carried as {tflite.name}", scale)
    if scale or "zero_point" in spec:
        low, high = (np.iinfo(tflite).min, np.iinfo(tflite).max) if quantized else (INT64_MIN, INT64_MAX)
        check_integer(required(spec, "zero_point", path), f"{path}.zero_point", int(low), int(high))


def check_fixed_inputs(entries, inputs: set[str]) -> None:
    """Inputs fixed at build time: a name and a few integers (see model.fixed_inputs)."""
    check_list(entries, "fixed_inputs", MAX_TENSORS)
    for i, entry in enumerate(entries):
        path = f"fixed_inputs[{i}]"
        need(isinstance(entry, dict), path, "an object", entry)
        name = required(entry, "name", path)
        check_name(name, f"{path}.name")
        need(name not in inputs, f"{path}.name", "a name that is not also in inputs", name)
        value = required(entry, "value", path)
        values = value if isinstance(value, list) else [value]
        need(1 <= len(values) <= MAX_FIXED_VALUES, f"{path}.value",
              f"an integer or a list of 1 to {MAX_FIXED_VALUES} integers", value)
        for j, v in enumerate(values):
            check_integer(v, f"{path}.value" + (f"[{j}]" if isinstance(value, list) else ""), INT64_MIN, INT64_MAX)


_NUMBER = (int, float)
_STEP_FIELDS = {"step": str, "precision": str, "note": str, "meets_bar": bool, "cosine": _NUMBER,
                "channel_cosine": _NUMBER, "top1": _NUMBER, "f1": _NUMBER, "float_ops": int, "size": int,
                "latency_ms": _NUMBER, "xnnpack_partitions": int, "seconds": _NUMBER}
_PRECISION_FIELDS = {"requested": str, "chosen": str, "step": str, "why": str, "meets_bar": bool,
                     "accepted_low_fidelity": bool}


def check_precision(prec) -> None:
    """The ``precision`` section (absent in bundles built before the precision ladder): raises Malformed."""
    if prec is None:
        return
    need(isinstance(prec, dict), "precision", "an object", prec)
    _fields(prec, _PRECISION_FIELDS, "precision")
    bar = prec.get("bar") or {}
    need(isinstance(bar, dict), "precision.bar", "an object", bar)
    for key, value in bar.items():
        need(is_number(value) or value is None, f"precision.bar.{key}", "a number or null", value)
    for i, line in enumerate(check_list(prec.get("shortfalls") or [], "precision.shortfalls", 1000)):
        check_text(line, f"precision.shortfalls[{i}]")
    for i, step in enumerate(check_list(prec.get("steps") or [], "precision.steps", 1000)):
        need(isinstance(step, dict), f"precision.steps[{i}]", "an object", step)
        _fields(step, _STEP_FIELDS, f"precision.steps[{i}]")


def _fields(section: dict, kinds: dict, path: str) -> None:
    """Optional fields by type (null allowed; true is not a number)."""
    for key, kind in kinds.items():
        value = section.get(key)
        if value is None:
            continue
        if kind is str:
            check_text(value, f"{path}.{key}")
        elif kind is bool:
            need(isinstance(value, bool), f"{path}.{key}", "true, false or null", value)
        else:
            number = is_int(value) if kind is int else is_number(value)
            need(number, f"{path}.{key}", ("an integer" if kind is int else "a number") + " or null", value)


def _fidelity(fid) -> None:
    """What `edge-run info` and /metrics show of the held-out measurement."""
    if fid is None:
        return
    need(isinstance(fid, dict), "fidelity", "an object", fid)
    samples = fid.get("samples")
    if samples is not None:
        check_integer(samples, "fidelity.samples", 0, INT64_MAX)
    outputs = fid.get("outputs", {})
    need(isinstance(outputs, dict) and len(outputs) <= MAX_TENSORS, "fidelity.outputs",
          f"an object of at most {MAX_TENSORS} outputs", outputs)
    for name, m in outputs.items():
        path = f"fidelity.outputs[{show(name)}]"
        check_name(name, path)
        need(isinstance(m, dict), path, "an object", m)
        for key in ("cosine", "max_abs_error", "mean_abs_error"):
            need(is_number(m.get(key, MISSING)), f"{path}.{key}", "a number", m.get(key, MISSING))
        _fields(m, {"top1_agreement": _NUMBER}, path)
        channel = m.get("worst_channel")
        if channel is not None:
            need(isinstance(channel, dict), f"{path}.worst_channel", "an object or null", channel)
            need(is_number(channel.get("cosine", MISSING)), f"{path}.worst_channel.cosine", "a number",
                  channel.get("cosine", MISSING))
            for key in ("index", "axis"):
                check_integer(required(channel, key, f"{path}.worst_channel"), f"{path}.worst_channel.{key}", 0, MAX_DIM)
        score_map = m.get("score_map")
        if score_map is not None:
            need(isinstance(score_map, dict), f"{path}.score_map", "an object or null", score_map)
            _fields(score_map, {"f1": _NUMBER}, f"{path}.score_map")


def _conversion(manifest: dict) -> None:
    """How the model was converted and prepared (`edge-run info` lists the changes)."""
    if "conversion" in manifest:
        conversion = object_field(manifest, "conversion")
        check_text(required(conversion, "strategy", "conversion"), "conversion.strategy")
        check_list(required(conversion, "attempts", "conversion"), "conversion.attempts", 1000)
    preparation = manifest.get("preparation", {})
    need(isinstance(preparation, dict), "preparation", "an object", preparation)
    for i, change in enumerate(check_list(preparation.get("changes", []), "preparation.changes", 10_000)):
        check_text(change, f"preparation.changes[{i}]")


def _ops(ops) -> None:
    """The op report `edge-run info` prints: counts by type and dtype, float ops by name."""
    if not ops:
        return
    need(isinstance(ops, dict), "ops", "an object", ops)
    check_integer(required(ops, "total", "ops"), "ops.total", 0, INT64_MAX)
    counts = required(ops, "counts", "ops")
    need(isinstance(counts, dict), "ops.counts", "an object", counts)
    for op, per in counts.items():
        check_name(op, "ops.counts")
        need(isinstance(per, dict), f"ops.counts.{op}", "an object of counts by dtype", per)
        for dtype, n in per.items():
            check_name(dtype, f"ops.counts.{op}")
            check_integer(n, f"ops.counts.{op}.{dtype}", 0, INT64_MAX)
    for i, entry in enumerate(check_list(ops.get("float_ops", []), "ops.float_ops", 1_000_000)):
        need(isinstance(entry, dict), f"ops.float_ops[{i}]", "an object", entry)
        for key in ("type", "output"):
            check_text(required(entry, key, f"ops.float_ops[{i}]"), f"ops.float_ops[{i}].{key}")


def check_input_statistics(stats, shapes: dict, frames: set = frozenset()) -> None:
    """Calibration-set statistics per input, which `edge-run serve` measures drift against (absent before them).

    The server divides by std and indexes channels by these lists: a wrong
    length or a negative or non-finite number would give a drift figure
    that means nothing, so the bundle is refused instead.
    """
    if stats is None:
        return
    need(isinstance(stats, dict) and len(stats) <= MAX_TENSORS, "input_statistics",
          "an object of at most one entry per input", stats)
    for name, entry in stats.items():
        path = f"input_statistics[{show(name)}]"
        need(name in shapes, path, "the statistics of one of the inputs", name)
        need(isinstance(entry, dict), path, "an object", entry)
        axis = required(entry, "channel_axis", path)
        shape = shapes[name]
        last = 3 if name in frames else 1  # camera frames are [N, H, W, C]
        need(axis is None or (axis == last and is_int(axis) and len(shape) == 4), f"{path}.channel_axis",
              f"null, or {last} for an {'[N, H, W, C] frame' if last == 3 else '[N, C, H, W]'} input", axis)
        channels = 1 if axis is None else shape[axis]
        for key in ("mean", "std"):
            values = required(entry, key, path)
            need(isinstance(values, list) and len(values) == channels
                  and all(is_number(v) and math.isfinite(v) and (key == "mean" or v >= 0) for v in values),
                  f"{path}.{key}", f"a list of {channels} finite {'non-negative ' if key == 'std' else ''}numbers",
                  values)
