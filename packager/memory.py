"""The run check: does the target's runtime load the model, and does the run fit the memory budget?

A Pi Zero 2 W has 512 MB for the OS, the GPU's share and the application:
a model that needs more is killed by the OOM killer on the device, long
after the build said it was fine. So the build measures it: a fresh Python
process imports the runner (its server too), loads the TFLite model the way
the runner does (the same runtime, the profile's thread count, XNNPACK),
runs one inference, and reports its peak resident set (``VmHWM``: the
high-water mark the kernel keeps). The interpreter's arena, the weights,
numpy, the HTTP server's modules and the runtime's own libraries are all in
that figure. (Under QEMU user mode the figure would be the emulator's own,
translation buffers included: 120 MB for a run the host puts at 51 MB.)

Measured on the host with the target's own runtime release, in its x86-64
build (packager.runtimes): the aarch64 build resolves the same ops and maps
the same arena and weights; its libraries differ by a few MB.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from edge_runtime.errors import UserError

# Above this share of the budget the build warns: the device has other tenants.
WARN_SHARE = 0.8

# Runs in a fresh interpreter: only the runner's own interpreter module, so the
# figure is what the device's runner process holds, not what the build holds.
_PROBE = r"""
import json, sys
import numpy as np
sys.path.insert(0, sys.argv[1])
from edge_runtime.native_logs import quiet_process
quiet_process()  # before the runtime loads: the failure message below quotes the last lines of stderr
from edge_runtime.errors import UserError
from edge_runtime.interpreter import make_engine
import edge_runtime.cli  # what `edge-run run|bench` holds besides the model
try:  # and `edge-run serve`: the device has uvicorn; a host venv of another runtime may not
    import edge_runtime.server, uvicorn, h11  # noqa: E401
except ImportError:
    pass
try:
    engine = make_engine(sys.argv[2], int(sys.argv[3]), "xnnpack")
except UserError as exc:
    print(json.dumps({"cannot_load": exc.args[0].replace(sys.argv[2], "the model")}))
    sys.exit(3)
it = engine.interpreter
for d in it.get_input_details():
    it.set_tensor(d["index"], np.zeros(d["shape"], dtype=d["dtype"]))
it.invoke()
for d in it.get_output_details():
    it.get_tensor(d["index"])
status = open("/proc/self/status").read()
peak = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:"))
print(json.dumps({"peak_rss_kb": peak, "runtime": engine.runtime, "runtime_version": engine.runtime_version}))
"""


def measure_peak_rss(model: Path, runner_root: Path, threads: int, python: str = sys.executable) -> dict:
    """Peak RSS of a fresh process that loads ``model`` and runs it once.

    Args:
        model: the .tflite file.
        runner_root: the folder holding the ``edge_runtime`` package to use.
        threads: the interpreter's threads (the profile's default).
        python: a Python whose TFLite runtime is the target's (packager.runtimes).

    Returns:
        ``{"peak_rss_mb", "runtime", "threads", "measured"}``, or
        ``{"cannot_load": why}`` when that runtime refuses the model.
    """
    proc = subprocess.run(
        [python, "-I", "-c", _PROBE, str(runner_root), str(model), str(threads)],
        capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=600,
    )
    if proc.returncode == 3 and proc.stdout.strip():
        return json.loads(proc.stdout.strip().splitlines()[-1])
    if proc.returncode != 0:
        tail = " ".join(proc.stderr.strip().splitlines()[-3:])
        raise UserError(f"measuring the memory of a run of {model.name} failed: {tail}",
                        "run the build with -v, and report this bug with the model")
    found = json.loads(proc.stdout.strip().splitlines()[-1])
    return {
        "peak_rss_mb": round(found["peak_rss_kb"] / 1024, 1),
        "runtime": f"{found['runtime']} {found['runtime_version']}",
        "threads": threads,
        "measured": "on the build host: a fresh process imports the runner and its server, loads the model and "
                    "runs it once (VmHWM)",
    }


def check_budget(measured: dict, profile) -> tuple[dict, str | None]:
    """The manifest's ``memory`` section for a target, and a warning line or None.

    Raises:
        UserError: the target's runtime cannot load the model, or the run
            needs more than the profile's ``memory_budget_mb``.
    """
    if "cannot_load" in measured:
        rt = profile.runtime
        raise UserError(
            f"target {profile.name}: its runtime, {rt['package']} {rt['version']}, cannot load this model "
            f"(checked on this host with that release): {measured['cannot_load']}",
            "use a profile with a newer runtime (ai-edge-litert 2.3.0 loads what this build makes), "
            "or drop this target",
        )
    peak, budget = measured["peak_rss_mb"], profile.memory_budget_mb
    section = {**measured, "budget_mb": budget, "memory_mb": profile.memory_mb,
               "share_of_budget": round(peak / budget, 3)}
    if peak > budget:
        raise UserError(
            f"target {profile.name}: a run of this model needs {peak:.0f} MB (peak RSS, runtime and model), "
            f"over the profile's budget of {budget} MB of its {profile.memory_mb} MB",
            "fix smaller input shapes (--input-shape) or a smaller model; or, if your device has more free "
            "memory, raise memory_budget_mb in a copy of the profile and pass its path to --target",
        )
    if peak > WARN_SHARE * budget:
        return section, (f"target {profile.name}: a run needs {peak:.0f} MB of its {budget} MB budget "
                         f"({100 * peak / budget:.0f}%): little is left for anything else on the device")
    return section, None
