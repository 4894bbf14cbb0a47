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

from tests.fixtures.corpus import CORPUS, build_and_compare  # noqa: E402


def row(result) -> str:
    m = result.manifest
    prep = m["preparation"]
    float_cos = min(m["float_conversion_cosine"].values())
    top1 = result.top1()
    size_kb = (result.bundle / "model.tflite").stat().st_size / 1024
    steps = m["precision"]["steps"]
    first, chosen = steps[0], next(s for s in steps if s["step"] == m["precision"]["step"])
    latency = chosen["latency_ms"] / first["latency_ms"] if first["latency_ms"] else float("nan")
    return (f"{result.entry.name:<18} {prep['nodes_before']:>4}->{prep['nodes_after']:<4} "
            f"{m['converter']['strategy']:<20} {float_cos:>8.5f} {chosen['step'][:26]:<26} "
            f"{first['cosine']:>7.4f} {result.worst_cosine():>7.4f} "
            f"{'-' if top1 is None else f'{top1 * 100:.1f}%':>7} {chosen['float_ops']:>5} "
            f"{size_kb:>7.0f} {latency:>6.2f}x {len(steps):>5} {result.build_seconds:>7.1f}")


def ladder(result) -> str:
    def fig(value, spec):
        return "-" if value is None else format(value, spec)

    rows = [f"  {result.entry.name}:"]
    for s in result.manifest["precision"]["steps"]:
        chosen = "*" if s["step"] == result.manifest["precision"]["step"] else " "
        rows.append(f"   {chosen} {s['step'][:34]:<34} cos {fig(s['cosine'], '.4f')} ch {fig(s['channel_cosine'], '.3f')} "
                    f"top-1 {fig(s['top1'], '.3f')} F1 {fig(s['f1'], '.3f')} float {s['float_ops']:>3} "
                    f"{s['size'] / 1024:>6.0f} KB {s['latency_ms']:>8.3f} ms part {s['xnnpack_partitions']:>2} "
                    f"{s['seconds']:>5.1f} s {'holds' if s['meets_bar'] else 'below'}"
                    f"{'; ' + s['note'][:60] if s['note'] else ''}")
    return "\n".join(rows)


def main(names: list[str]) -> int:
    header = (f"{'model':<18} {'nodes':>10} {'strategy':<20} {'float cos':>8} {'chosen step':<26} "
              f"{'before':>7} {'after':>7} {'top-1':>7} {'float':>5} {'size KB':>7} {'vs int8':>7} {'steps':>5} "
              f"{'build s':>7}")
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
            ladders.append(ladder(result))
            for change in result.manifest["preparation"]["changes"]:
                print(f"  {entry.name}: {change}", file=sys.stderr)
    print("\n".join(lines))
    print("\nThe precision ladder per model (host figures; cos = worst output's mean cosine on the build's held-out "
          "samples; ch = worst channel; F1 = score map; ms = XNNPACK, 2 threads; part = XNNPACK partitions):")
    print("\n".join(ladders))
    print("\nnodes: ONNX nodes before -> after graph preparation; float cos: converted float model vs onnxruntime "
          "(worst output); chosen step: the precision ladder's first step that holds the bar; before: full int8 with "
          "min/max ranges (the ladder's first step, build's held-out samples, worst output's mean cosine); after: the "
          "shipped bundle through edge-run vs float onnxruntime on new samples (each output over all samples; the "
          "worst output); top-1: argmax agreement for class scores; float: ops left float on purpose; vs int8: host "
          "latency of the chosen step / full int8 (XNNPACK, 2 threads); steps: ladder steps tried.")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
