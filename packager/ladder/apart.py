"""The precision ladder in a process of its own: a native crash never reaches the build.

Every native step of the ladder (the TFLite converter's exports and its
calibrator, LiteRT Quantizer, the interpreters that measure each candidate)
runs in one child process. It reports each rung it starts and each step it
measures. When it dies of a signal (the TFLite calibrator segfaults on some
recurrent models), the rung it was on becomes a failed step ("crashed:
SIGSEGV ..."), and a new child goes on from the next rung with the steps
already measured, up to MAX_CRASHES times. A crash outside any rung (the float
export itself) is a one-line error naming the step and the signal.

The child is started with ``spawn`` (never fork: TensorFlow and onnxruntime
hold threads), inherits stderr (its progress lines are the build's; the
build drops TensorFlow's lines that no log level turns off, see
edge_runtime.native_logs) and is killed with the build on any exception, a
signal included.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import multiprocessing
import signal
import sys

from edge_runtime.errors import UserError
from edge_runtime.native_logs import filtered_stderr, quiet_process

from ..quantize import Quantized
from .steps import Step

MAX_CRASHES = 3
RECURRENT = ("LSTM", "GRU", "RNN", "Loop", "Scan", "DynamicQuantizeLSTM")


@dataclasses.dataclass
class Job:
    """Everything the child needs to rebuild the ladder (picklable)."""

    opts: object  # BuildOptions
    candidates: object  # packager.precision.Candidates, untouched (nothing made yet)
    bench: object  # packager.ladder.Bench (its interpreters are made in the child)
    board: object | None  # packager.board_bench.BoardBench
    profiles: tuple
    temp_root: str | None = None  # the child's temp files go here (the build removes it, even after a SIGKILL)
    rungs: str | None = None  # "module:NAME" of another rung table (tests)
    resume: dict = dataclasses.field(default_factory=dict)


class _Observer:
    def __init__(self, conn):
        self.conn = conn

    def start(self, rung: str) -> None:
        self.conn.send(("start", rung))

    def step(self, rung: str, step: Step) -> None:
        self.conn.send(("step", rung, step))


def _child(conn, job: Job) -> None:
    """The child's whole life: the ladder, then its outcome (or the UserError it raised) sent back."""
    import importlib
    import os
    import tempfile

    from ..precision import choose_precision

    if not job.opts.verbose:
        quiet_process()
    if job.temp_root:
        os.makedirs(job.temp_root, exist_ok=True)
        os.environ["TMPDIR"] = tempfile.tempdir = job.temp_root
    try:
        bench = job.bench
        bench.board = job.board
        rungs = None
        if job.rungs:
            module, name = job.rungs.split(":")
            rungs = getattr(importlib.import_module(module), name)
        outcome, ladder = choose_precision(job.opts, job.candidates, bench, job.profiles, _Observer(conn),
                                           job.resume, rungs)
        chosen = outcome.chosen
        split = ladder.bench.split_by(chosen.model) if chosen.partitions > 1 else {}
        conn.send(("result", outcome, split))
    except UserError as exc:
        conn.send(("error", exc))
    except Exception:  # a bug, not a crash: its traceback goes to the build (shown with -v)
        import traceback

        conn.send(("bug", traceback.format_exc()))


def choose_apart(job: Job) -> tuple[object, dict]:
    """(Outcome, {op: count} splitting the chosen model's XNNPACK graph) from a ladder run in a child process.

    Raises:
        UserError: what the ladder raised; or a crash outside any rung, or more than MAX_CRASHES crashes.
    """
    # The child writes to our stderr; TensorFlow's lines that no log level turns off are dropped here, in the
    # process that outlives a crash, so the child's last words before one always get through.
    with contextlib.nullcontext() if job.opts.verbose else filtered_stderr():
        return _run_apart(job)


def _run_apart(job: Job) -> tuple[object, dict]:
    context = multiprocessing.get_context("spawn")
    crashes = 0
    while True:
        parent, child = context.Pipe()
        proc = context.Process(target=_child, args=(child, job), name="edgepack-ladder", daemon=True)
        proc.start()
        child.close()
        try:
            done, started = _listen(parent, proc, job)
        finally:
            if proc.is_alive():
                proc.kill()
            proc.join()
            parent.close()
        if done is not None:
            return done
        crashes += 1
        why = _signal_text(proc.exitcode)
        if started is None or crashes > MAX_CRASHES:
            where = f"the ladder's {started or 'float export and reference timing'}"
            raise UserError(f"{where} crashed ({why}){_likely_op(job)}",
                            "run with -v for the converter's log; a --precision that avoids it, or the model "
                            "re-exported without the op, may build")
        job.resume[started] = crashed_step(started, why)
        print(f"      {started}: crashed ({why}); going on with the next rung in a new process", flush=True,
              file=sys.stderr)


def _listen(conn, proc, job: Job):
    """Messages until the result (returned) or the child's death: (None, the rung it was on)."""
    started = None
    while True:
        try:
            message = conn.recv()
        except EOFError:
            proc.join()
            return None, started
        if message[0] == "start":
            started = message[1]
        elif message[0] == "step":
            job.resume[message[1]] = message[2]
            started = None
        elif message[0] == "error":
            raise message[1]
        elif message[0] == "bug":
            raise RuntimeError(f"the precision ladder's process failed:\n{message[1]}")
        else:
            return (message[1], message[2]), None


def crashed_step(rung: str, why: str) -> Step:
    """The record of a rung whose process died: a step below the bar, with the signal as its shortfall."""
    text = f"crashed ({why})"
    empty = Quantized(b"", "int8", False, {})
    return Step(rung, empty, {"samples": 0, "outputs": {}, "error": text}, [text], math.nan, 0, 0.0, text)


def _signal_text(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        try:
            return f"signal {-exitcode}, {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"signal {-exitcode}"
    return f"exit code {exitcode}"


def _likely_op(job: Job) -> str:
    """The ops that crash TFLite's calibrator in practice (recurrent layers), when the graph has them."""
    graph = getattr(job.candidates.prepared, "graph", None)
    found = sorted({n.op_type for n in graph.node} & set(RECURRENT)) if graph is not None else []
    return f"; likely op: {', '.join(found)} (recurrent layers crash TFLite's calibrator)" if found else ""
