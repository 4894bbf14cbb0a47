"""The build's Edge TPU stage: the compatibility report for every target, and model_edgetpu.tflite
for a target with the edgetpu delegate when Coral's edgetpu_compiler is on PATH (without it the CPU
model ships with the report)."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import Callable

from edge_runtime.errors import UserError

from .compiler import COMPILER, INSTALL_HINT, compile_model, compiler_version, device_runtime, find_compiler, pairing
from .predictor import compatibility


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
    flag, needs = pairing(version, device)
    return {"path": path, "version": version, "device_runtime": device, "min_runtime_flag": flag,
            "min_runtime": needs}


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



def preflight(profiles: list, require: bool, targets: str) -> None:
    """Before the conversion: --require-edgetpu has an Edge TPU target, and each one a compiler it can use.

    Args:
        profiles: the targets that list the edgetpu delegate.
        targets: --target as given, for the message.
    """
    if require and not profiles:
        raise UserError(f"--require-edgetpu, but no target of {targets} lists the edgetpu delegate",
                        "add an Edge TPU target (e.g. coral-usb), or leave --require-edgetpu out")
    for profile in profiles:
        check_compiler(profile, require)


def stage_target(tflite: bytes, precision: str, profile, stage_dir: Path, require: bool) -> tuple[dict, list[str]]:
    """The Edge TPU row of the accelerator table: the manifest's "edgetpu" section, and the build's warnings."""
    report = edgetpu_stage(tflite, profile, stage_dir, require)
    if "edgetpu" not in profile.delegates or precision == "int8":
        return report, []
    return report, [f"target {profile.name}: the Edge TPU runs full-integer models only, and the chosen precision "
                    f"is {precision}: {report['summary']}. --precision int8 demands full integer (or fails, saying "
                    "what it loses)"]
