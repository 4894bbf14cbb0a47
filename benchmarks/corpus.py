"""`make corpus`: build every corpus model and print one table.

Per model: graph preparation, the conversion strategy that won, the float
check, the precision ladder's chosen step with fidelity before (full int8,
min/max) and after (the bundle through `edge-run run` on new samples), top-1
where the output is class scores, ops left float, size, host latency against
full int8, and build time. Host figures.
"""

from __future__ import annotations

import sys
import tempfile
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.fixtures.corpus import CORPUS  # noqa: E402
from tests.fixtures.corpus_run import build_and_compare  # noqa: E402


TASKS = (("top1", "top-1", ".1%"), ("exact_match", "strings", ".1%"), ("detection_f1", "det F1", ".3f"),
         ("f1", "F1", ".3f"))


def task(step: dict) -> str:
    """A step's task figure (the first the bar judged), else its worst cosine."""
    for key, label, spec in TASKS:
        if step.get(key) is not None:
            return f"{label} {format(step[key], spec)}"
    return "-" if step.get("cosine") is None else f"cos {step['cosine']:.4f}"


def kinds(manifest: dict) -> str:
    return ",".join(sorted({o["kind"]["kind"] for o in manifest["outputs"] if isinstance(o.get("kind"), dict)}))


def row(result) -> str:
    m = result.manifest
    prep = m["preparation"]
    float_cos = min(m["float_conversion_cosine"].values())
    steps = m["precision"]["steps"]
    first, chosen = steps[0], next(s for s in steps if s["step"] == m["precision"]["step"])
    fresh = result.fresh_task()
    return (f"{result.entry.name:<18} {prep['nodes_before']:>4}->{prep['nodes_after']:<4} "
            f"{m['converter']['strategy']:<20} {float_cos:>8.5f} {kinds(m)[:20]:<20} {chosen['step'][:26]:<26} "
            f"{task(first):>14} {task(chosen):>14} {fresh:>14} {chosen.get('float_compute_ops', 0):>5} "
            f"{chosen['xnnpack_partitions']:>4}/{result.float_partitions():<4} "
            f"{(result.bundle / 'model.tflite').stat().st_size / 1024:>7.0f} {len(steps):>5} "
            f"{result.build_seconds:>7.1f} {cost(result):>6.1f}x")


def cost(result) -> float:
    """The build's time over its full-int8 build's, both from this one run: the build less the steps after
    the first (what the same build takes when full int8 with min/max holds the bar)."""
    after = sum(s["seconds"] for s in result.manifest["precision"]["steps"][1:])
    return result.build_seconds / max(result.build_seconds - after, 1e-9)


def ladder(result) -> str:
    def fig(value, spec):
        return "-" if value is None else format(value, spec)

    rows = [f"  {result.entry.name}: {result.manifest['precision']['why']}"]
    reference = result.manifest["precision"].get("float32_reference") or {}
    if reference.get("latency_ms") is not None:
        rows.append(f"     {'(float32 reference, timed first)':<34} {'':>14} {'':>10} {'':>9} {'':>9} "
                    f"{reference['latency_ms']:>8.3f} ms part {reference['partitions']:>2}")
    for s in result.manifest["precision"]["steps"]:
        chosen = "*" if s["step"] == result.manifest["precision"]["step"] else " "
        verdict = ("passed over: " + s["passed_over"]) if s.get("passed_over") else (
            "holds" if s["meets_bar"] else "below")
        rows.append(f"   {chosen} {s['step'][:34]:<34} {task(s):>14} cos {fig(s['cosine'], '.4f')} "
                    f"float {s.get('float_compute_ops', 0):>3} {s['size'] / 1024:>6.0f} KB "
                    f"{s['latency_ms']:>8.3f} ms part {s['xnnpack_partitions']:>2} {s['seconds']:>5.1f} s {verdict}")
    return "\n".join(rows)


def main(names: list[str]) -> int:
    header = (f"{'model':<18} {'nodes':>10} {'strategy':<20} {'float cos':>8} {'output kinds':<20} "
              f"{'chosen step':<26} {'int8 min/max':>14} {'chosen':>14} {'new samples':>14} {'float':>5} "
              f"{'parts i/f':>9} {'size KB':>7} {'steps':>5} {'build s':>7} {'x int8':>7}")
    lines, ladders, failed = [header], [], 0
    with tempfile.TemporaryDirectory(prefix="edgepack-corpus-") as tmp:
        for entry in CORPUS:
            if names and entry.name not in names:
                continue
            print(f"building {entry.name} ...", file=sys.stderr, flush=True)
            try:
                result = build_and_compare(entry, Path(tmp) / entry.name, ROOT)
            except Exception:
                failed += 1
                lines.append(f"{entry.name:<18} FAILED: {traceback.format_exc().strip().splitlines()[-1][:100]}")
                print(traceback.format_exc(), file=sys.stderr)
                continue
            lines.append(row(result))
            ladders.append("\n".join([ladder(result)] + [f"     {line}" for line in result.regions()]))
            for change in result.manifest["preparation"]["changes"]:
                print(f"  {entry.name}: {change}", file=sys.stderr)
    print("\n".join(lines))
    print("\nThe precision ladder per model, with why the chosen step won (host figures; the task figure is what the "
          "bar judges each output by: top-1 for classes and tags, strings for CTC, F1 after NMS for detections, "
          "per-channel F1 for score maps, else cosine; part = XNNPACK partitions, 2 threads):")
    print("\n".join(ladders))
    print("\nnodes: ONNX nodes before -> after graph preparation; float cos: converted float model vs onnxruntime "
          "(worst output); output kinds: as the build inferred them; int8 min/max: the ladder's first step, on the "
          "build's held-out samples; chosen: the shipped step's task figure there; new samples: the bundle through "
          "edge-run vs float onnxruntime on samples the build never saw; float: float compute ops in the shipped "
          "model; parts i/f: XNNPACK partitions of the shipped model / of float32; steps: ladder steps tried; x int8: "
          "the build's time over its full-int8 build's (the build less the ladder's steps after the first).")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
