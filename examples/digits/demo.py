"""`make demo`: train the example, build it for a Raspberry Pi 4, run the
bundle with edge-run, and compare float and int8 accuracy side by side.

    python examples/digits/demo.py [--target rpi4] [--work build/demo]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent


START = time.monotonic()


def step(text: str) -> None:
    print(f"\n== {text} (at {time.monotonic() - START:.0f} s)", flush=True)


def run(*cmd) -> None:
    cmd = [str(c) for c in cmd]
    print("$ " + " ".join(cmd).replace(sys.executable, "python"), flush=True)
    subprocess.run(cmd, check=True, cwd=ROOT)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--target", default="rpi4")
    parser.add_argument("--work", default=str(ROOT / "build" / "demo"))
    args = parser.parse_args()
    work = Path(args.work)
    data = work / "digits"

    step("1. train a small CNN on scikit-learn's digits, export ONNX")
    sys.path.insert(0, str(HERE))
    import train

    train.main(str(data))

    step(f"2. edgepack build for --target {args.target}")
    dist = work / "dist"
    run(sys.executable, "-m", "packager", "build", data / "digits.onnx", "--target", args.target,
        "--calibration", data / "calibration.npy", "-o", dist)
    bundle = dist / f"digits-{args.target}"

    step("3. edge-run the bundle on the held-out test split")
    run(sys.executable, "-m", "edge_runtime", "run", bundle.with_name(bundle.name + ".tar.gz"),
        "--input", data / "test_x.npy", "--output", work / "int8_scores.npz")
    run(sys.executable, "-m", "edge_runtime", "bench", bundle, "--runs", "200")

    step("4. accuracy on the held-out split: float ONNX vs int8 bundle")
    import onnxruntime as ort

    test_x, test_y = np.load(data / "test_x.npy"), np.load(data / "test_y.npy")
    session = ort.InferenceSession(str(data / "digits.onnx"), providers=["CPUExecutionProvider"])
    float_pred = session.run(None, {"image": test_x})[0].argmax(1)
    with np.load(work / "int8_scores.npz") as out:
        int8_pred = out["scores"].argmax(1)
    float_acc = (float_pred == test_y).mean() * 100
    int8_acc = (int8_pred == test_y).mean() * 100
    onnx_kb = (data / "digits.onnx").stat().st_size / 1024
    tflite_kb = (bundle / "model.tflite").stat().st_size / 1024
    print(f"{'':24}{'float ONNX':>12}{'int8 bundle':>14}")
    print(f"{'top-1 accuracy':24}{float_acc:11.2f}%{int8_acc:13.2f}%")
    print(f"{'model size':24}{onnx_kb:9.1f} KB{tflite_kb:11.1f} KB")
    print(f"{'test images':24}{len(test_y):12d}{len(test_y):14d}")
    print(f"{'predictions agreeing':24}{(float_pred == int8_pred).mean() * 100:25.2f}%")

    step("5. edgepack evaluate: accuracy and per-class precision/recall/F1, float ONNX vs bundle")
    run(sys.executable, "-m", "packager", "evaluate", bundle, "--data", data / "test_x.npy",
        "--labels", data / "test_y.npy", "--model", data / "digits.onnx")
    print(f"\nbundle: {bundle}  (copy {bundle.name}.tar.gz to the device, then: ./edge-run run . --input x.npy)")
    print(f"demo done in {time.monotonic() - START:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
