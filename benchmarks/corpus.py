"""`make corpus`: build every corpus model and print one table.

Per model: what graph preparation changed, the conversion strategy that
won, the float check, the int8 bundle's worst-output cosine against float
onnxruntime on held-out samples (run through `edge-run run`), top-1
agreement where the output is class scores, float ops left, size and build
time. Host figures.
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
    return (f"{result.entry.name:<18} {prep['nodes_before']:>4}->{prep['nodes_after']:<4} {len(prep['changes']):>3} "
            f"{m['converter']['strategy']:<20} {float_cos:>8.5f} {result.worst_cosine():>8.4f} "
            f"{'-' if top1 is None else f'{top1 * 100:.1f}%':>7} {len(m['ops']['float_ops']):>5} "
            f"{size_kb:>8.0f} {result.build_seconds:>7.1f}")


def main(names: list[str]) -> int:
    header = (f"{'model':<18} {'nodes':>10} {'chg':>3} {'strategy':<20} {'float cos':>8} {'int8 cos':>8} "
              f"{'top-1':>7} {'float':>5} {'size KB':>8} {'build s':>7}")
    lines, failed = [header], 0
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
            for change in result.manifest["preparation"]["changes"]:
                print(f"  {entry.name}: {change}", file=sys.stderr)
    print("\n".join(lines))
    print("\nnodes: ONNX nodes before -> after graph preparation; chg: preparation changes; float cos: converted float "
          "model vs onnxruntime (worst output); int8 cos: the bundle through edge-run vs float onnxruntime on "
          "held-out samples (each output over all samples; the worst output); top-1: argmax agreement for class scores; "
          "float: float ops left in the int8 graph.")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
