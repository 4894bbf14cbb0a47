"""Coral's Edge TPU compiler, when it is on PATH: found, its version read, paired with the device's runtime, run.

The compiler's version sets the lowest Edge TPU runtime its models load on;
a profile naming the device's runtime (edgetpu_runtime) gets models compiled
for that runtime.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

from edge_runtime.errors import UserError

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


def pairing(version: str, device: int | None) -> tuple[int | None, int | None]:
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


def compile_model(tflite: bytes, work: Path, timeout: float = COMPILE_TIMEOUT,
                  compiler: dict | None = None) -> dict | None:
    """Compile the int8 model with edgetpu_compiler; None when the compiler is not on PATH.

    Args:
        compiler: what :func:`~packager.edgetpu.stage.check_compiler` found (default: look now, no device runtime).

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

