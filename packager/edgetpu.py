"""Edge TPU compatibility, predicted without the Edge TPU compiler, and compiled with it when it is on PATH.

The compiler (x86 Linux only, unmaintained) maps ops in execution order and
delegates one segment: the first op it cannot map, and every op after it,
run on the CPU. So the figure that matters is where mapping stops, and why.
Each op of the int8 .tflite is checked against Coral's documented supported
operations and model requirements (edgetpu_ops.toml): op type, 8-bit tensors,
static shapes, the rank rule and the op's own limitations. A prediction, not
a compilation: limitations the documentation leaves vague (sizes "that might
not be mapped") are not guessed at.

The flatbuffer is read with the schema module ai-edge-litert ships: op
options (fused activation, dilation, masks) and constant buffers are not
visible through the Interpreter.

When Coral's edgetpu_compiler is on PATH, the build stage (edgetpu_stage)
also compiles model_edgetpu.tflite and records the compiler's own figures;
without it the CPU model ships with the prediction. The compiler's version
sets the lowest Edge TPU runtime its models load on; a profile naming the
device's runtime (edgetpu_runtime) gets models compiled for that runtime.
"""

from __future__ import annotations

import functools
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path
from typing import Callable

import numpy as np

from edge_runtime.errors import UserError

TABLE = Path(__file__).with_name("edgetpu_ops.toml")
EIGHT_BIT = ("INT8", "UINT8")
PARAMETER_TYPES = ("INT32", "INT64")  # axes, shapes, paddings, biases: fine when constant
WEIGHTED = {"CONV_2D": (1, 2), "DEPTHWISE_CONV_2D": (1, 2), "FULLY_CONNECTED": (1, 2), "TRANSPOSE_CONV": (1, 3)}
SOFTMAX_MAX = 16000


@functools.cache
def table() -> dict:
    """The supported-ops table (edgetpu_ops.toml)."""
    with TABLE.open("rb") as f:
        return tomllib.load(f)


@functools.cache
def _schema():
    from ai_edge_litert import schema_py_generated as schema

    def names(enum) -> dict[int, str]:
        return {v: k for k, v in vars(enum).items() if not k.startswith("_")}

    return schema, names(schema.BuiltinOperator), names(schema.TensorType), names(schema.ActivationFunctionType)


class _Graph:
    """The main subgraph of a .tflite: tensors, constants and ops in execution order."""

    def __init__(self, tflite: bytes):
        schema, self.op_names, self.type_names, self.activations = _schema()
        self.model = schema.ModelT.InitFromPackedBuf(bytearray(tflite), 0)
        self.sub = self.model.subgraphs[0]

    def op_type(self, op) -> str:
        code = self.model.operatorCodes[op.opcodeIndex]
        builtin = max(code.builtinCode, code.deprecatedBuiltinCode)
        if self.op_names.get(builtin) == "CUSTOM":
            return f"CUSTOM:{(code.customCode or b'?').decode(errors='replace')}"
        return self.op_names.get(builtin, f"BUILTIN_{builtin}")

    def tensor(self, index: int):
        return self.sub.tensors[index]

    def name(self, index: int) -> str:
        raw = self.tensor(index).name
        text = raw.decode(errors="replace") if isinstance(raw, bytes) else str(raw)
        first = text.split(";")[0]  # the converter joins fused tensors' names with ';'
        return first if len(first) <= 60 else first[:57] + "..."

    def dtype(self, index: int) -> str:
        return self.type_names.get(self.tensor(index).type, "?")

    def shape(self, index: int) -> list[int]:
        shape = self.tensor(index).shape
        return [] if shape is None else [int(d) for d in shape]

    def dynamic(self, index: int) -> bool:
        sig = self.tensor(index).shapeSignature
        return sig is not None and any(int(d) < 0 for d in sig)

    def constant(self, index: int) -> bool:
        buffer = self.model.buffers[self.tensor(index).buffer]
        return (buffer.data is not None and len(buffer.data) > 0) or bool(getattr(buffer, "size", 0))

    def values(self, index: int) -> np.ndarray | None:
        """A constant int32/int64 tensor's values (axes, paddings), else None."""
        buffer = self.model.buffers[self.tensor(index).buffer]
        dtype = {"INT32": np.int32, "INT64": np.int64}.get(self.dtype(index))
        if dtype is None or buffer.data is None or not len(buffer.data):
            return None
        return np.frombuffer(np.asarray(buffer.data, dtype=np.uint8).tobytes(), dtype=dtype).reshape(self.shape(index))

    def all_zero(self, index: int) -> bool:
        buffer = self.model.buffers[self.tensor(index).buffer]
        if buffer.data is None:
            return False
        raw = np.asarray(buffer.data, dtype=np.uint8)
        zp = self.tensor(index).quantization
        zero_points = [] if zp is None or zp.zeroPoint is None else list(zp.zeroPoint)
        if self.dtype(index) in EIGHT_BIT and zero_points:  # quantized zero is the zero point
            values = raw.view(np.int8 if self.dtype(index) == "INT8" else np.uint8)
            return bool(np.all(values == int(zero_points[0])))
        return not raw.any()


def _ins(op) -> list[int]:
    return [int(i) for i in op.inputs if i >= 0]


def _outs(op) -> list[int]:
    return [int(i) for i in op.outputs]


def _over_one(shape: list[int]) -> int:
    return sum(1 for d in shape if d > 1)


# --- the general requirements ---------------------------------------------------------------

def _tensor_reason(g: _Graph, op_type: str, op, position: int, index: int, is_input: bool) -> str | None:
    """Why one input/output of an op keeps it off the Edge TPU, or None."""
    kind = g.dtype(index)
    what = f"{'input' if is_input else 'output'} '{g.name(index)}'"
    weighted = WEIGHTED.get(op_type, ())
    if is_input and position in weighted and not g.constant(index):
        return f"{op_type} {'weights' if position == weighted[0] else 'bias'} '{g.name(index)}' are not constant"
    if kind not in EIGHT_BIT:
        if not (is_input and kind in PARAMETER_TYPES and g.constant(index)):
            return f"{kind.lower()} {what}" + (" (not a compile-time constant)" if kind in PARAMETER_TYPES else "")
    if g.dynamic(index):
        return f"dynamic shape {list(g.tensor(index).shapeSignature)} of {what}"
    shape = g.shape(index)
    if not g.constant(index) and len(shape) > 3 and any(d > 1 for d in shape[:-3]):
        return f"{len(shape)}-D {what} {shape} with {_over_one(shape)} dims > 1 (only the 3 innermost may be)"
    return None


# --- the op-specific limitations (edgetpu_ops.toml `checks`) --------------------------------

def _no_fused_activation(g, op, op_type):
    act = getattr(op.builtinOptions, "fusedActivationFunction", 0) or 0
    return None if act == 0 else f"fused {g.activations.get(act, act)} activation"


def _same_dilation(g, op, op_type):
    o = op.builtinOptions
    h, w = getattr(o, "dilationHFactor", 1) or 1, getattr(o, "dilationWFactor", 1) or 1
    return None if h == w else f"dilation {h} in y but {w} in x"


def _fc_default_weights(g, op, op_type):
    fmt = getattr(op.builtinOptions, "weightsFormat", 0) or 0
    return None if fmt == 0 else f"weights format {fmt} (only the default is supported)"


def _output_1d(g, op, op_type):
    shape = g.shape(_outs(op)[0])
    return None if _over_one(shape) <= 1 else f"output {shape} is not 1-D"


def _concat_constant_zero_pad(g, op, op_type):
    ins = _ins(op)
    constants = [i for i in ins if g.constant(i)]
    if not constants:
        return None
    if len(ins) != 2:
        return f"constant input '{g.name(constants[0])}' among {len(ins)} inputs (allowed only with 2)"
    if not g.all_zero(constants[0]):
        return f"constant input '{g.name(constants[0])}' is not all zeros"
    return None


def _axes(g, op) -> list[int] | None:
    if len(_ins(op)) < 2:
        return None
    values = g.values(_ins(op)[1])
    if values is None:
        return None
    rank = len(g.shape(_ins(op)[0]))
    return sorted({int(a) % rank for a in values.ravel()}) if rank else []


def _axes_not_batch(g, op, op_type):
    axes = _axes(g, op)
    if axes is None:
        return "reduction axes are not a constant"
    return "reduces over the batch dimension" if 0 in axes and len(g.shape(_ins(op)[0])) > 1 else None


def _mean_z_multiple_of_4(g, op, op_type):
    axes, shape = _axes(g, op), g.shape(_ins(op)[0])
    if axes is None or not shape or (len(shape) - 1) not in axes:
        return None
    return None if shape[-1] % 4 == 0 else f"reduces over {shape[-1]} channels (needs a multiple of 4)"


def _axis_not_batch(g, op, op_type):
    axis = getattr(op.builtinOptions, "axis", 0) or 0
    return "packs along the batch dimension" if axis == 0 else None


def _pad_not_batch(g, op, op_type):
    pads = g.values(_ins(op)[1]) if len(_ins(op)) > 1 else None
    if pads is None:
        return "paddings are not a constant"
    return f"pads the batch dimension by {pads[0].tolist()}" if pads.ndim == 2 and pads[0].any() else None


def _alpha_innermost(g, op, op_type):
    shape = g.shape(_ins(op)[1])
    return None if all(d == 1 for d in shape[:-1]) else f"alpha {shape} is not 1-D"


def _io_3d(g, op, op_type):
    for index in (_ins(op)[0], _outs(op)[0]):
        shape = g.shape(index)
        if len(shape) > 3 and any(d > 1 for d in shape[:-3]):
            return f"'{g.name(index)}' {shape} is not 3-D"
    return None


def _softmax_1d_16000(g, op, op_type):
    shape = g.shape(_ins(op)[0])
    if _over_one(shape) > 1:
        return f"input {shape} is not 1-D"
    size = int(np.prod(shape)) if shape else 1
    return None if size <= SOFTMAX_MAX else f"input of {size} elements (at most {SOFTMAX_MAX})"


def _squeeze_leading_ones(g, op, op_type):
    shape, out = g.shape(_ins(op)[0]), g.shape(_outs(op)[0])
    leading = 0
    while leading < len(shape) and shape[leading] == 1:
        leading += 1
    kept = [d for d in shape[leading:]]
    return None if out[-len(kept):] == kept or not kept else f"squeezes {shape} to {out} (needs a relayout)"


def _strided_slice_unit(g, op, op_type):
    o = op.builtinOptions
    if getattr(o, "ellipsisMask", 0) or getattr(o, "newAxisMask", 0):
        return "ellipsis or new-axis mask set"
    strides = g.values(_ins(op)[3]) if len(_ins(op)) > 3 else None
    if strides is None:
        return "strides are not a constant"
    return None if np.all(strides == 1) else f"strides {strides.tolist()} (only 1 is supported)"


CHECKS = {
    "no_fused_activation": _no_fused_activation,
    "same_dilation": _same_dilation,
    "fc_default_weights": _fc_default_weights,
    "output_1d": _output_1d,
    "concat_constant_zero_pad": _concat_constant_zero_pad,
    "axes_not_batch": _axes_not_batch,
    "mean_z_multiple_of_4": _mean_z_multiple_of_4,
    "axis_not_batch": _axis_not_batch,
    "pad_not_batch": _pad_not_batch,
    "alpha_innermost": _alpha_innermost,
    "io_3d": _io_3d,
    "softmax_1d_16000": _softmax_1d_16000,
    "squeeze_leading_ones": _squeeze_leading_ones,
    "strided_slice_unit": _strided_slice_unit,
}


def op_reason(g: _Graph, op, runtime: int | None = None) -> tuple[str, str | None]:
    """(op type, why it cannot run on the Edge TPU or None); runtime: the device's Edge TPU runtime."""
    op_type = g.op_type(op)
    if op_type.startswith("CUSTOM:"):
        return op_type, f"custom op {op_type[7:]} is not a TFLite built-in"
    entry = table()["ops"].get(op_type)
    if entry is None:
        return op_type, f"op {op_type} is not in the Edge TPU's supported operations"
    if runtime is not None and entry.get("runtime", 0) > runtime:
        return op_type, f"{op_type} needs Edge TPU runtime {entry['runtime']} (the target has {runtime})"
    for is_input, indices in ((True, [int(i) for i in op.inputs]), (False, _outs(op))):
        for position, index in enumerate(indices):
            if index < 0:
                continue
            why = _tensor_reason(g, op_type, op, position, index, is_input)
            if why:
                return op_type, why
    for check in entry.get("checks", []):
        why = CHECKS[check](g, op, op_type)
        if why:
            return op_type, f"{op_type}: {why}"
    return op_type, None


def _float_io_edges(g: _Graph, ops: list) -> tuple[int, int]:
    """How many ops at the start quantize float model inputs, and at the end dequantize to float outputs.

    A model with float I/O starts with QUANTIZE (float -> int8) and ends with
    DEQUANTIZE (int8 -> float). The compiler leaves those on the CPU around
    the one Edge TPU segment: they do not stop the mapping of the ops between
    them (edgetpu_ops.toml, "Float I/O", for the compiler log that shows it).
    """
    inputs = {int(i) for i in (g.sub.inputs if g.sub.inputs is not None else [])}
    outputs = {int(i) for i in (g.sub.outputs if g.sub.outputs is not None else [])}

    def edge(op, kind: str, ends: set[int], index_of) -> bool:
        ins, outs = _ins(op), _outs(op)
        if g.op_type(op) != kind or len(ins) != 1 or len(outs) != 1:
            return False
        return index_of(ins, outs) in ends and g.dtype(ins[0] if kind == "QUANTIZE" else outs[0]) == "FLOAT32"

    lead = 0
    while lead < len(ops) and edge(ops[lead], "QUANTIZE", inputs, lambda i, o: i[0]):
        lead += 1
    trail = 0
    while trail < len(ops) - lead and edge(ops[-1 - trail], "DEQUANTIZE", outputs, lambda i, o: o[0]):
        trail += 1
    return lead, trail


def compatibility(tflite: bytes, runtime: int | None = None) -> dict:
    """Which ops the Edge TPU compiler would map, and where mapping stops.

    Args:
        runtime: the device's Edge TPU runtime version, when known: ops
            that need a newer one count as CPU ops.

    Returns:
        {"ops_total", "ops_edgetpu", "first_cpu_op": {index, type, why} or None,
        "float_io": {"quantize", "dequantize"} edge ops left on the CPU without
        stopping the mapping, "reasons": {op type: why} for every op type that
        cannot be mapped (first reason seen), "summary": one line}.
    """
    g = _Graph(tflite)
    ops = list(g.sub.operators or [])
    lead, trail = _float_io_edges(g, ops)
    first = None
    reasons: dict[str, str] = {}
    for index, op in enumerate(ops[lead:len(ops) - trail], start=lead):
        op_type, why = op_reason(g, op, runtime)
        if why is None:
            continue
        reasons.setdefault(op_type, why)
        if first is None:
            first = {"index": index, "type": op_type, "why": why}
    mapped = (first["index"] if first else len(ops) - trail) - lead
    if len(g.model.subgraphs) > 1:  # control flow: the compiler maps the main subgraph only
        reasons.setdefault("SUBGRAPHS", f"{len(g.model.subgraphs)} subgraphs (only the first is compiled)")
    float_io = {"quantize": lead, "dequantize": trail}
    return {
        "ops_total": len(ops),
        "ops_edgetpu": mapped,
        "first_cpu_op": first,
        "float_io": float_io,
        "reasons": reasons,
        "summary": summary_line(len(ops), mapped, first, float_io),
        "source": table()["source"],
    }


def summary_line(total: int, mapped: int, first: dict | None, float_io: dict | None = None) -> str:
    """'N of M ops would run on the Edge TPU; first CPU op: X (why)[; float I/O on the CPU: ...]'."""
    stop = "none" if first is None else f"{first['type']} #{first['index']} ({first['why']})"
    line = f"{mapped} of {total} ops would run on the Edge TPU; first CPU op: {stop}"
    edges = [f"{n} {kind.upper()}" for kind, n in (float_io or {}).items() if n]
    return line + (f"; float I/O on the CPU: {', '.join(edges)}" if edges else "")


# --- the Edge TPU compiler, when it is on PATH ------------------------------------------------
#
# Coral's edgetpu_compiler (Debian package edgetpu-compiler, x86-64 only, from
# Coral's apt repository) writes <model>_edgetpu.tflite and <model>_edgetpu.log
# into -o/--out_dir; -s/--show_operations prints the operation log on stdout
# too; -m/--min_runtime_version makes the model load on an older runtime.
# Source: https://coral.ai/docs/edgetpu/compiler/ ("Usage", Table 1).

COMPILER = "edgetpu_compiler"
COMPILE_TIMEOUT = 600.0  # seconds; the compiler's own timer defaults to 180 s per attempt
INSTALL_HINT = ("install Coral's package edgetpu-compiler (x86-64 Debian/Ubuntu, from Coral's apt repository "
                "https://packages.cloud.google.com/apt coral-edgetpu-stable), see https://coral.ai/docs/edgetpu/compiler/")
# libedgetpu api/runtime_version.h: kMinValidRuntimeVersion = 10 .. kCurrent = 14; a package that
# needs a newer runtime than the device's fails with "Package requires runtime version (N), which
# is newer than this runtime version (M)".
RUNTIMES = range(10, 15)
# Compiler version -> the runtime its models need by default (newest first). Sources:
# google-coral/edgetpu CHANGES.md (2.0 with runtime 12; 2.0.291256449 with runtime 13),
# coral.ai/docs/edgetpu/compiler/#compiler-and-runtime-versions as cited in Coral's issue threads
# (16.0 needs 14; 14.1 runs on 13); 2.1 and 15.0 -> 13 from that table as remembered.
COMPILER_RUNTIME = (((16,), 14), ((15,), 13), ((14, 1), 13), ((2, 1), 13), ((2, 0, 291256449), 13),
                    ((2, 0), 12), ((1, 0), 10))
_SIZE_UNITS = {"B": 1, "KiB": 1024, "MiB": 1024 ** 2, "GiB": 1024 ** 3}
_FIGURES = {  # stdout line prefix -> figure
    "On-chip memory used for caching model parameters": "on_chip_used",
    "On-chip memory remaining for caching model parameters": "on_chip_remaining",
    "On-chip memory available for caching model parameters": "on_chip_available",  # compilers 2.0
    "Off-chip memory used for streaming uncached model parameters": "off_chip_used",
}


def default_runtime(version: str) -> int | None:
    """The Edge TPU runtime a compiler's models need unless -m says otherwise (None: unknown version)."""
    try:
        parts = tuple(int(p) for p in version.split("."))
    except ValueError:
        return None
    return next((runtime for floor, runtime in COMPILER_RUNTIME if parts >= floor), None)


def device_runtime(profile) -> int | None:
    """The profile's `edgetpu_runtime` as a number, checked against the runtimes libedgetpu knows."""
    value = getattr(profile, "edgetpu_runtime", None)
    if value is None:
        return None
    if not value.isdigit() or int(value) not in RUNTIMES:
        raise UserError(f"device profile {profile.source}: 'edgetpu_runtime' must be an Edge TPU runtime version "
                        f"{RUNTIMES.start}..{RUNTIMES.stop - 1}, found {value!r}",
                        "the libedgetpu runtime version of the device (libedgetpu1-std 16.0 is runtime 14)")
    return int(value)


def _size(text: str) -> int | None:
    m = re.fullmatch(r"([\d.]+)\s*([KMG]?i?B)", text.strip())
    return round(float(m[1]) * _SIZE_UNITS[m[2]]) if m and m[2] in _SIZE_UNITS else None


def parse_compiler_output(stdout: str, log: str = "") -> dict:
    """The figures of one compilation from the compiler's stdout and its operation log.

    The operator table (Operator, Count, Status) is read from the log, else
    from stdout (-s prints it there too). Ops mapped: the table's "Mapped to
    Edge TPU" rows, else "Number of operations that will run on Edge TPU",
    which the compiler prints only when some ops stay on the CPU.
    """
    figures: dict = {"version": None, "compile_ms": None, "ops_total": None, "ops_edgetpu": None, "subgraphs": None}
    if m := re.search(r"Edge TPU Compiler version (\S+)", stdout + "\n" + log):
        figures["version"] = m[1]
    if m := re.search(r"Model compiled successfully in (\d+) ms", stdout):
        figures["compile_ms"] = int(m[1])
    for line in stdout.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in _FIGURES:
            name = _FIGURES[key.strip()]
            figures[name] = value.strip()
            figures[f"{name}_bytes"] = _size(value)
    if m := re.search(r"^Number of Edge TPU subgraphs: (\d+)", stdout, re.M):
        figures["subgraphs"] = int(m[1])
    if m := re.search(r"^Total number of operations: (\d+)", stdout, re.M):
        figures["ops_total"] = int(m[1])
    figures["operations"] = _operator_table(log) or _operator_table(stdout)
    if figures["operations"]:
        figures["ops_edgetpu"] = sum(r["count"] for r in figures["operations"] if r["status"] == "Mapped to Edge TPU")
        figures["ops_total"] = figures["ops_total"] or sum(r["count"] for r in figures["operations"])
    elif m := re.search(r"^Number of operations that will run on Edge TPU: (\d+)", stdout, re.M):
        figures["ops_edgetpu"] = int(m[1])
    else:
        figures["ops_edgetpu"] = figures["ops_total"]
    return figures


def _operator_table(text: str) -> list[dict]:
    rows, inside = [], False
    for line in text.splitlines():
        if re.match(r"\s*Operator\s+Count\s+Status\s*$", line):
            inside = True
            continue
        m = re.match(r"([A-Z][A-Z0-9_]*)\s+(\d+)\s+(\S.*?)\s*$", line) if inside else None
        if m:
            rows.append({"operator": m[1], "count": int(m[2]), "status": m[3]})
        elif inside and rows and line.strip():
            break  # the table ended
    return rows


def _last_lines(*texts: str, n: int = 8) -> str:
    lines = [l for text in texts for l in (text or "").splitlines() if l.strip()]
    return " | ".join(lines[-n:]) or "(no output)"


def find_compiler() -> str | None:
    """edgetpu_compiler's path, or None when it is not on PATH."""
    return shutil.which(COMPILER)


def compiler_version(path: str) -> str:
    """`edgetpu_compiler --version`: 'Edge TPU Compiler version 16.0.384591198' -> '16.0.384591198'."""
    try:
        proc = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise UserError(f"{path} --version did not run: {exc}", "check the edgetpu_compiler install; "
                        + INSTALL_HINT) from None
    m = re.search(r"Edge TPU Compiler version (\S+)", proc.stdout + proc.stderr)
    if proc.returncode != 0 or not m:
        raise UserError(f"{path} --version did not name a version (exit {proc.returncode}): "
                        f"{_last_lines(proc.stdout, proc.stderr)}", "check the edgetpu_compiler install")
    return m[1]


def _pairing(version: str, device: int | None) -> tuple[int | None, int | None]:
    """(the -m value to pass or None, the runtime the compiled model needs) for this compiler and device.

    A model needing a newer runtime than the device's does not load there
    ("Package requires runtime version (14), which is newer than this runtime
    version (13)"); Coral's answer is -m/--min_runtime_version with the
    device's version (google-coral/edgetpu issues 435, 464). Whether the
    compiler can go that low is its own call: it fails, and says so, if not.
    """
    default = default_runtime(version)
    if device is None:
        return None, default
    if default is not None and default <= device:
        return None, default  # a runtime loads every package that needs it or an older one
    return device, device  # the documented fix: compile with -m/--min_runtime_version


def check_compiler(profile, require: bool) -> dict | None:
    """Before the conversion: is there a compiler to use for this target, and can its models run there?

    Returns None when the target does not list the edgetpu delegate, else
    {"path", "version", "min_runtime_flag", "min_runtime"} or {"path": None}
    when the compiler is absent (the build then ships the CPU model).

    Raises:
        UserError: --require-edgetpu without the compiler (or for a target
            without the edgetpu delegate); a profile runtime libedgetpu does
            not know; a compiler that cannot make models for that runtime.
    """
    if "edgetpu" not in profile.delegates:
        if require:
            raise UserError(f"--require-edgetpu, but target {profile.name} does not list the edgetpu delegate",
                            "add \"edgetpu\" to the profile's delegates, or leave --require-edgetpu out")
        return None
    device = device_runtime(profile)
    path = find_compiler()
    if path is None:
        if require:
            raise UserError(f"--require-edgetpu: {COMPILER} is not on PATH", INSTALL_HINT)
        return {"path": None, "device_runtime": device}
    version = compiler_version(path)
    flag, needs = _pairing(version, device)
    return {"path": path, "version": version, "device_runtime": device, "min_runtime_flag": flag,
            "min_runtime": needs}


def compile_model(tflite: bytes, work: Path, timeout: float = COMPILE_TIMEOUT,
                  compiler: dict | None = None) -> dict | None:
    """Compile the int8 model with edgetpu_compiler; None when the compiler is not on PATH.

    Args:
        compiler: what :func:`check_compiler` found (default: look now, no device runtime).

    Returns:
        the figures of :func:`parse_compiler_output`, plus "min_runtime" and
        "tflite" (the compiled bytes).

    Raises:
        UserError: the compiler failed, timed out or wrote no model.
    """
    if compiler is None:
        path = find_compiler()
        if path is None:
            return None
        version = compiler_version(path)
        compiler = {"path": path, "version": version, "min_runtime_flag": None,
                    "min_runtime": default_runtime(version)}
    if compiler["path"] is None:
        return None
    work.mkdir(parents=True, exist_ok=True)
    source, out = work / "model.tflite", work / "edgetpu"
    out.mkdir(exist_ok=True)
    source.write_bytes(tflite)
    cmd = [compiler["path"], "-s", "-o", str(out)]
    if compiler.get("min_runtime_flag") is not None:
        cmd += ["-m", str(compiler["min_runtime_flag"])]
    cmd.append(str(source))
    what = f"{COMPILER} {compiler.get('version') or ''}".strip()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=work)
    except subprocess.TimeoutExpired as exc:
        raise UserError(f"{what} did not finish in {timeout:g} s: "
                        f"{_last_lines(_text(exc.stdout), _text(exc.stderr))}",
                        "a model this large may not fit the Edge TPU; drop edgetpu from the profile's delegates "
                        "to ship the CPU model, or compile by hand with a longer --timeout_sec") from None
    except OSError as exc:
        raise UserError(f"{what} did not run: {exc}", INSTALL_HINT) from None
    compiled = out / "model_edgetpu.tflite"
    if proc.returncode != 0 or not compiled.is_file():
        status = f"exit {proc.returncode}" if proc.returncode else "exit 0 but no model_edgetpu.tflite"
        raise UserError(f"{what} failed on the int8 model ({status}): {_last_lines(proc.stdout, proc.stderr)}",
                        "the compatibility report (edgepack inspect) shows which ops the Edge TPU cannot map; "
                        "drop edgetpu from the profile's delegates to ship the CPU model")
    log_file = out / "model_edgetpu.log"
    log = log_file.read_text(errors="replace") if log_file.is_file() else ""
    figures = parse_compiler_output(proc.stdout, log)
    figures["version"] = figures["version"] or compiler.get("version")
    figures["min_runtime"] = compiler.get("min_runtime") if compiler.get("min_runtime_flag") is None \
        else compiler["min_runtime_flag"]
    figures["tflite"] = compiled.read_bytes()
    return figures


def _text(data) -> str:
    return data.decode(errors="replace") if isinstance(data, bytes) else (data or "")


def _say_stderr(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


EDGETPU_FILE = "model_edgetpu.tflite"


def edgetpu_stage(tflite: bytes, profile, stage_dir: Path, require: bool,
                  log: Callable[[str], None] = _say_stderr) -> dict:
    """The manifest's "edgetpu" section, and model_edgetpu.tflite in stage_dir when the compiler made one.

    Every target gets the compatibility report. A target with the edgetpu
    delegate gets one line: the compiled figures, or, without the compiler,
    that the CPU model ships with the report.
    """
    compiler = check_compiler(profile, require)
    report = compatibility(tflite, None if compiler is None else compiler["device_runtime"])
    if compiler is None:
        return report
    if compiler["path"] is None:
        log(f"Edge TPU: {COMPILER} is not on PATH (Coral's package edgetpu-compiler, x86-64 Debian/Ubuntu, "
            f"from Coral's apt repository): the CPU model ships with the compatibility report: {report['summary']}")
        return {**report, "compiled": None, "compiler": "not found"}
    with tempfile.TemporaryDirectory(prefix="edgetpu-") as work:
        figures = compile_model(tflite, Path(work), compiler=compiler)
    (stage_dir / EDGETPU_FILE).write_bytes(figures.pop("tflite"))
    figures["file"] = EDGETPU_FILE
    log(f"Edge TPU: compiled with {COMPILER} {figures['version']}: {figures['ops_edgetpu']} of "
        f"{figures['ops_total']} ops on the Edge TPU in {figures['subgraphs']} subgraph(s); on-chip "
        f"{figures.get('on_chip_used', '?')}, off-chip {figures.get('off_chip_used', '?')}; needs Edge TPU runtime "
        f">= {figures['min_runtime'] if figures['min_runtime'] is not None else '?'}")
    return {**report, "compiled": figures, "compiler": figures["version"]}
