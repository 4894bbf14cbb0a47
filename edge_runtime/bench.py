"""`edge-run bench`: the interpreter's latency, throughput and the process's peak memory."""

from __future__ import annotations

import resource
import time

import numpy as np


def peak_rss_mb() -> float:
    """Peak resident memory of this process, in MB.

    VmHWM belongs to this process image; ru_maxrss survives exec and would
    report a bigger parent's peak (e.g. a Python with TensorFlow that
    started us).
    """
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def benchmark(model, runs: int, warmup: int) -> dict:
    """Latency of the interpreter on quantized zero-point-ish random inputs."""
    rng = np.random.default_rng(0)
    tensors = []
    for spec in model.inputs:
        dtype = np.dtype(spec["tflite_dtype"])
        if dtype.kind in "iu":
            info = np.iinfo(dtype)
            lo, hi = (max(info.min, -128), min(info.max, 127)) if np.dtype(spec["dtype"]).kind == "f" else (0, 1)
            tensors.append(rng.integers(lo, hi + 1, spec["tflite_shape"]).astype(dtype))
        else:
            tensors.append(rng.standard_normal(spec["tflite_shape"]).astype(dtype))
    for _ in range(warmup):
        model.invoke(tensors)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        model.invoke(tensors)
        times.append((time.perf_counter() - start) * 1000.0)
    arr = np.array(times)
    engine = model.engine
    return {
        "model": model.name,
        "runtime": f"{engine.runtime} {engine.runtime_version}",
        **engine.report(),
        "threads": engine.threads,
        "runs": runs,
        "warmup": warmup,
        "latency_ms": {
            "min": float(arr.min()),
            "median": float(np.median(arr)),
            "p90": float(np.percentile(arr, 90)),
            "max": float(arr.max()),
        },
        "throughput_per_s": float(1000.0 / np.median(arr)),
        "peak_rss_mb": peak_rss_mb(),
    }
