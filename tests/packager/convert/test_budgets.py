"""Budgets before work: unrolling is sized before it starts and refused above the memory budget; an attempt
that can only fail the way an earlier one did is skipped."""

import pytest

from packager.convert import Attempt, _fails_the_same_way, recurrent
from packager.convert.strategies import STRATEGIES, Limits, _unroll
from tests.fixtures.recurrent_models import one_layer as _model

BY_NAME = {s.name: s for s in STRATEGIES}


@pytest.mark.parametrize("kind, direction", [("LSTM", "forward"), ("GRU", "bidirectional"), ("RNN", "reverse")])
def test_the_estimate_counts_the_nodes_unrolling_makes(kind, direction):
    proto = _model(kind, direction, states="input")
    size = recurrent.estimate(proto, 1.0, 0)
    recurrent.run(proto)
    made = len(proto.graph.node)
    assert abs(size.nodes - made) <= 0.25 * made, (size.nodes, made)  # the order of magnitude is what matters
    assert size.megabytes == size.nodes and size.layers[0].startswith(f"{kind} ")


def test_unrolling_over_the_budget_is_refused_before_it_starts_with_the_figures():
    proto = _model("LSTM", "bidirectional", states="input")
    before = proto.SerializeToString()
    with pytest.raises(Exception) as refused:
        _unroll(proto, Limits(max_memory_mb=100))
    text = str(refused.value)
    assert "unrolling LSTM" in text and "nodes, an estimated" in text and "over the budget of 100 MB" in text
    assert proto.SerializeToString() == before  # nothing was unrolled
    with pytest.raises(Exception, match=r"s to convert, over the time budget of 0 s an attempt"):
        _unroll(proto, Limits(max_memory_mb=10**6, seconds=1e-6))
    assert proto.SerializeToString() == before
    assert _unroll(proto, Limits(max_memory_mb=10**6))[-1].startswith("unrolled graph: ")


def _failed(name: str, reason: str, ops=()) -> Attempt:
    return Attempt(name, False, reason, list(ops), 12.0, [])


def test_an_attempt_that_can_only_fail_the_same_way_is_skipped():
    handler = _failed("onnx2tf", "UnboundLocalError: cannot access local variable 'dummy_tensor'", ["LSTM (lstm1)"])
    layout = _failed("onnx2tf", "ValueError: depth 258 not a multiple of groups 640", ["Conv (conv1)"])
    refused = _failed("onnx2tf-unrolled", "lowering refused: unrolling LSTM 'lstm1' ...")
    strategies = STRATEGIES
    assert "same error on the same op (LSTM (lstm1)" in _fails_the_same_way(BY_NAME["onnx2tf-keep-shapes"],
                                                                             [handler], strategies)
    assert _fails_the_same_way(BY_NAME["onnx2tf-keep-shapes"], [layout], strategies) == ""  # a layout option may fix it
    assert _fails_the_same_way(BY_NAME["onnx2tf-unrolled"], [handler], strategies) == ""  # unrolling removes the op
    assert _fails_the_same_way(BY_NAME["onnx2tf-unrolled-no-strict"], [refused], strategies).startswith(
        "the same lowering failed in onnx2tf-unrolled (lowering refused")
