"""Runs candidate models through edge_runtime, as the device runs them: fidelity and host speed."""

from __future__ import annotations

import math
import statistics
import tempfile
import time
from pathlib import Path

from edge_runtime.delegates import left_out

from ..fidelity import compare
from ..layout import io_entry
from ..quantize import Quantized
from ..quiet import captured_output


TIMED_SECONDS = 0.3  # the least time a candidate is timed for on this host
MAX_RUNS = 3000


class Bench:
    """The held-out samples (they judge the steps) and validation samples (they judge searches), with the
    float model's outputs for both."""

    def __init__(self, in_maps, out_maps, fixed_inputs: list[dict], holdout: dict, holdout_refs: dict,
                 validation: dict, validation_refs: dict, kinds: dict | None = None):
        """``kinds``: each output's OutputKind (packager.kinds); inferred from the float values when not given."""
        from ..kinds.infer import infer_kinds

        self.in_maps, self.out_maps, self.fixed_inputs = in_maps, out_maps, fixed_inputs
        self.holdout, self.holdout_refs = holdout, holdout_refs
        self.validation, self.validation_refs = validation, validation_refs
        self.kinds = kinds or infer_kinds(None, [(m.spec.name, m.shape) for m in in_maps],
                                          [(m.spec.name, m.shape) for m in out_maps], holdout_refs)
        self.board = None  # packager.board_bench.BoardBench with --bench-on
        self._dir: tempfile.TemporaryDirectory | None = None  # made on first use, where the models are run
        self._last: tuple[Quantized, object] | None = None

    def __getstate__(self) -> dict:
        """Pickled without its interpreters and folder (the ladder's own process makes its own)."""
        return {k: v for k, v in self.__dict__.items() if k not in ("_dir", "_last")}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._dir, self._last = None, None

    def model(self, q: Quantized):
        """The candidate loaded as the device loads it; the last one is kept (a step measures fidelity, then speed)."""
        if self._last is not None and self._last[0] is q:
            return self._last[1]
        from edge_runtime.interpreter import make_engine
        from edge_runtime.model import Model

        if self._dir is None:
            self._dir = tempfile.TemporaryDirectory(prefix="edgepack-ladder-")
        path = Path(self._dir.name) / "candidate.tflite"
        path.write_bytes(q.tflite)
        manifest = {"name": "candidate", "inputs": [io_entry(m, q.io) for m in self.in_maps],
                    "outputs": [io_entry(m, q.io) for m in self.out_maps], "fixed_inputs": self.fixed_inputs}
        with captured_output():  # the runtime announces its delegate on fd 2
            engine = make_engine(str(path), threads=2, delegate="xnnpack")
        model = Model(path.parent, manifest, engine)
        self._last = (q, model)
        return model

    def fidelity(self, q: Quantized, validation: bool = False) -> dict:
        """The fidelity report; a candidate the runtime cannot run gets {"error": why} and no outputs."""
        samples, refs = (self.validation, self.validation_refs) if validation else (self.holdout, self.holdout_refs)
        try:
            got = self.model(q).predict(dict(samples))
        except Exception as exc:  # the runtime's ValueError/RuntimeError on a model it cannot run
            return {"samples": 0, "outputs": {}, "error": f"does not run: {str(exc).strip().splitlines()[0][:160]}"}
        return compare(refs, {n: got[n] for n in refs}, len(next(iter(samples.values()))), self.kinds)

    def speed(self, q: Quantized, runs: int = 15) -> tuple[float, int]:
        """(median invoke ms, XNNPACK partitions) on the host; (nan, 0) when it does not run. At least ``runs``
        invokes and at least TIMED_SECONDS of them (up to MAX_RUNS): a 0.05 ms model's 15 invokes are 1 ms of
        timing, and its median moved by half from one timing to the next."""
        try:
            return self._speed(q, runs)
        except Exception:  # reported by fidelity() already
            return math.nan, 0

    def _speed(self, q: Quantized, runs: int) -> tuple[float, int]:
        model = self.model(q)
        model.predict({k: v[:1] for k, v in self.holdout.items()})
        interp = model.engine.interpreter
        times = []
        began = time.perf_counter()
        while len(times) < runs or (time.perf_counter() - began < TIMED_SECONDS and len(times) < MAX_RUNS):
            start = time.perf_counter()
            interp.invoke()
            times.append((time.perf_counter() - start) * 1000)
        partitions = sum(op["op_name"] == "DELEGATE" for op in interp._get_ops_details())
        return statistics.median(times), partitions

    def compute_ops(self, q: Quantized) -> tuple[int, int]:
        """(float compute ops, integer compute ops); (0, 0) when the model cannot be read."""
        from .steps import compute_ops

        try:
            return compute_ops(q)
        except Exception:  # reported by fidelity() already
            return 0, 0

    def board_speed(self, q: Quantized) -> float | None:
        """Median invoke ms on the target board (--bench-on), or None when no board is reachable."""
        return self.board.time(q) if self.board is not None else None

    def split_by(self, q: Quantized) -> dict[str, int]:
        """{op name: count} of the ops left outside the XNNPACK partitions: what splits the graph.

        Each boundary between partitions is a hand-off through the reference
        kernels. Empty when the model does not run.
        """
        try:
            return left_out(self.model(q).engine.interpreter)
        except Exception:  # reported by fidelity() already
            return {}
