"""Preparation pass: fold constants and propagate the now-static shapes.

onnxsim (pinned in requirements/host.txt) rather than onnxslim: onnx2tf
already depends on it and calls it itself, so it adds nothing to install,
and edgepack then tells onnx2tf not to run it a second time.
"""

from __future__ import annotations

import collections

from .errors import NotApplicable


def _op_counts(proto) -> collections.Counter:
    return collections.Counter(n.op_type for n in proto.graph.node)


def run(proto) -> list[str]:
    """Simplify ``proto`` in place; returns what went, e.g. "Shape x4 folded"."""
    from onnxsim import simplify

    before = _op_counts(proto)
    # onnxsim 0.8 fuses attention into com.microsoft Attention/GroupQueryAttention,
    # which onnx2tf has no handler for (every strategy then fails).
    try:
        simplified, ok = simplify(proto, check_n=0, perform_optimization=True,
                                  skipped_optimizers=["fuse_attention", "fuse_gqa"])
    except Exception as exc:  # onnxsim folds through onnxruntime, which refuses some graphs
        text = str(exc).strip()
        raise NotApplicable(f"onnxsim could not simplify this graph: {type(exc).__name__}"
                            + (f": {text.splitlines()[0][:160]}" if text else "")) from exc
    if not ok:
        raise NotApplicable("onnxsim's simplified graph did not pass its own check")
    after = _op_counts(simplified)
    if before == after and len(simplified.graph.initializer) == len(proto.graph.initializer):
        return []
    proto.CopyFrom(simplified)
    gone = before - after
    shown = ", ".join(f"{op} x{n}" for op, n in gone.most_common(6))
    more = "" if len(gone) <= 6 else f" and {len(gone) - 6} more op types"
    total_before, total_after = sum(before.values()), sum(after.values())
    return [f"{total_before} -> {total_after} nodes ({shown}{more} folded or fused)"] if gone else [
        f"{total_before} -> {total_after} nodes (constants folded)"
    ]
