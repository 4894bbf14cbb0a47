"""`make bench`: the performance table, as ratios measured side by side.

For each real model (the digits example and the PP-OCR direction classifier)
the bundle (edge_runtime, XNNPACK; at the precision its build chose) and the float ONNX model
(onnxruntime) run interleaved in one process on the same inputs and thread
count, so machine noise hits both alike. Host figures, not device timings.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
ROUNDS, PER_ROUND, THREADS = 20, 20, 2


from serve_load import keepalive_report, keepalive_vs_predict, load_test, report, soak, soak_report  # noqa: E402  (benchmarks/ is on sys.path when run as a script)


def build(model: Path, calibration: Path, out: Path, *extra) -> Path:
    subprocess.run([sys.executable, "-m", "packager", "build", model, "--target", "rpi4", "--calibration",
                    calibration, "-o", out, *extra], check=True, cwd=ROOT, capture_output=True)
    return out / f"{model.stem}-rpi4"


def side_by_side(bundle: Path, onnx_path: Path, sample: dict[str, np.ndarray]) -> dict:
    import onnxruntime as ort

    import edge_runtime

    model = edge_runtime.load(bundle, threads=THREADS)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = THREADS
    session = ort.InferenceSession(str(onnx_path), opts, providers=["CPUExecutionProvider"])
    from edge_runtime.tensors import to_tflite

    q = [to_tflite(sample[s["name"]], s) for s in model.inputs]
    feeds = dict(sample)
    for _ in range(10):
        model.invoke(q)
        session.run(None, feeds)
    t_int8, t_float = [], []
    for _ in range(ROUNDS):  # interleaved rounds: noise lands on both
        start = time.perf_counter()
        for _ in range(PER_ROUND):
            model.invoke(q)
        t_int8.append((time.perf_counter() - start) / PER_ROUND)
        start = time.perf_counter()
        for _ in range(PER_ROUND):
            session.run(None, feeds)
        t_float.append((time.perf_counter() - start) / PER_ROUND)
    i8, f32 = np.median(t_int8) * 1e3, np.median(t_float) * 1e3
    return {
        "precision": model.manifest.get("precision", {}).get("chosen", "int8"),
        "int8_ms": i8,
        "float_ms": f32,
        "speedup": f32 / i8,
        "size_ratio": onnx_path.stat().st_size / (bundle / "model.tflite").stat().st_size,
    }


def main() -> int:
    from tests.fixtures.text_lines import to_input, write_lines

    sys.path.insert(0, str(ROOT / "examples" / "digits"))
    import train

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data = train.main(str(tmp / "digits"))
        bundle = build(data / "digits.onnx", data / "calibration.npy", tmp / "dist")
        x = np.load(data / "test_x.npy")[:1]
        rows.append(("digits CNN", side_by_side(bundle, data / "digits.onnx", {"image": x})))
        load = load_test(bundle, clients=8, seconds=30)
        soaked = soak(bundle, seconds=120)
        keepalive = []

        ppocr = Path(os.environ.get("EDGEPACK_PPOCR_CLS", ""))
        if ppocr.is_file():
            write_lines(tmp / "lines", 200, seed=1)
            bundle = build(ppocr, tmp / "lines", tmp / "dist", "--input-shape", "x=1,3,48,192",
                           "--mean", "0.5", "--std", "0.5")
            x = to_input(tmp / "lines")[:1]
            rows.append(("PP-OCR cls (MobileNetV3)", side_by_side(bundle, ppocr, {"x": x})))
            keepalive = [keepalive_vs_predict(bundle, binary=binary) for binary in (True, False)]
        else:
            print("PP-OCR classifier not fetched (make fixtures); its row is left out", file=sys.stderr)

    print(f"\nhost, {THREADS} threads, median of {ROUNDS} interleaved rounds of {PER_ROUND} "
          "(ratios are the figures to compare; absolute times are this machine's)")
    print(f"{'model':<26}{'bundle':>8}{'float ORT ms':>13}{'bundle ms':>10}{'speed-up':>10}{'size ratio':>12}")
    for name, r in rows:
        print(f"{name:<26}{r['precision']:>8}{r['float_ms']:13.3f}{r['int8_ms']:10.3f}{r['speedup']:9.2f}x"
              f"{r['size_ratio']:11.2f}x")
    print()
    print(report(load))
    print(soak_report(soaked))
    for r in keepalive:
        print("PP-OCR cls " + keepalive_report(r))
    return 0


if __name__ == "__main__":
    sys.exit(main())
