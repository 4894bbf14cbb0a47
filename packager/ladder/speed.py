"""When a step that holds the bar is passed over for speed: decided for the board, not for this host.

* Int8 with float islands and no int8 compute op left is float32 with
  conversions around it: passed over wherever it is timed.
* Timed on the board itself (``--bench-on``): a step slower than float32
  there by more than 10% is passed over, whatever it is.
* Without the board, this host's kernel speed says nothing about an ARM
  board's (x86 float kernels with AVX-512 beat int8 ones; on a Cortex-A72 int8
  is the fast path: XNNPACK's MobileNetV2 on a Pi 4 is 17 ms int8 against 46 ms
  float32), so only what carries over decides:
  - full int8 (every compute op integer) is never passed over (its XNNPACK
    partitions are reported); an int8 model whose quantizer left some ops
    float (no int8 kernel) is judged as int8 with float islands;
  - int8 with float islands and no int8 compute op left (above): a timing
    of it against float32 is noise, which flipped a build from run to run;
  - int8 with float islands whose float ops outnumber its int8 ops is a float
    model with conversions around it: passed over when slower than float32 on
    this host (float against float is a fair comparison anywhere);
  - int8 with a few float islands is passed over when the delegate takes it in
    more pieces than float32 (each boundary is a hand-off through the
    reference kernels, on any CPU);
  - dynamic range (int8 weights, float activations: every op boundary is
    float, a float model by its op mix) is passed over when slower than
    float32 on this host, as a mostly-float step is;
  - float16 runs as float32 on CPUs without FP16 arithmetic (Cortex-A72, A53):
    a smaller file, never a speed-up there. On those targets (or targets not
    known to have it) it is passed over when XNNPACK takes it in more pieces
    than float32 (the weights' DEQUANTIZE ops can split the delegate: Silero
    VAD's float16 took 2 pieces to float32's 1): the same float32 kernels
    plus hand-offs, on any CPU. Not by this host's timing: on a 0.05 ms model
    float32 timed 0.04 ms as the reference and 0.065 ms as a step of the same
    build. On CPUs with FP16 arithmetic it is not passed over.
"""

from __future__ import annotations

SLOWER_THAN_FLOAT = 1.10  # slower than float32 by this much counts as slower


def mostly_float(step) -> bool:
    """More float compute ops than integer ones (quantize/dequantize ops at the boundaries not counted)."""
    return step.float_compute > step.integer_compute


def passed_over(step, reference, fp16_arithmetic: bool | None = None) -> str | None:
    """Why ``step`` (holding the bar) is passed over for speed against the float32 ``reference``, or None.

    ``reference`` carries float32's ``latency_ms``, ``partitions`` and ``board_ms`` (None unless timed on the board);
    ``fp16_arithmetic``: whether every target CPU computes in float16 (None: unknown).
    """
    precision = step.model.precision
    if precision == "float32" or reference is None:
        return None
    if precision == "int8+float" and step.integer_compute == 0:
        return f"no int8 op left ({step.float_compute} float): float32 with conversions around it"
    if step.board_ms is not None and reference.board_ms is not None:
        if step.board_ms > reference.board_ms * SLOWER_THAN_FLOAT:
            return f"slower than float32 on the board ({step.board_ms:.2f} vs {reference.board_ms:.2f} ms)"
        return None
    if precision == "int8" and step.model.strict:
        return None  # full integer: the board's fast path
    mixed = precision in ("int8", "int8+float")  # int8 whose quantizer left ops float counts as mixed
    if mixed and mostly_float(step):
        if step.latency_ms > reference.latency_ms * SLOWER_THAN_FLOAT:
            return (f"a float model ({step.float_compute} float ops, {step.integer_compute} int8) slower than "
                    f"float32 ({step.latency_ms:.2f} vs {reference.latency_ms:.2f} ms on this host)")
        return None
    if mixed and step.partitions > reference.partitions:
        return f"XNNPACK takes it in {step.partitions} pieces, float32 in {reference.partitions}"
    if precision == "float16" and fp16_arithmetic is not True and step.partitions > reference.partitions:
        return (f"float32 compute on these CPUs, and XNNPACK takes it in {step.partitions} pieces, float32 in "
                f"{reference.partitions}")
    if precision == "dynamic" and step.latency_ms > reference.latency_ms * SLOWER_THAN_FLOAT:
        return (f"float activations, slower than float32 ({step.latency_ms:.2f} vs {reference.latency_ms:.2f} ms "
                f"on this host; XNNPACK pieces {step.partitions} against {reference.partitions})")
    return None


def float16_note(fp16_arithmetic: bool | None) -> str:
    """What a float16 model is on the targets' CPUs."""
    if fp16_arithmetic is False:
        return "float32 compute on these CPUs (no FP16 arithmetic): a smaller file only"
    return ""
