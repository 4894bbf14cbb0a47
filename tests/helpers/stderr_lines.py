"""What edgepack's processes may print on stderr, and what TensorFlow, absl and TFLite printed there before
edge_runtime.native_logs."""

from __future__ import annotations

import re

# Exactly what `python -m packager build` printed on the digits model (the ladder's process importing
# TensorFlow 2.21, then the bundle's health sample on ai-edge-litert 2.3.0), what the example's training printed,
# and what every `edge-run run|bench|info` printed, on a 2-core x86-64 host with no GPU.
NATIVE_LINES_BEFORE = (
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
    "I0000 00:00:1796621031.925833    1096 port.cc:153] oneDNN custom operations are on. You may see slightly "
    "different numerical results due to floating-point round-off errors from different computation orders. To "
    "turn them off, set the environment variable `TF_ENABLE_ONEDNN_OPTS=0`.",
    "I0000 00:00:1796621031.927413    1096 cudart_stub.cc:31] Could not find cuda drivers on your machine, GPU will "
    "not be used.",
    "I0000 00:00:1796621032.054980    1096 cpu_feature_guard.cc:227] This TensorFlow binary is optimized to use "
    "available CPU instructions in performance-critical operations.",
    "To enable the following instructions: AVX2 AVX512F AVX512_VNNI AVX512_BF16 FMA, in other operations, rebuild "
    "TensorFlow with the appropriate compiler flags.",
    "E0000 00:00:1796620951.762670   28739 cuda_platform.cc:52] failed call to cuInit: INTERNAL: CUDA error: Failed "
    "call to cuInit: UNKNOWN ERROR (303)",
    "INFO: Created TensorFlow Lite XNNPACK delegate for CPU.",
)
# The parts of those lines that do not change from run to run: none may show again.
NATIVE_MARKS = ("absl::InitializeLog", "oneDNN custom operations", "Could not find cuda drivers",
                "cpu_feature_guard", "To enable the following instructions", "cuInit", "XNNPACK delegate for CPU")

# Ours: progress ([n/9] ...), indented details, warnings and errors, the fidelity table's title and the Edge TPU
# target's line (packager.edgetpu.stage).
OURS = re.compile(r"\[\d+/\d+\] |\s|warning: |error: |\S.* vs float ONNX on \d+ held-out samples:$|Edge TPU: ")


def not_ours(stderr: str) -> list[str]:
    """The lines of stderr that edgepack did not write, and any line that carries a native library's mark."""
    return [line for line in stderr.splitlines()
            if line and (not OURS.match(line) or any(mark in line for mark in NATIVE_MARKS))]
