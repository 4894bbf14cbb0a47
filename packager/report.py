"""What `edgepack build` says on the console while it works (stderr).

Numbered stage lines, indented detail lines and one-line warnings; the
tables and summaries themselves are made by the stages that own the figures.
"""

from __future__ import annotations

import sys

STAGES = 9


def say(step: int, text: str) -> None:
    """A stage line: ``[step/9] text``."""
    print(f"[{step}/{STAGES}] {text}", file=sys.stderr, flush=True)


def detail(text: str) -> None:
    """An indented line under the current stage."""
    print(f"      {text}", file=sys.stderr, flush=True)


def warn(text: str) -> None:
    print(f"warning: {text}", file=sys.stderr, flush=True)


def block(text: str) -> None:
    """A multi-line block (a table) as it is."""
    print(text, file=sys.stderr, flush=True)


def split_warning(partitions: int, split_by: dict[str, int]) -> str:
    """The build's warning for a graph XNNPACK takes in several pieces, naming the ops between them.

    Every boundary hands tensors between XNNPACK and the reference kernels
    (and those ops run single-threaded and unoptimised), so the ops named here
    are what to change or replace in the ONNX model to get one partition.
    """
    ops = ", ".join(f"{name} x{count}" for name, count in split_by.items()) or "not measured"
    return (f"XNNPACK takes the chosen model in {partitions} partitions, split by the ops it does not take: {ops}. "
            "Each boundary is a hand-off through the reference kernels; replacing those ops in the ONNX model "
            "with ones XNNPACK takes joins the pieces")


def show_preparation(preparation) -> None:
    for change in preparation.changes:
        detail(change)
    if preparation.changes:
        worst = min(preparation.cosine.values())
        detail(f"prepared graph vs original in onnxruntime: worst cosine {worst:.6f}")


def frame_path(facts: dict, image_format: str) -> str:
    """How a uint8 frame reaches the model's input tensor on the device (see edge_runtime.tensors.pixel_mode)."""
    from edge_runtime.tensors import pixel_mode

    mode = pixel_mode({**facts, "dtype": "uint8", "format": image_format})
    if mode == "quantize":
        return (f"frames: the input tensor is {facts['tflite_dtype']} with scale {facts['scale']:.6g}, zero point "
                f"{facts['zero_point']}: the device quantizes each frame (one pass); a pixel range pinned to 0..255 "
                "needs LiteRT Quantizer's int8 I/O")
    how = {"copy": "copied as they are", "flip": "copied with the top bit flipped (int8, scale 1, zero point -128)"}
    return f"frames: uint8 pixels go into the model's {facts['tflite_dtype']} input tensor {how[mode]}"


def float_ops_warning(ops: dict, limit: int = 8) -> str:
    """The op report's float ops in one line: the first few types, then how many more (the list is in the
    manifest and `edgepack inspect`)."""
    kinds = [f["type"] for f in ops["float_ops"]]
    shown = ", ".join(kinds[:limit]) + (f" and {len(kinds) - limit} more" if len(kinds) > limit else "")
    return f"{len(kinds)} float op(s) left in the graph: {shown}"
