"""The precision ladder's decisions, with the models replaced by stand-ins whose
fidelity and speed the test sets (no converter; the real ladder runs in the
corpus and build tests)."""

from __future__ import annotations

import numpy as np
import pytest

from packager import ranges as ranges_module
from packager.ladder import joins as joins_module
from packager.ladder import searches as searches_module
from packager.fidelity import Bar, compare
from packager.ladder import Ladder, margin
from packager.quantize import Quantized

N = 16
REF = np.random.default_rng(0).normal(size=(N, 1, 32)).astype(np.float32)
NOISE = np.random.default_rng(1).normal(size=(N, 1, 32)).astype(np.float32)


def _report(noise: float) -> dict:
    return compare({"y": REF}, {"y": REF + noise * NOISE}, N)


class FakeCal:
    """A calibrated float model whose int8 versions are labelled, not computed."""

    float_tflite = b""
    dataset = [{}]
    qsv = {"t0": {}, "t1": {}}

    def int8(self, ranges=None, float_scopes=()):
        precision = "int8+float" if float_scopes else "int8"
        return Quantized(b"\0" * 100, precision, not float_scopes, {}, [], list(float_scopes), "", ranges)

    def dynamic(self):
        return Quantized(b"\0" * 300, "dynamic", False, {}, [])


class FakeBench:
    """noise(q) sets the fidelity (0 is exact; 0.2 is far below the bar); speed(q) the host latency and
    partitions; board(q) the board's latency (None: no board); ops(q) the (float, integer) compute ops."""

    def __init__(self, noise, speed=None, board=None, ops=None):
        self.noise, self._speed = noise, speed or (lambda q: (1.0, 1))
        self._board = board or (lambda q: None)
        self._ops = ops or (lambda q: (len(q.float_ops), 16 - len(q.float_ops)))

    def fidelity(self, q, validation=False):
        return _report(self.noise(q))

    def speed(self, q):
        return self._speed(q)

    def board_speed(self, q):
        return self._board(q)

    def compute_ops(self, q):
        return self._ops(q)


class FakeCandidates:
    """The ladder's candidates: the calibrated graph, the converter's int8 (when given), no repair, floats."""

    def __init__(self, cal=None, converter=None):
        self.calibrated = cal or FakeCal()
        self.converter_int8 = (lambda **kw: converter) if converter is not None else None
        self.float32 = Quantized(b"\0" * 400, "float32", False, {})

    def float16(self):
        return Quantized(b"\0" * 200, "float16", False, {})

    def repaired(self):
        return None


@pytest.fixture(autouse=True)
def no_histograms(monkeypatch):
    monkeypatch.setattr(ranges_module, "collect", lambda *a, **k: {})
    monkeypatch.setattr(searches_module, "op_scopes", lambda tflite: [("CONV_2D", f"s{i};") for i in range(16)])
    # 16 convolutions in a row, one output: no join (packager.ladder.joins has a test of its own)
    monkeypatch.setattr(joins_module, "op_graph",
                        lambda tflite: ([("CONV_2D", [f"t{i}"], [f"t{i + 1}"]) for i in range(16)], {"t16"}))


def _climb(noise, precision="auto", speed=None, board=None, ops=None):
    ladder = Ladder(FakeBench(noise, speed, board, ops), Bar(), precision, say=lambda text: None)
    return ladder.climb(FakeCandidates()), ladder


def test_int8_that_holds_the_bar_is_shipped_without_trying_more():
    outcome, _ = _climb(lambda q: 0.0)
    assert outcome.chosen.name == "int8, min/max" and [s.name for s in outcome.steps] == ["int8, min/max"]
    assert outcome.why == "full int8 with min/max ranges holds the bar"


def test_ranges_chosen_per_tensor_are_the_next_step():
    outcome, _ = _climb(lambda q: 0.0 if q.ranges is not None else 0.5)
    assert [s.name for s in outcome.steps] == ["int8, min/max", "int8, ranges per tensor"]
    assert outcome.chosen.model.precision == "int8"


def test_float_islands_keep_only_the_block_that_matters():
    """Only s5 breaks the outputs in int8: the islands step leaves it (and little else) float."""
    outcome, _ = _climb(lambda q: 0.0 if "s5;" in q.float_ops else (0.5 if q.precision.startswith("int8") else 0))
    chosen = outcome.chosen
    assert chosen.model.precision == "int8+float" and "s5;" in chosen.model.float_ops
    assert len(chosen.model.float_ops) == 1  # 16 ops, 8 blocks of 2, halved twice
    assert chosen.name == "int8 + 1 float ops"


def test_when_no_integer_step_holds_the_cheapest_float_precision_that_does_ships():
    outcome, _ = _climb(lambda q: {"float16": 0.0, "float32": 0.0}.get(q.precision, 0.5))
    # the island search ends with every op float (no step: float32 with conversions)
    assert [s.model.precision for s in outcome.steps] == ["int8", "int8", "dynamic", "float16"]
    assert outcome.chosen.model.precision == "float16"
    assert "below it: int8, min/max" in outcome.why


def test_full_int8_that_holds_the_bar_ships_however_slow_on_this_host():
    """31 XNNPACK pieces against 3 and 2x slower on x86: on the ARM board int8 is the fast path."""
    speed = {"int8": (10.0, 31), "float32": (5.0, 3)}
    outcome, _ = _climb(lambda q: 0.0, speed=lambda q: speed[q.precision])
    assert outcome.chosen.model.precision == "int8" and not outcome.steps[0].passed_over
    assert outcome.why == "full int8 with min/max ranges holds the bar"


def test_a_mostly_float_islands_step_slower_than_float32_is_passed_over():
    """Only float islands hold the bar; 12 of 16 ops float and slower than float32: float16 ships instead."""
    speed = {"int8": (3.0, 2), "int8+float": (9.0, 5), "dynamic": (5.0, 3), "float16": (5.0, 3), "float32": (5.0, 3)}
    outcome, _ = _climb(lambda q: 0.0 if q.precision != "int8" else 0.5, speed=lambda q: speed[q.precision],
                        ops=lambda q: (12, 4) if q.precision == "int8+float" else (0, 16))
    islands = next(s for s in outcome.steps if s.model.precision == "int8+float")
    assert islands.meets and islands.passed_over.startswith("a float model (12 float ops, 4 int8) slower than float32")
    assert outcome.chosen.model.precision == "dynamic"
    assert "held it but passed over for speed: int8 + " in outcome.why


def test_islands_with_no_int8_op_left_are_passed_over_however_fast():
    """Every op float: float32 with conversions, whatever this host's timing says (it flipped between runs)."""
    speed = {"int8": (3.0, 2), "int8+float": (4.0, 3), "dynamic": (5.0, 3), "float16": (5.0, 3), "float32": (5.0, 3)}
    outcome, _ = _climb(lambda q: 0.0 if q.precision != "int8" else 0.5, speed=lambda q: speed[q.precision],
                        ops=lambda q: (16, 0) if q.precision == "int8+float" else (0, 16))
    islands = next(s for s in outcome.steps if s.model.precision == "int8+float")
    assert islands.meets and islands.passed_over == "no int8 op left (16 float): float32 with conversions around it"
    assert outcome.chosen.model.precision == "dynamic"


def test_islands_that_leave_every_op_float_are_not_a_step():
    """Only every op float would hold: no islands step is measured, and float16 ships (dynamic range is below)."""
    said = []
    ladder = Ladder(FakeBench(lambda q: 0.0 if len(q.float_ops) == 16 or q.precision in ("float16", "float32")
                              else 0.5), Bar(), say=said.append)
    outcome = ladder.climb(FakeCandidates())
    assert not [s for s in outcome.steps if s.model.precision == "int8+float"]
    skipped = "float islands skipped: no choice of float islands short of all 16 ops"
    assert any(text.startswith(skipped) for text in said)
    assert outcome.chosen.model.precision == "float16"


def test_a_few_float_islands_are_passed_over_only_when_the_delegate_splits_them_more():
    speed = {"int8": (3.0, 2), "int8+float": (20.0, 3), "float32": (5.0, 3)}
    outcome, _ = _climb(lambda q: 0.0 if q.precision != "int8" else 0.5, speed=lambda q: speed[q.precision],
                        ops=lambda q: (2, 14))
    assert outcome.chosen.model.precision == "int8+float"  # 4x slower on x86, same pieces: not a board figure
    speed["int8+float"] = (2.0, 9)
    outcome, _ = _climb(lambda q: 0.0 if q.precision != "int8" else 0.5, speed=lambda q: speed.get(q.precision, (5, 3)),
                        ops=lambda q: (2, 14))
    assert outcome.steps[-2].passed_over == "XNNPACK takes it in 9 pieces, float32 in 3"


def test_dynamic_range_slower_than_float32_on_this_host_is_passed_over_in_one_piece_too():
    """Float activations at every op: a float model by its op mix, timed against float32 fairly anywhere."""
    speed = {"int8": (3.0, 2), "int8+float": (3.0, 2), "dynamic": (0.8, 1), "float16": (0.25, 1),
             "float32": (0.24, 1)}
    below_but_dynamic = lambda q: 0.0 if q.precision in ("dynamic", "float16", "float32") else 0.5  # noqa: E731
    outcome, _ = _climb(below_but_dynamic, speed=lambda q: speed[q.precision])
    dynamic = next(s for s in outcome.steps if s.model.precision == "dynamic")
    assert dynamic.meets and dynamic.passed_over.startswith("float activations, slower than float32 (0.80 vs 0.24")
    assert outcome.chosen.model.precision == "float16"
    speed["dynamic"] = (0.25, 1)  # within 10% of float32: it ships
    assert _climb(below_but_dynamic, speed=lambda q: speed[q.precision])[0].chosen.model.precision == "dynamic"


@pytest.mark.parametrize("fp16, pieces, ships", [(False, 2, "float32"), (None, 2, "float32"), (True, 2, "float16"),
                                                  (False, 1, "float16")])
def test_float16_in_more_xnnpack_pieces_is_passed_over_unless_the_cpus_compute_in_float16(fp16, pieces, ships):
    """float16 in ``pieces`` XNNPACK pieces against float32's 1, and slower here: only the pieces decide."""
    speed = {"float16": (0.064, pieces), "float32": (0.040, 1)}
    ladder = Ladder(FakeBench(lambda q: 0.0 if q.precision.startswith("float") else 0.5,
                              speed=lambda q: speed.get(q.precision, (1.0, 1))),
                    Bar(), say=lambda text: None, fp16_arithmetic=fp16)
    outcome = ladder.climb(FakeCandidates())
    assert outcome.chosen.model.precision == ships
    if ships == "float32":
        assert outcome.steps[-2].passed_over == ("float32 compute on these CPUs, and XNNPACK takes it in 2 pieces, "
                                                 "float32 in 1")


def test_board_timings_decide_when_the_board_is_reached():
    board = {"int8": 30.0, "dynamic": 12.0, "float16": 10.0, "float32": 10.0}
    outcome, _ = _climb(lambda q: 0.0, board=lambda q: board.get(q.precision))
    assert outcome.steps[0].passed_over == "slower than float32 on the board (30.00 vs 10.00 ms)"
    assert outcome.chosen.model.precision == "float16"  # dynamic range: 12 ms, over 10% slower too


def test_precision_int8_takes_slow_int8_and_stops_before_floats():
    speed = {"int8": (10.0, 30), "float32": (5.0, 3)}
    outcome, _ = _climb(lambda q: 0.0, "int8", speed=lambda q: speed[q.precision])
    assert outcome.chosen.model.precision == "int8"
    outcome, ladder = _climb(lambda q: 0.5, "int8")
    assert outcome.chosen is None and {s.model.precision for s in outcome.steps} == {"int8"}
    assert ladder.best().name.startswith("int8")


def test_margin_counts_every_criterion_relative_to_its_bar():
    assert margin(_report(0.0), Bar()) >= 1
    assert margin(_report(0.5), Bar()) < 1
    assert margin(_report(0.5), Bar(min_cosine=0.5, min_top1=0.5)) > margin(_report(0.5), Bar())  # looser bar
    assert margin(_report(0.5), Bar(min_cosine=None, min_top1=None, min_channel_cosine=None)) == 1.0  # none applies


def test_when_litert_quantizer_fails_the_converter_makes_the_int8_step(monkeypatch):
    from packager.quantize import QuantizerFailed

    class Failing(FakeCal):
        def int8(self, ranges=None, float_scopes=()):
            raise QuantizerFailed("LiteRT Quantizer could not calibrate the model: Tensor data is null")

        def dynamic(self):
            raise QuantizerFailed("LiteRT Quantizer could not quantize the model: no")

    said = []
    converter = Quantized(b"\0" * 90, "int8", True, {})
    ladder = Ladder(FakeBench(lambda q: 0.0 if q is converter else 0.5), Bar(), say=said.append)
    outcome = ladder.climb(FakeCandidates(Failing(), converter))
    assert outcome.chosen.model is converter and outcome.chosen.name == "int8 (TFLite converter)"
    assert "Tensor data is null" in outcome.chosen.note
    ladder = Ladder(FakeBench(lambda q: 0.0 if q.precision == "float16" else 0.5), Bar(), say=said.append)
    outcome = ladder.climb(FakeCandidates(Failing(), converter))
    assert [s.name for s in outcome.steps] == ["int8 (TFLite converter)", "float16"]
    assert any(line.startswith("float islands skipped") for line in said)
    assert any(line.startswith("dynamic range skipped") for line in said)


def test_a_candidate_the_runtime_cannot_run_is_below_the_bar_not_a_crash():
    class Broken(FakeBench):
        def fidelity(self, q, validation=False):
            if q.precision == "int8":
                return {"samples": 0, "outputs": {}, "error": "does not run: Tensor data is null"}
            return _report(0.0)

    ladder = Ladder(Broken(lambda q: 0.0), Bar(), say=lambda text: None)
    outcome = ladder.climb(FakeCandidates())
    assert outcome.steps[0].missing == ["does not run: Tensor data is null"]
    assert margin(outcome.steps[0].report, Bar()) == -np.inf
    assert outcome.chosen.model.precision == "int8+float"


def test_the_converters_int8_is_tried_when_the_quantizers_min_max_misses():
    converter = Quantized(b"\0" * 90, "int8", True, {})
    ladder = Ladder(FakeBench(lambda q: 0.0 if q is converter else 0.5), Bar(), say=lambda text: None)
    outcome = ladder.climb(FakeCandidates(converter=converter))
    assert [s.name for s in outcome.steps] == ["int8, min/max", "int8, TFLite converter"]
    assert outcome.chosen.model is converter


class RepairedCal(FakeCal):
    """The repaired graph's calibration: its int8 models carry a marker byte the noise functions read."""

    def int8(self, ranges=None, float_scopes=()):
        q = super().int8(ranges, float_scopes)
        q.tflite = b"\1" * 100
        return q


def _repaired_climb(noise):
    candidates = FakeCandidates()
    candidates.repaired = lambda: RepairedCal()
    ladder = Ladder(FakeBench(noise), Bar(), "int8", say=lambda text: None)
    return ladder.climb(candidates)


@pytest.mark.parametrize("repair, searched", [(0.3, False), (0.1, True)])
def test_the_repaired_graph_s_ranges_are_searched_only_when_the_repair_helped_min_max(repair, searched):
    """min/max at noise 0.2; the repaired graph's at ``repair``: worse (0.3) skips its range search."""
    outcome = _repaired_climb(lambda q: repair if q.tflite[:1] == b"\1" else 0.2)
    names = [s.name for s in outcome.steps]
    assert names[:3] == ["int8, min/max", "int8, ranges per tensor", "int8 repaired, min/max"]
    assert ("int8 repaired, ranges per tensor" in names) is searched
