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
# predict()/invoke(): one call of each per round (a pair back to back), many rounds: on a shared 2-core host
# noise arrives in bursts, and a short round lets a burst spoil a few ratios rather than all (~25 ms a call)
OVERHEAD_ROUNDS, OVERHEAD_PER_ROUND, OVERHEAD_GOAL = 301, 1, 1.03


from serve_load import keepalive_report, keepalive_vs_predict, load_test, report, soak, soak_report  # noqa: E402  (benchmarks/ is on sys.path when run as a script)


def build(model: Path, calibration: Path, out: Path, *extra) -> Path:
    subprocess.run([sys.executable, "-m", "packager", "build", model, "--target", "rpi4", "--calibration",
                    calibration, "-o", out, *extra], check=True, cwd=ROOT, capture_output=True)
    return out / f"{model.stem}-rpi4"


def alternated(calls: dict, rounds: int, per_round: int, warmup: int = 10) -> dict[str, np.ndarray]:
    """Seconds per call of each callable in each round.

    Every round times each callable for ``per_round`` calls back to back; the
    order rotates from round to round, so machine noise, and whatever one
    callable leaves in the caches for the next, land on all alike. Ratios
    taken round by round (same few hundred milliseconds) are the figures to
    believe on a shared host.
    """
    for call in calls.values():
        for _ in range(warmup):
            call()
    names = list(calls)
    times = {name: np.empty(rounds) for name in names}
    for r in range(rounds):
        k = r % len(names)
        for name in names[k:] + names[:k]:
            call = calls[name]
            start = time.perf_counter()
            for _ in range(per_round):
                call()
            times[name][r] = (time.perf_counter() - start) / per_round
    return times


def interleaved(calls: dict, rounds: int = ROUNDS, per_round: int = PER_ROUND) -> dict[str, float]:
    """Median seconds per call of each callable, timed in alternating rounds (noise lands on all alike)."""
    return {name: float(np.median(t)) for name, t in alternated(calls, rounds, per_round).items()}


def ratio_spread(ratios: np.ndarray) -> dict[str, float]:
    """Median, quartiles and extremes of per-round ratios, and a 95% interval for the median.

    The interval is distribution-free: the order statistics n/2 -+ 0.98 sqrt(n)
    (the binomial count of ratios below the true median).
    """
    q0, q1, q2, q3, q4 = np.percentile(ratios, [0, 25, 50, 75, 100])
    ordered, n = np.sort(ratios), len(ratios)
    half = int(np.ceil(0.98 * np.sqrt(n)))
    low, high = ordered[max(n // 2 - half, 0)], ordered[min((n - 1) // 2 + half, n - 1)]
    return {"median": float(q2), "q1": float(q1), "q3": float(q3), "min": float(q0), "max": float(q4),
            "ci_low": float(low), "ci_high": float(high), "rounds": n}


def describe(sample: dict[str, np.ndarray]) -> str:
    return ", ".join(f"{name} {'x'.join(map(str, a.shape))} {a.dtype}" for name, a in sample.items())


def runner_overhead(bundle: Path, sample: dict[str, np.ndarray], label: str, old_path: bool = False) -> dict:
    """predict(sample) against a bare invoke() of the same interpreter: ratios per round, their median and spread.

    One interpreter, so the same model file, runtime, delegate and threads;
    the bare call runs on the input predict() last wrote. ``sample`` is what
    a caller gives predict(): one call per input path (float ONNX layout,
    or another input format the bundle was built for). ``old_path``: also
    the path predict() took before it wrote into the interpreter's buffers
    (to_tflite, set_tensor, get_tensor, from_tflite; float inputs), checked
    to give the same bytes and timed in the same rounds.
    """
    import edge_runtime
    from edge_runtime.tensors import from_tflite, to_tflite

    model = edge_runtime.load(bundle, threads=THREADS)
    interp = model.engine.interpreter
    calls = {"invoke": interp.invoke, "predict": lambda: model.predict(sample)}
    if old_path:
        def copying():
            outs = model.invoke([to_tflite(sample[s["name"]], s) for s in model.inputs])
            return {s["name"]: from_tflite(y, s) for s, y in zip(model.outputs, outs)}

        new, old = model.predict(sample), copying()
        assert all(new[k].tobytes() == old[k].tobytes() for k in old), "predict() differs from the copying path"
        calls["copying"] = copying
    times = alternated(calls, OVERHEAD_ROUNDS, OVERHEAD_PER_ROUND)
    return {"label": label, "input": describe(sample), "engine": model.engine.summary(),
            "invoke_ms": float(np.median(times["invoke"])) * 1e3,
            "ratios": {name: ratio_spread(t / times["invoke"]) for name, t in times.items() if name != "invoke"}}


def overhead_table(rows: list[dict]) -> str:
    """One line per timed path: median of the per-round ratios, a 95% interval for it, quartiles, extremes, goal."""
    lines = [f"\nrunner overhead: predict() against a bare invoke() of the same interpreter, {OVERHEAD_ROUNDS} rounds "
             f"of {OVERHEAD_PER_ROUND} call{'s' * (OVERHEAD_PER_ROUND > 1)} each, order rotated; ratio per round",
             f"{'path':<30}{'median':>8}{'95% of median':>15}{'IQR':>15}{'min..max':>14}{'invoke ms':>11}"
             f"  goal <= {OVERHEAD_GOAL:.2f}x"]
    for row in rows:
        for name, r in row["ratios"].items():
            what = row["label"] if name == "predict" else f"  {name} path before"
            verdict = "-"
            if name == "predict":
                verdict = "ok" if r["ci_high"] <= OVERHEAD_GOAL else (
                    "OVER GOAL" if r["ci_low"] > OVERHEAD_GOAL else "ok on the median; interval crosses goal"
                    if r["median"] <= OVERHEAD_GOAL else "over on the median; interval crosses goal")
            lines.append(f"{what:<30}{r['median']:7.3f}x{r['ci_low']:9.3f}-{r['ci_high']:.3f}"
                         f"{r['q1']:9.3f}-{r['q3']:.3f}{r['min']:8.3f}-{r['max']:.3f}{row['invoke_ms']:11.2f}  {verdict}")
        lines.append(f"  ({row['input']}; {row['engine']})")
    return "\n".join(lines)


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


def overhead_only(bundle: str, inputs: str, label: str = "predict/invoke") -> int:
    """`bench.py overhead BUNDLE INPUTS.npy|.npz [LABEL]`: only the runner-overhead row, on a built bundle."""
    import edge_runtime
    from edge_runtime.tensors import feeds_from_numpy

    model = edge_runtime.load(bundle, threads=THREADS)
    print(overhead_table([runner_overhead(Path(bundle), feeds_from_numpy(inputs, model.inputs, inputs), label)]))
    return 0


def _digits(tmp: Path) -> tuple[tuple, dict, dict]:
    """The digits example: its side-by-side row, a serve load test and a soak."""
    sys.path.insert(0, str(ROOT / "examples" / "digits"))
    import train

    data = train.main(str(tmp / "digits"))
    bundle = build(data / "digits.onnx", data / "calibration.npy", tmp / "dist")
    row = ("digits CNN", side_by_side(bundle, data / "digits.onnx", {"image": np.load(data / "test_x.npy")[:1]}))
    return row, load_test(bundle, clients=8, seconds=30), soak(bundle, seconds=120)


def _ppocr(tmp: Path) -> tuple[list, list]:
    """PP-OCR's classifier: its side-by-side row and keep-alive serve figures (none when not fetched)."""
    from tests.fixtures.text_lines import to_input, write_lines

    ppocr = Path(os.environ.get("EDGEPACK_PPOCR_CLS", ""))
    if not ppocr.is_file():
        print("PP-OCR classifier not fetched (make fixtures); its row is left out", file=sys.stderr)
        return [], []
    write_lines(tmp / "lines", 200, seed=1)
    bundle = build(ppocr, tmp / "lines", tmp / "dist", "--input-shape", "x=1,3,48,192", "--mean", "0.5", "--std", "0.5")
    x = to_input(tmp / "lines")[:1]
    return ([("PP-OCR cls (MobileNetV3)", side_by_side(bundle, ppocr, {"x": x}))],
            [keepalive_vs_predict(bundle, binary=binary) for binary in (True, False)])


def _detector_overheads(tmp: Path) -> list:
    """The runner's overhead on the PP-OCRv4 detector, float path and camera path (none when not fetched)."""
    from PIL import Image

    from tests.fixtures.corpus import MODELS_DIR, write_scenes

    det = MODELS_DIR / "ch_PP-OCRv4_det_infer.onnx"
    if not det.is_file():
        print("PP-OCRv4 detector not fetched (make corpus-models); the runner overhead is left out", file=sys.stderr)
        return []
    write_scenes(tmp / "scenes", 64, 320, seed=1)
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    options = ("--input-shape", "x=1,3,320,320", "--precision", "int8", "--mean", ",".join(map(str, mean)),
               "--std", ",".join(map(str, std)), "--accept-low-fidelity", "--no-wheels")
    bundle = build(det, tmp / "scenes", tmp / "dist", *options)
    # one scene, as the camera gives it (uint8 320x320x3) and as the float path takes it (1, 3, 320, 320)
    frame = np.asarray(Image.open(sorted((tmp / "scenes").glob("*.png"))[0]).convert("RGB"))
    x = ((frame / 255.0 - np.array(mean)) / np.array(std)).astype(np.float32).transpose(2, 0, 1)[None]
    overheads = [runner_overhead(bundle, {"x": x}, "predict/invoke (float path)", old_path=True)]
    bundle = build(det, tmp / "scenes", tmp / "camera", *options, "--input-format", "image-uint8")
    overheads.append(runner_overhead(bundle, {"x": frame}, "predict/invoke (camera path, image-uint8)"))
    return overheads


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        digits_row, load, soaked = _digits(tmp)
        ppocr_rows, keepalive = _ppocr(tmp)
        overheads = _detector_overheads(tmp)
    rows = [digits_row, *ppocr_rows]
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
    if overheads:
        print(f"{overhead_table(overheads)}\n  (PP-OCRv4 detector, int8 bundle, {THREADS} threads)")
    return 0


if __name__ == "__main__":
    sys.exit(overhead_only(*sys.argv[2:]) if sys.argv[1:2] == ["overhead"] else main())
