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

import json
import math
import re

import numpy as np

from .errors import UserError

# numpy names of the tensor types the runner feeds and returns (the OIP datatypes of `edge-run serve`)
DTYPES = ("bool", "uint8", "uint16", "uint32", "uint64", "int8", "int16", "int32", "int64",
          "float16", "float32", "float64")
DELEGATES = ("xnnpack", "edgetpu", "nnapi", "cpu", "external")
MAX_DELEGATE_OPTIONS = 64
MAX_OPTION_TEXT = 1024  # an option key or value (a cache path, a core list)
MAX_PATH = 4096
MAX_TENSORS = 256  # inputs, outputs or fixed inputs of one model
MAX_DIMS = 16
MAX_DIM = 2 ** 31 - 1
MAX_ELEMENTS = 2 ** 30  # per tensor: 4 GB of float32, far beyond any device
MAX_THREADS = 1024
MAX_NAME = 256
MAX_FIXED_VALUES = 4  # what edgepack build fixes: small integer configuration inputs
INT64_MIN, INT64_MAX = -(2 ** 63), 2 ** 63 - 1  # JSON integers have no bound
# Python floats: comparing a JSON integer with numpy's float32 would cast it (and warn on overflow)
FLOAT32_TINY, FLOAT32_MAX = float(np.finfo(np.float32).tiny), float(np.finfo(np.float32).max)
CONTROL = re.compile(r"[\x00-\x1f\x7f]")  # would forge lines in `edge-run info`, the log or /metrics
HEX64 = re.compile(r"[0-9a-f]{64}")
MISSING = object()
HINT = "rebuild the bundle with edgepack build: this manifest is not what it writes"


class Malformed(Exception):
    """A field that is not what edgepack build writes: where it is, what it must be, what it holds."""

    def __init__(self, path: str, expected: str, value):
        super().__init__(path)
        self.path, self.expected, self.value = path, expected, value

    def found(self) -> str:
        return "nothing (the field is missing)" if self.value is MISSING else _show(self.value)


def _show(value, depth: int = 2) -> str:
    """A found value as short JSON on one line (a whole section would drown the field's name)."""
    if isinstance(value, dict):
        parts = [f"{json.dumps(str(k))}: {_show(v, depth - 1)}" for k, v in list(value.items())[:3]] if depth else []
        return "{" + ", ".join(parts + ["..."] * (len(value) > len(parts))) + "}"
    if isinstance(value, list):
        parts = [_show(v, depth - 1) for v in value[:4]] if depth else []
        return "[" + ", ".join(parts + ["..."] * (len(value) > len(parts))) + "]"
    if isinstance(value, str) and len(value) > 60:
        return json.dumps(value[:60])[:-1] + '..."'
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10 ** 30:
        return f"a {value.bit_length()}-bit integer"
    try:
        return json.dumps(value)
    except (TypeError, ValueError):  # not JSON at all
        return type(value).__name__


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
    _need(isinstance(manifest, dict), "(the manifest)", "an object", manifest)
    _name(_field(manifest, "name"), "name")
    for key in ("edgepack_version", "created_at"):
        _text(manifest.get(key), key, optional=True)
    _target(_section(manifest, "target"))
    source = _section(manifest, "source")
    _text(_field(source, "file", "source"), "source.file")
    sha = _field(source, "sha256", "source")
    _need(isinstance(sha, str) and HEX64.fullmatch(sha), "source.sha256", "64 lowercase hex digits", sha)
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
    _name(_field(target, "name", "target"), "target.name")
    _text(_field(target, "human_name", "target"), "target.human_name")
    threads = target.get("default_threads")
    if threads is not None:
        _integer(threads, "target.default_threads", 1, MAX_THREADS)
    delegates = _list(target.get("delegates", []), "target.delegates", 8)
    for i, delegate in enumerate(delegates):
        _need(delegate in DELEGATES, f"target.delegates[{i}]", f"one of {', '.join(DELEGATES)}", delegate)
    table = target.get("external_delegate")
    if "external" in delegates or table is not None:
        _external_delegate(table)


def _external_delegate(table) -> None:
    """The library the "external" delegate loads, and its options (both strings, as the plugin ABI passes them)."""
    path = "target.external_delegate"
    _need(isinstance(table, dict), path, 'an object {"library": "/abs/path.so", "options": {...}} '
          'when target.delegates holds "external"', MISSING if table is None else table)
    library = _field(table, "library", path)
    _need(isinstance(library, str) and library.startswith("/") and len(library) <= MAX_PATH
          and not CONTROL.search(library), f"{path}.library",
          f"an absolute path of at most {MAX_PATH} characters without control characters", library)
    options = table.get("options", {})
    _need(isinstance(options, dict) and len(options) <= MAX_DELEGATE_OPTIONS, f"{path}.options",
          f"an object of at most {MAX_DELEGATE_OPTIONS} string options", options)
    for key, value in options.items():
        for what, text in (("key", key), ("value", value)):
            _need(isinstance(text, str) and len(text) <= MAX_OPTION_TEXT and not CONTROL.search(text)
                  and (what == "value" or text), f"{path}.options[{_show(key)}]",
                  f"a string {what} of {'0' if what == 'value' else '1'} to {MAX_OPTION_TEXT} characters "
                  "without control characters", text)


def _tensors(manifest: dict, kind: str) -> list[dict]:
    """inputs or outputs: at least one tensor, names unique."""
    specs = _list(_field(manifest, kind), kind, MAX_TENSORS)
    _need(bool(specs), kind, "a list of at least one tensor", specs)
    seen = set()
    for i, spec in enumerate(specs):
        _tensor(spec, f"{kind}[{i}]")
        _need(spec["name"] not in seen, f"{kind}[{i}].name", f"unique among the {kind}", spec["name"])
        seen.add(spec["name"])
    return specs


def _tensor(spec, path: str) -> None:
    """One tensor's contract: the ONNX side, the TFLite side, and how one maps to the other."""
    _need(isinstance(spec, dict), path, "an object", spec)
    _name(_field(spec, "name", path), f"{path}.name")
    shape = _shape(_field(spec, "shape", path), f"{path}.shape")
    for key in ("dtype", "tflite_dtype"):
        _need(spec.get(key, MISSING) in DTYPES, f"{path}.{key}", f"one of {', '.join(DTYPES)}", spec.get(key, MISSING))
    perm = _list(_field(spec, "permutation", path), f"{path}.permutation", MAX_DIMS)
    _need(all(is_int(p) for p in perm) and sorted(perm) == list(range(len(shape))), f"{path}.permutation",
          f"a permutation of 0..{len(shape) - 1} (one per axis of shape {shape})", perm)
    tflite_shape, want = _field(spec, "tflite_shape", path), [shape[p] for p in perm]
    _need(isinstance(tflite_shape, list) and all(is_int(d) for d in tflite_shape) and tflite_shape == want,
          f"{path}.tflite_shape", f"shape {shape} in the permutation's order, {want}", tflite_shape)
    _integer(_field(spec, "tflite_index", path), f"{path}.tflite_index", 0, MAX_DIM)
    _quantization(spec, path)
    if "format" in spec:
        _image_format(spec, path)


def _image_format(spec: dict, path: str) -> None:
    """A camera-frame input (--input-format image-uint8): uint8 [N, H, W, C] frames, C 1 or 3, into the model."""
    _need(spec["format"] == "image-uint8", f"{path}.format", "image-uint8 (or no format: a tensor)", spec["format"])
    shape = spec["shape"]
    _need(spec["dtype"] == "uint8" and len(shape) == 4 and shape[3] in (1, 3), path,
          "uint8 frames of shape [N, H, W, C] with 1 or 3 channels", f"{spec['dtype']} {shape}")
    norm = _field(spec, "normalisation", path)
    _need(isinstance(norm, dict), f"{path}.normalisation", "an object", norm)
    for key in ("mean", "std"):
        values = _field(norm, key, f"{path}.normalisation")
        _need(isinstance(values, list) and len(values) == shape[3] and all(_is_number(v) and math.isfinite(v)
              and (key == "mean" or v > 0) for v in values), f"{path}.normalisation.{key}",
              f"a list of {shape[3]} finite numbers{' above 0' if key == 'std' else ''}", values)


def _shape(shape, path: str) -> list[int]:
    _list(shape, path, MAX_DIMS)
    for i, dim in enumerate(shape):
        _need(is_int(dim) and 1 <= dim <= MAX_DIM, f"{path}[{i}]", "a positive integer", dim)
    _need(math.prod(shape) <= MAX_ELEMENTS, path, f"at most {MAX_ELEMENTS:,} elements", shape)
    return shape


def _quantization(spec: dict, path: str) -> None:
    """scale 0 means not quantized; a float tensor carried as integers needs its scale and zero point."""
    tflite = np.dtype(spec["tflite_dtype"])
    quantized = np.dtype(spec["dtype"]).kind == "f" and tflite.kind in "iu"
    # every integer the tensor holds must dequantize to a finite float32
    most = FLOAT32_MAX / (int(np.iinfo(tflite).max) - int(np.iinfo(tflite).min)) if quantized else FLOAT32_MAX
    scale = spec.get("scale", 0.0)
    _need(_is_number(scale) and (scale == 0 or FLOAT32_TINY <= scale <= most), f"{path}.scale",
          f"0 (not quantized) or a positive number from {FLOAT32_TINY:.3g} to {most:.3g}", scale)
    _need(scale > 0 or not quantized, f"{path}.scale",
          f"positive: {spec['dtype']} values are carried as {tflite.name}", scale)
    if scale or "zero_point" in spec:
        low, high = (np.iinfo(tflite).min, np.iinfo(tflite).max) if quantized else (INT64_MIN, INT64_MAX)
        _integer(_field(spec, "zero_point", path), f"{path}.zero_point", int(low), int(high))


def check_fixed_inputs(entries, inputs: set[str]) -> None:
    """Inputs fixed at build time: a name and a few integers (see model.fixed_inputs)."""
    _list(entries, "fixed_inputs", MAX_TENSORS)
    for i, entry in enumerate(entries):
        path = f"fixed_inputs[{i}]"
        _need(isinstance(entry, dict), path, "an object", entry)
        name = _field(entry, "name", path)
        _name(name, f"{path}.name")
        _need(name not in inputs, f"{path}.name", "a name that is not also in inputs", name)
        value = _field(entry, "value", path)
        values = value if isinstance(value, list) else [value]
        _need(1 <= len(values) <= MAX_FIXED_VALUES, f"{path}.value",
              f"an integer or a list of 1 to {MAX_FIXED_VALUES} integers", value)
        for j, v in enumerate(values):
            _integer(v, f"{path}.value" + (f"[{j}]" if isinstance(value, list) else ""), INT64_MIN, INT64_MAX)


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
    _need(isinstance(prec, dict), "precision", "an object", prec)
    _fields(prec, _PRECISION_FIELDS, "precision")
    bar = prec.get("bar") or {}
    _need(isinstance(bar, dict), "precision.bar", "an object", bar)
    for key, value in bar.items():
        _need(_is_number(value) or value is None, f"precision.bar.{key}", "a number or null", value)
    for i, line in enumerate(_list(prec.get("shortfalls") or [], "precision.shortfalls", 1000)):
        _text(line, f"precision.shortfalls[{i}]")
    for i, step in enumerate(_list(prec.get("steps") or [], "precision.steps", 1000)):
        _need(isinstance(step, dict), f"precision.steps[{i}]", "an object", step)
        _fields(step, _STEP_FIELDS, f"precision.steps[{i}]")


def _fields(section: dict, kinds: dict, path: str) -> None:
    """Optional fields by type (null allowed; true is not a number)."""
    for key, kind in kinds.items():
        value = section.get(key)
        if value is None:
            continue
        if kind is str:
            _text(value, f"{path}.{key}")
        elif kind is bool:
            _need(isinstance(value, bool), f"{path}.{key}", "true, false or null", value)
        else:
            number = is_int(value) if kind is int else _is_number(value)
            _need(number, f"{path}.{key}", ("an integer" if kind is int else "a number") + " or null", value)


def _fidelity(fid) -> None:
    """What `edge-run info` and /metrics show of the held-out measurement."""
    if fid is None:
        return
    _need(isinstance(fid, dict), "fidelity", "an object", fid)
    samples = fid.get("samples")
    if samples is not None:
        _integer(samples, "fidelity.samples", 0, INT64_MAX)
    outputs = fid.get("outputs", {})
    _need(isinstance(outputs, dict) and len(outputs) <= MAX_TENSORS, "fidelity.outputs",
          f"an object of at most {MAX_TENSORS} outputs", outputs)
    for name, m in outputs.items():
        path = f"fidelity.outputs[{_show(name)}]"
        _name(name, path)
        _need(isinstance(m, dict), path, "an object", m)
        for key in ("cosine", "max_abs_error", "mean_abs_error"):
            _need(_is_number(m.get(key, MISSING)), f"{path}.{key}", "a number", m.get(key, MISSING))
        _fields(m, {"top1_agreement": _NUMBER}, path)
        channel = m.get("worst_channel")
        if channel is not None:
            _need(isinstance(channel, dict), f"{path}.worst_channel", "an object or null", channel)
            _need(_is_number(channel.get("cosine", MISSING)), f"{path}.worst_channel.cosine", "a number",
                  channel.get("cosine", MISSING))
            for key in ("index", "axis"):
                _integer(_field(channel, key, f"{path}.worst_channel"), f"{path}.worst_channel.{key}", 0, MAX_DIM)
        score_map = m.get("score_map")
        if score_map is not None:
            _need(isinstance(score_map, dict), f"{path}.score_map", "an object or null", score_map)
            _fields(score_map, {"f1": _NUMBER}, f"{path}.score_map")


def _conversion(manifest: dict) -> None:
    """How the model was converted and prepared (`edge-run info` lists the changes)."""
    if "conversion" in manifest:
        conversion = _section(manifest, "conversion")
        _text(_field(conversion, "strategy", "conversion"), "conversion.strategy")
        _list(_field(conversion, "attempts", "conversion"), "conversion.attempts", 1000)
    preparation = manifest.get("preparation", {})
    _need(isinstance(preparation, dict), "preparation", "an object", preparation)
    for i, change in enumerate(_list(preparation.get("changes", []), "preparation.changes", 10_000)):
        _text(change, f"preparation.changes[{i}]")


def _ops(ops) -> None:
    """The op report `edge-run info` prints: counts by type and dtype, float ops by name."""
    if not ops:
        return
    _need(isinstance(ops, dict), "ops", "an object", ops)
    _integer(_field(ops, "total", "ops"), "ops.total", 0, INT64_MAX)
    counts = _field(ops, "counts", "ops")
    _need(isinstance(counts, dict), "ops.counts", "an object", counts)
    for op, per in counts.items():
        _name(op, "ops.counts")
        _need(isinstance(per, dict), f"ops.counts.{op}", "an object of counts by dtype", per)
        for dtype, n in per.items():
            _name(dtype, f"ops.counts.{op}")
            _integer(n, f"ops.counts.{op}.{dtype}", 0, INT64_MAX)
    for i, entry in enumerate(_list(ops.get("float_ops", []), "ops.float_ops", 1_000_000)):
        _need(isinstance(entry, dict), f"ops.float_ops[{i}]", "an object", entry)
        for key in ("type", "output"):
            _text(_field(entry, key, f"ops.float_ops[{i}]"), f"ops.float_ops[{i}].{key}")


def check_input_statistics(stats, shapes: dict, frames: set = frozenset()) -> None:
    """Calibration-set statistics per input, which `edge-run serve` measures drift against (absent before them).

    The server divides by std and indexes channels by these lists: a wrong
    length or a negative or non-finite number would give a drift figure
    that means nothing, so the bundle is refused instead.
    """
    if stats is None:
        return
    _need(isinstance(stats, dict) and len(stats) <= MAX_TENSORS, "input_statistics",
          "an object of at most one entry per input", stats)
    for name, entry in stats.items():
        path = f"input_statistics[{_show(name)}]"
        _need(name in shapes, path, "the statistics of one of the inputs", name)
        _need(isinstance(entry, dict), path, "an object", entry)
        axis = _field(entry, "channel_axis", path)
        shape = shapes[name]
        last = 3 if name in frames else 1  # camera frames are [N, H, W, C]
        _need(axis is None or (axis == last and is_int(axis) and len(shape) == 4), f"{path}.channel_axis",
              f"null, or {last} for an {'[N, H, W, C] frame' if last == 3 else '[N, C, H, W]'} input", axis)
        channels = 1 if axis is None else shape[axis]
        for key in ("mean", "std"):
            values = _field(entry, key, path)
            _need(isinstance(values, list) and len(values) == channels
                  and all(_is_number(v) and math.isfinite(v) and (key == "mean" or v >= 0) for v in values),
                  f"{path}.{key}", f"a list of {channels} finite {'non-negative ' if key == 'std' else ''}numbers",
                  values)


# --- the checks every piece uses ---

def _need(ok, path: str, expected: str, value) -> None:
    if not ok:
        raise Malformed(path, expected, value)


def is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _field(section: dict, key: str, path: str = ""):
    """A required field's value (Malformed naming it when missing)."""
    value = section.get(key, MISSING)
    _need(value is not MISSING, f"{path}.{key}" if path else key, "present", value)
    return value


def _section(manifest: dict, key: str) -> dict:
    value = _field(manifest, key)
    _need(isinstance(value, dict), key, "an object", value)
    return value


def _list(value, path: str, most: int) -> list:
    _need(isinstance(value, list) and len(value) <= most, path, f"a list of at most {most:,} items", value)
    return value


def _text(value, path: str, optional: bool = False) -> None:
    if optional and value is None:
        return
    _need(isinstance(value, str) and not CONTROL.search(value), path, "a string without control characters", value)


def _name(value, path: str) -> None:
    _need(isinstance(value, str) and 0 < len(value) <= MAX_NAME and not CONTROL.search(value), path,
          f"a name of 1 to {MAX_NAME} characters without control characters", value)


def _integer(value, path: str, low: int, high: int) -> None:
    expected = "a positive integer" if (low, high) == (1, MAX_DIM) else (
        "a non-negative integer" if (low, high) == (0, INT64_MAX) else f"an integer from {low:,} to {high:,}")
    _need(is_int(value) and low <= value <= high, path, expected, value)
