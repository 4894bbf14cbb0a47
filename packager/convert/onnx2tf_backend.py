"""The onnx2tf backend, with its three known traps handled.

1. For models whose inputs are all 4-D with 3 channels, onnx2tf checks its
   output on a sample-image file it downloads from GitHub unless the file is
   in its working folder. We write that file ourselves, from the user's own
   calibration samples, so the check runs on real data and nothing is
   fetched (the worker also refuses any network connection).
2. Its shape overwrite and simplifier shell out to the ``onnxsim`` CLI; the
   child gets this Python's bin folder first on PATH so the pinned onnxsim
   is the one found, even when the venv is not activated.
3. Node names that are not valid TensorFlow scope names (empty ones, or
   ``Softmax@0`` as sng4onnx writes them) abort it; they are renamed first.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np


from .errors import ConversionFailed

# What TensorFlow accepts as a name scope.
_VALID_SCOPE = re.compile(r"^[A-Za-z0-9.][A-Za-z0-9_.\-/>]*$")
SAMPLE_FILE = "calibration_image_sample_data_20x128x128x3_float32.npy"


def sanitize_node_names(proto) -> int:
    """Give every node a unique, TF-valid name; returns how many changed."""
    used: set[str] = set()
    changed = 0
    for i, node in enumerate(proto.graph.node):
        name = node.name
        if not _VALID_SCOPE.match(name) or name in used:
            base = re.sub(r"[^A-Za-z0-9_.\-]", "_", name).strip("_") or node.op_type
            if not _VALID_SCOPE.match(base):
                base = f"n_{base}"
            name = f"{base}_{i}"
            while name in used:
                name += "_"
            node.name = name
            changed += 1
        used.add(name)
    return changed


def write_sample_images(samples: dict[str, np.ndarray], workdir: Path) -> bool:
    """Put the user's image samples where onnx2tf looks for its test file.

    Returns True when the model has a 4-D, 3-channel input (the case where
    onnx2tf would otherwise download).
    """
    for array in samples.values():
        if array.ndim == 5 and array.shape[2] == 3:  # (N, 1, 3, H, W): NCHW
            nhwc = array[:20, 0].transpose(0, 2, 3, 1)
        elif array.ndim == 5 and array.shape[-1] == 3:  # (N, 1, H, W, 3): already NHWC
            nhwc = array[:20, 0]
        else:
            continue
        np.save(workdir / SAMPLE_FILE, np.ascontiguousarray(nhwc, dtype=np.float32))
        return True
    return False


def _layer_detail(lines: list[str], at: int) -> str:
    """TensorFlow's own message under Keras' "Exception encountered when calling layer" line ``at``, short:
    the text before its node dump, and the input shapes."""
    following = lines[at + 1] if at + 1 < len(lines) else ""
    if "when calling layer" not in lines[at] or not following or following.startswith("Call arguments"):
        return ""
    message, _, node = following.partition(" for '{{node")
    shapes = re.search(r"with input shapes: (.+?)\.?$", node)
    return f": {message.strip()}" + (f" (input shapes {shapes.group(1)})" if shapes else "")


def _failure(log: Path, proto, returncode: int) -> tuple[str, list[str]]:
    """One line for why onnx2tf failed, and the ONNX ops it was converting."""
    text = log.read_text(encoding="utf-8", errors="replace")
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    errors = [k for k, ln in enumerate(lines) if re.match(r"^[A-Za-z_.]*(Error|Exception)\b", ln)]
    detail = _layer_detail(lines, errors[-1]) if errors else ""
    reason = ((lines[errors[-1]].rstrip(".") if detail else lines[errors[-1]]) + detail if errors
              else (lines[-1] if lines else f"exit code {returncode}"))
    ops = []
    for op_type in re.findall(r"No module named 'onnx2tf\.ops\.(\w+)'", text):  # no handler for this op
        ops.extend(f"{op_type} ({n.name})" for n in proto.graph.node if n.op_type == op_type)
    by_name = {n.name: n.op_type for n in proto.graph.node}
    for name in re.findall(r"onnx_op_name: (\S+)", text):
        name = re.sub(r"^wa/", "/", name)
        ops.append(f"{by_name.get(name, '?')} ({name})")
    return reason[:300], list(dict.fromkeys(ops))


def _wait(proc: subprocess.Popen, budget: float | None, progress, every: float = 60.0) -> int:
    """The worker's exit code; raises TimeoutExpired past ``budget``; ``progress(seconds)`` every minute."""
    start = time.monotonic()
    while True:
        left = None if budget is None else budget - (time.monotonic() - start)
        if left is not None and left <= 0:
            raise subprocess.TimeoutExpired(proc.args, budget)
        try:
            return proc.wait(timeout=every if left is None else min(every, left))
        except subprocess.TimeoutExpired:
            if progress is not None and (budget is None or time.monotonic() - start < budget):
                progress(time.monotonic() - start)


def convert(onnx_path: Path, workdir: Path, samples: dict[str, np.ndarray], verbose: bool,
            options: dict | None = None, budget: float | None = None, progress=None) -> Path:
    """onnx2tf: shape-fixed ONNX -> float SavedModel folder.

    Args:
        options: extra ``onnx2tf.convert`` keyword arguments (the strategy's).
        budget: seconds before the attempt is killed (None: no limit).
        progress: called with the seconds elapsed, once a minute while onnx2tf works.

    Raises:
        ConversionFailed: onnx2tf raised, or ran past its budget.
    """
    import onnx

    proto = onnx.load(str(onnx_path))
    sanitize_node_names(proto)
    workdir.mkdir(parents=True, exist_ok=True)
    model = workdir / "onnx2tf_input.onnx"
    onnx.save(proto, str(model))
    write_sample_images(samples, workdir)

    out_dir = workdir / "saved_model"
    log = workdir / "onnx2tf.log"
    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    # The worker is importable from wherever this package is.
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[2]) + os.pathsep + env.get("PYTHONPATH", "")
    cmd = [sys.executable, "-m", "packager.convert.onnx2tf_worker", str(model), str(out_dir), json.dumps(options or {})]
    if verbose:
        cmd.append("--verbose")
    with open(log, "w", encoding="utf-8") as out:
        # A session of its own, so a timeout kills onnx2tf and every child it started.
        proc = subprocess.Popen(
            cmd, cwd=workdir, env=env, stdin=subprocess.DEVNULL,
            stdout=None if verbose else out, stderr=None if verbose else subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            returncode = _wait(proc, budget, progress)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise ConversionFailed(f"killed after its time budget of {budget:g} s", []) from None
        except BaseException:  # Ctrl-C: never leave a converter running
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise
    if returncode != 0 or not (out_dir / "saved_model.pb").is_file():
        reason, ops = _failure(log, proto, returncode) if not verbose else (f"exit code {returncode}", [])
        raise ConversionFailed(reason, ops)
    return out_dir
