"""Compiling with edgetpu_compiler: the parser on real compiler output, the build with and without the compiler.

Coral's compiler cannot be installed here (its apt repository is out of
reach). The compile path runs against tests/packager/standin/edgetpu_compiler:
a TEST-ONLY STAND-IN that compiles nothing. It tests our invocation and our
parsing of the documented output format only; product code never uses it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from edge_runtime.errors import UserError
from packager.edgetpu import (COMPILER, check_compiler, compile_model, default_runtime, pairing,
                              parse_compiler_output)
from packager.profiles import load_profile

from ..conftest import ROOT

STANDIN = Path(__file__).resolve().parent / "standin"

# Real compiler output, quoted verbatim.
# Edge TPU Compiler 14.1, partly mapped, stdout without -s:
# https://github.com/google-coral/edgetpu/issues/173
STDOUT_14_1 = """Edge TPU Compiler version 14.1.317412892

Model compiled successfully in 113 ms.

Input model: T1_no_summ_02_quant8.tflite
Input size: 28.19KiB
Output model: T1_no_summ_02_quant8_edgetpu.tflite
Output size: 116.78KiB
On-chip memory used for caching model parameters: 60.00KiB
On-chip memory remaining for caching model parameters: 7.96MiB
Off-chip memory used for streaming uncached model parameters: 0.00B
Number of Edge TPU subgraphs: 1
Total number of operations: 24
Operation log: T1_no_summ_02_quant8_edgetpu.log

Model successfully compiled but not all operations are supported by the
Edge TPU. A percentage of the model will instead run on the CPU, which is
slower. If possible, consider updating your model to use only operations
supported by the Edge TPU. For details, visit g.co/coral/model-reqs.
Number of operations that will run on Edge TPU: 6
Number of operations that will run on CPU: 18
See the operation log file for individual operation details.
"""

# Edge TPU Compiler 16.0 stdout, all 246 ops mapped (the table cut where the thread's quote is):
# https://github.com/WongKinYiu/yolov7/pull/1672
STDOUT_16_0 = """Edge TPU Compiler version 16.0.384591198
Searching for valid delegate with step 10
Try to compile segment with 246 ops
Started a compilation timeout timer of 180 seconds.

Model compiled successfully in 3133 ms.

Input model: runs/train/exp8/weights/best-int8.tflite
Input size: 6.00MiB
Output model: runs/train/exp8/weights/best-int8_edgetpu.tflite
Output size: 6.47MiB
On-chip memory used for caching model parameters: 5.90MiB
On-chip memory remaining for caching model parameters: 1.16MiB
Off-chip memory used for streaming uncached model parameters: 41.75KiB
Number of Edge TPU subgraphs: 1
Total number of operations: 246
Operation log: runs/train/exp8/weights/best-int8_edgetpu.log
"""

# The operation log <model>_edgetpu.log, Edge TPU Compiler 15.0, float I/O model:
# https://github.com/system-software-lab/nrf20/blob/master/convert/quantize/README.md
LOG_15_0 = """Edge TPU Compiler version 15.0.340273435
Input: mnist4.tflite
Output: mnist4_edgetpu.tflite

Operator                       Count      Status

RESHAPE                        1          Mapped to Edge TPU
CONV_2D                        2          Mapped to Edge TPU
SOFTMAX                        1          Mapped to Edge TPU
QUANTIZE                       1          Operation is otherwise supported, but not mapped due to some unspecified limitation
DEQUANTIZE                     1          Operation is working on an unsupported data type
MAX_POOL_2D                    2          Mapped to Edge TPU
FULLY_CONNECTED                2          Mapped to Edge TPU
"""


def test_parse_partly_mapped_stdout():
    f = parse_compiler_output(STDOUT_14_1)
    assert f["version"] == "14.1.317412892" and f["compile_ms"] == 113
    assert (f["ops_edgetpu"], f["ops_total"], f["subgraphs"]) == (6, 24, 1)
    assert (f["on_chip_used"], f["on_chip_used_bytes"]) == ("60.00KiB", 61440)
    assert f["on_chip_remaining_bytes"] == round(7.96 * 1024 ** 2)
    assert (f["off_chip_used"], f["off_chip_used_bytes"]) == ("0.00B", 0)
    assert f["operations"] == []


def test_parse_fully_mapped_stdout_has_no_cpu_count():
    """All mapped: the compiler prints no 'Number of operations that will run on Edge TPU' line."""
    f = parse_compiler_output(STDOUT_16_0)
    assert f["version"] == "16.0.384591198"
    assert f["ops_edgetpu"] == f["ops_total"] == 246
    assert f["off_chip_used_bytes"] == round(41.75 * 1024)


def test_parse_the_operation_log():
    f = parse_compiler_output("Edge TPU Compiler version 15.0.340273435\nTotal number of operations: 10\n", LOG_15_0)
    assert len(f["operations"]) == 7
    assert f["operations"][3] == {"operator": "QUANTIZE", "count": 1, "status": "Operation is otherwise supported, "
                                  "but not mapped due to some unspecified limitation"}
    assert (f["ops_edgetpu"], f["ops_total"]) == (8, 10)


def test_runtime_of_each_compiler():
    assert default_runtime("16.0.384591198") == 14
    assert default_runtime("15.0.340273435") == default_runtime("14.1.317412892") == 13
    assert default_runtime("2.0.291256449") == 13 and default_runtime("2.0.267685300") == 12
    assert default_runtime("garbage") is None
    assert pairing("16.0.384591198", None) == (None, 14)
    assert pairing("16.0.384591198", 14) == (None, 14)
    assert pairing("14.1.317412892", 14) == (None, 13)  # a runtime loads older packages
    assert pairing("16.0.384591198", 13) == (13, 13)  # compiled with -m 13


def _profile(tmp_path: Path, runtime: str | None = None, delegates='["xnnpack", "edgetpu"]') -> Path:
    text = (ROOT / "devices" / "rpi4.toml").read_text()
    text = text.replace('name = "rpi4"', 'name = "rpi4coral"').replace('delegates = ["xnnpack"]', f"delegates = {delegates}")
    if runtime is not None:
        text = text.replace("\n[os]", f'edgetpu_runtime = "{runtime}"\n\n[os]')
    path = tmp_path / "rpi4coral.toml"
    path.write_text(text)
    return path


def _env(with_standin: bool, **extra) -> dict:
    path = os.pathsep.join(([str(STANDIN)] if with_standin else []) + [str(Path(sys.executable).parent), "/usr/bin", "/bin"])
    assert (shutil.which(COMPILER, path=path) is not None) == with_standin
    return {**os.environ, "PATH": path, **extra}


def test_profile_runtime_is_checked(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", _env(False)["PATH"])
    with pytest.raises(UserError, match=r"'edgetpu_runtime' must be an Edge TPU runtime version 10..14, found '9'"):
        check_compiler(load_profile(str(_profile(tmp_path, "9"))), False)
    assert check_compiler(load_profile(str(_profile(tmp_path, "13"))), False) == {"path": None, "device_runtime": 13}
    with pytest.raises(UserError, match="--require-edgetpu: edgetpu_compiler is not on PATH") as err:
        check_compiler(load_profile(str(_profile(tmp_path))), True)
    assert "edgetpu-compiler" in err.value.hint and "apt" in err.value.hint
    with pytest.raises(UserError, match="does not list the edgetpu delegate"):
        check_compiler(load_profile("rpi4"), True)


def test_compile_model_with_the_standin(tmp_path, monkeypatch):
    """Our invocation (-s -o DIR -m N model.tflite) and our parsing, against the stand-in."""
    args = tmp_path / "args.json"
    for key, value in _env(True, EDGETPU_STANDIN_ARGS=str(args)).items():
        monkeypatch.setenv(key, value)
    compiler = check_compiler(load_profile(str(_profile(tmp_path, "13"))), True)
    assert compiler["version"] == "16.0.384591198" and compiler["min_runtime_flag"] == 13
    figures = compile_model(b"TFL3-bytes", tmp_path / "work", compiler=compiler)
    argv = json.loads(args.read_text())
    assert argv[:5] == ["-s", "-o", str(tmp_path / "work" / "edgetpu"), "-m", "13"]
    assert argv[5] == str(tmp_path / "work" / "model.tflite")
    assert figures["tflite"] == b"TFL3-bytes"
    assert (figures["ops_edgetpu"], figures["ops_total"], figures["subgraphs"]) == (5, 6, 1)
    assert figures["on_chip_used_bytes"] == 61440 and figures["min_runtime"] == 13
    assert [r["operator"] for r in figures["operations"]] == ["CONV_2D", "MAX_POOL_2D", "FULLY_CONNECTED", "SOFTMAX"]


def test_compile_model_failure_is_a_user_error(tmp_path, monkeypatch):
    for key, value in _env(True, EDGETPU_STANDIN_MODE="fail").items():
        monkeypatch.setenv(key, value)
    with pytest.raises(UserError, match=r"edgetpu_compiler 16.0.384591198 failed on the int8 model \(exit 1\): "
                                        r".*Internal compiler error. Aborting!") as err:
        compile_model(b"x", tmp_path / "work")
    assert "drop edgetpu from the profile's delegates" in err.value.hint


def test_compile_model_without_the_compiler(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", _env(False)["PATH"])
    assert compile_model(b"x", tmp_path / "work") is None


# --- whole builds (digits, ~1 min each) ---------------------------------------------------------

def _build(digits, tmp_path, profile: Path, env: dict, *extra) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "packager", "build", str(digits / "digits.onnx"), "--target", str(profile),
         "--calibration", str(digits / "calibration.npy"), "-o", str(tmp_path / "out"), "--no-wheels", *extra],
        capture_output=True, text=True, cwd=ROOT, stdin=subprocess.DEVNULL, env=env)


@pytest.mark.slow
def test_build_without_the_compiler_ships_the_cpu_model(digits, tmp_path):
    proc = _build(digits, tmp_path, _profile(tmp_path), _env(False))
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [l for l in proc.stderr.splitlines() if l.startswith("Edge TPU")]
    assert len(lines) == 1, lines
    assert lines[0].startswith("Edge TPU: edgetpu_compiler is not on PATH (Coral's package edgetpu-compiler, "
                               "x86-64 Debian/Ubuntu, from Coral's apt repository): the CPU model ships with the "
                               "compatibility report: ")
    bundle = tmp_path / "out" / "digits-rpi4coral"
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["edgetpu"]["compiled"] is None and manifest["edgetpu"]["compiler"] == "not found"
    assert (bundle / "model.tflite").is_file() and not (bundle / "model_edgetpu.tflite").exists()
    assert lines[0].endswith(manifest["edgetpu"]["summary"])


@pytest.mark.slow
def test_require_edgetpu_without_the_compiler_fails_before_converting(digits, tmp_path):
    proc = _build(digits, tmp_path, _profile(tmp_path), _env(False), "--require-edgetpu")
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: --require-edgetpu: edgetpu_compiler is not on PATH"), proc.stderr
    assert "edgetpu-compiler" in proc.stderr and "[1/" not in proc.stderr  # no stage started
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


@pytest.mark.slow
def test_build_with_a_failing_compiler_writes_nothing(digits, tmp_path):
    proc = _build(digits, tmp_path, _profile(tmp_path), _env(True, EDGETPU_STANDIN_MODE="fail"))
    assert proc.returncode == 2, proc.stderr[-2000:]
    error = proc.stderr.strip().splitlines()[-1]
    assert error.startswith("error: edgetpu_compiler 16.0.384591198 failed on the int8 model (exit 1): "), error
    assert "Internal compiler error. Aborting!" in error
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


@pytest.mark.slow
def test_build_with_the_standin_compiler(digits, tmp_path):
    args = tmp_path / "args.json"
    proc = _build(digits, tmp_path, _profile(tmp_path, "13"), _env(True, EDGETPU_STANDIN_ARGS=str(args)),
                  "--require-edgetpu")
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [l for l in proc.stderr.splitlines() if l.startswith("Edge TPU")]
    assert lines == ["Edge TPU: compiled with edgetpu_compiler 16.0.384591198: 5 of 6 ops on the Edge TPU in 1 "
                     "subgraph(s); on-chip 60.00KiB, off-chip 0.00B; needs Edge TPU runtime >= 13"]
    assert json.loads(args.read_text())[3:5] == ["-m", "13"]
    bundle = tmp_path / "out" / "digits-rpi4coral"
    manifest = json.loads((bundle / "manifest.json").read_text())
    compiled = manifest["edgetpu"]["compiled"]
    assert compiled["file"] == "model_edgetpu.tflite" and compiled["min_runtime"] == 13
    assert (compiled["ops_edgetpu"], compiled["ops_total"], compiled["on_chip_remaining"]) == (5, 6, "7.86MiB")
    assert "model_edgetpu.tflite" in manifest["files"]  # sealed with the bundle
    # the stand-in copies its input: the file is the int8 model it was given
    assert (bundle / "model_edgetpu.tflite").read_bytes() == (bundle / "model.tflite").read_bytes()
    from edge_runtime.bundle import open_bundle
    open_bundle(bundle)  # the device's checks (digest, files, manifest validation) pass
    shown = subprocess.run([sys.executable, "-m", "packager", "inspect", str(bundle)], capture_output=True, text=True,
                           cwd=ROOT)
    assert ("compiled by edgetpu_compiler 16.0.384591198: 5 of 6 ops in model_edgetpu.tflite, on-chip 60.00KiB, "
            "off-chip 0.00B, needs runtime >= 13") in shown.stdout


@pytest.mark.slow
def test_fleet_with_an_edgetpu_target_compiles_for_that_target_only(digits, tmp_path):
    """--require-edgetpu in a fleet asks it of the Edge TPU targets; the CPU targets build as ever."""
    alone = _build(digits, tmp_path, "rpi4,rpi5", _env(False), "--require-edgetpu")
    assert alone.returncode == 2 and "[1/" not in alone.stderr
    assert "error: --require-edgetpu, but no target of rpi4,rpi5 lists the edgetpu delegate" in alone.stderr
    proc = _build(digits, tmp_path, f"rpi4,{_profile(tmp_path, '14')}", _env(True), "--require-edgetpu")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert len([l for l in proc.stderr.splitlines() if l.startswith("Edge TPU: compiled with")]) == 1
    assert (tmp_path / "out" / "digits-rpi4coral" / "model_edgetpu.tflite").is_file()
    assert not (tmp_path / "out" / "digits-rpi4" / "model_edgetpu.tflite").exists()
    assert "compiled" not in json.loads((tmp_path / "out" / "digits-rpi4" / "manifest.json").read_text())["edgetpu"]
