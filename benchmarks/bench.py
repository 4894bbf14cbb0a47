"""`make bench`: the performance table, as ratios measured side by side.

For each real model (the digits example and the PP-OCR direction classifier)
the bundle (edge_runtime, XNNPACK; at the precision its build chose) and the float ONNX model
(onnxruntime) run interleaved in one process on the same inputs and thread
count, so machine noise hits both alike. Host figures, not device timings.
The runner's own cost: predict() against a bare invoke() of the same
interpreter, on the PP-OCRv4 detector (int8, 320x320), alternated the same way.
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


def interleaved(calls: dict, rounds: int = ROUNDS, per_round: int = PER_ROUND) -> dict[str, float]:
    """Median seconds per call of each callable, timed in alternating rounds (noise lands on all alike)."""
    for call in calls.values():
        for _ in range(10):
            call()
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(rounds):
        for name, call in calls.items():
            start = time.perf_counter()
            for _ in range(per_round):
                call()
            times[name].append((time.perf_counter() - start) / per_round)
    return {name: float(np.median(t)) for name, t in times.items()}


def runner_overhead(bundle: Path, sample: dict[str, np.ndarray]) -> dict:
    """predict() (ONNX-layout float in, float out) against a bare invoke() of the same interpreter.

    One interpreter, so the same model file, runtime, delegate and threads;
    the bare call runs on an input set once. Also the path predict() took
    before it wrote into the interpreter's buffers (to_tflite, set_tensor,
    get_tensor, from_tflite), which must give the same bytes.
    """
    import edge_runtime
    from edge_runtime.tensors import from_tflite, to_tflite

    model = edge_runtime.load(bundle, threads=THREADS)
    interp = model.engine.interpreter

    def copying():
        outs = model.invoke([to_tflite(sample[s["name"]], s) for s in model.inputs])
        return {s["name"]: from_tflite(y, s) for s, y in zip(model.outputs, outs)}

    new, old = model.predict(sample), copying()
    assert all(new[k].tobytes() == old[k].tobytes() for k in old), "predict() differs from the copying path"
    times = interleaved({"invoke": interp.invoke, "predict": lambda: model.predict(sample), "copying": copying})
    return {"engine": model.engine.summary(), "invoke_ms": times["invoke"] * 1e3,
            "predict": times["predict"] / times["invoke"], "copying": times["copying"] / times["invoke"]}


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
    times = interleaved({"int8": lambda: model.invoke(q), "float": lambda: session.run(None, feeds)})
    i8, f32 = times["int8"] * 1e3, times["float"] * 1e3
    return {
        "precision": model.manifest.get("precision", {}).get("chosen", "int8"),
        "int8_ms": i8,
        "float_ms": f32,
        "speedup": f32 / i8,
        "size_ratio": onnx_path.stat().st_size / (bundle / "model.tflite").stat().st_size,
    }


def main() -> int:
    from tests.fixtures.corpus import MODELS_DIR, text_scenes, write_scenes
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

        overhead = None
        det = MODELS_DIR / "ch_PP-OCRv4_det_infer.onnx"
        if det.is_file():
            write_scenes(tmp / "scenes", 64, 320, seed=1)
            bundle = build(det, tmp / "scenes", tmp / "dist", "--input-shape", "x=1,3,320,320", "--precision", "int8",
                           "--mean", "0.485,0.456,0.406", "--std", "0.229,0.224,0.225", "--accept-low-fidelity",
                           "--no-wheels")
            overhead = runner_overhead(bundle, {"x": text_scenes(320)(det, 1, 2)["x"][0]})  # one (1, 3, 320, 320)
        else:
            print("PP-OCRv4 detector not fetched (make corpus-models); the runner overhead is left out",
                  file=sys.stderr)

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
    if overhead:
        print(f"\nrunner overhead, PP-OCRv4 det int8 1x3x320x320 ({overhead['engine']}; bare invoke "
              f"{overhead['invoke_ms']:.2f} ms): predict/invoke {overhead['predict']:.3f}x; the copying path "
              f"predict() took before {overhead['copying']:.3f}x (same bytes out; median of {ROUNDS} rounds "
              f"of {PER_ROUND}, alternated)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
