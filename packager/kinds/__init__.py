"""What each model output means, and the task figure that judges it.

A cosine over a whole output errs both ways: it refuses an int8 detector
whose detections after NMS are the float model's, and it passes a joined
box+score tensor whose scores all rounded to zero. So each output has a
kind, inferred from the graph and the float model's own values
(:mod:`packager.kinds.infer`) or declared (``--output-kind NAME=KIND[:thr]``),
and each kind has its task measure (:mod:`packager.kinds.measures`):

  classes     top-1 / top-5 agreement along the class axis (a class id: equal)
  tags        per-position top-1 agreement (a class per sequence position, or
              per pixel of a segmenter; class ids from an ArgMax: equal)
  ctc         greedy CTC strings: exact-match rate and character error rate
  scores      per-channel score maps: F1 of the positions above the
              threshold, per channel on the model's real channel axis (and,
              for 2-D maps, connected regions matched at IoU >= 0.5)
  detections  box + score heads decoded, NMS at the confidence threshold,
              matched to the float detections at IoU >= 0.5, same class (the
              boxes may be another output: SSD, UltraFace)
  regression  cosine and relative error (landmarks, boxes, any value)
  embedding   cosine and nearest-neighbour agreement over the samples
  state       a recurrent state handed back to the model: cosine

Cosine and errors are reported for every output; where the kind is known the
task figure is the judge.
"""

from __future__ import annotations

import dataclasses

from edge_runtime.errors import UserError

KINDS = ("classes", "tags", "ctc", "scores", "detections", "regression", "embedding", "state")
DEFAULT_THRESHOLD = {"scores": 0.5, "detections": 0.25}


@dataclasses.dataclass(frozen=True)
class OutputKind:
    """One output's kind and what its measure needs to know. Axes index the ONNX output shape."""

    kind: str
    why: str = ""  # how it was inferred, or "declared"
    threshold: float | None = None  # scores: a position is positive above it; detections: confidence
    axis: int | None = None  # classes/tags/ctc: the class axis; scores: the channel axis
    blank: int | None = None  # ctc: the blank class
    alphabet: tuple[str, ...] | None = None  # ctc: the symbols of classes 1.. (when the model carries them)
    layout: str | None = None  # detections: "rows" ([1, N, 4+C]) or "columns" ([1, 4+C, N])
    objectness: bool | None = None  # detections: a 5th box value, the objectness the class scores multiply (YOLOv5)
    boxes: str | None = None  # detections: the output holding the boxes [1, N, 4] when apart from these scores
    corners: bool | None = None  # detections with boxes apart: x1 y1 x2 y2 (else cx cy w h)
    background: int | None = None  # detections: a softmax's background class, never a detection (SSD: 0)

    @classmethod
    def from_dict(cls, entry: dict) -> "OutputKind":
        """The kind a manifest output carries (``to_dict``'s form; the alphabet itself is not kept)."""
        fields = {f.name for f in dataclasses.fields(cls)} - {"alphabet"}
        return cls(**{k: v for k, v in entry.items() if k in fields})

    def to_dict(self) -> dict:
        out = {k: v for k, v in dataclasses.asdict(self).items() if v is not None and k != "alphabet"}
        if self.alphabet is not None:
            out["alphabet_size"] = len(self.alphabet)
        return out


def parse_declared(values: tuple[str, ...] | list[str], outputs: list[str]) -> dict[str, tuple[str, float | None]]:
    """``--output-kind NAME=KIND[:THRESHOLD]`` values -> {name: (kind, threshold or None)}.

    Raises:
        UserError: an unknown output or kind, a threshold that is not a number in (0, 1), a name given twice.
    """
    declared: dict[str, tuple[str, float | None]] = {}
    for value in values:
        name, sep, rest = value.rpartition("=")
        kind, _, threshold = rest.partition(":")
        if not sep or not name or kind not in KINDS:
            raise UserError(f"--output-kind {value!r}: expected NAME=KIND[:THRESHOLD] with KIND one of "
                            f"{', '.join(KINDS)}", "e.g. --output-kind prob=scores:0.6 --output-kind landmarks=regression")
        if name not in outputs:
            raise UserError(f"--output-kind {value!r}: the model has no output {name!r}",
                            f"its outputs are {', '.join(outputs)}")
        if name in declared:
            raise UserError(f"--output-kind names output {name!r} twice", "give each output one kind")
        declared[name] = (kind, _threshold(value, threshold, kind))
    return declared


def _threshold(value: str, text: str, kind: str) -> float | None:
    if not text:
        return None
    if kind not in DEFAULT_THRESHOLD:
        raise UserError(f"--output-kind {value!r}: a {kind} output takes no threshold",
                        f"thresholds apply to {' and '.join(DEFAULT_THRESHOLD)}")
    try:
        number = float(text)
    except ValueError:
        number = -1.0
    if not 0 < number < 1:
        raise UserError(f"--output-kind {value!r}: the threshold must be a number between 0 and 1, found {text!r}",
                        "e.g. prob=scores:0.6")
    return number
