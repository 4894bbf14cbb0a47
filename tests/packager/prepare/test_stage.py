"""The preparation stage: passes run, are checked against onnxruntime, and a
pass that changes the model's results is named in a clear error."""

import numpy as np
import onnx
import pytest

from edge_runtime.errors import UserError
from packager.prepare import PASSES, Pass, prepare
from packager.prepare.errors import NotApplicable
from tests.fixtures.models import dynamic_conv, switch_on_rate


def _samples(shape, count=6, seed=0):
    return {"x": np.random.default_rng(seed).standard_normal((count, *shape)).astype(np.float32)}


def test_if_with_a_static_condition_is_replaced_by_its_branch(tmp_path):
    proto = onnx.load(str(switch_on_rate(tmp_path / "switch.onnx")))
    report = prepare(proto, _samples([1, 8]))
    assert not any(n.op_type == "If" for n in proto.graph.node)
    # Equal(16000, 16000) evaluated by the branches pass itself, before onnxsim
    assert report.changes[0] == "branches: 1 If node(s) with a constant condition replaced by the branch taken (then)"
    assert report.cosine["y"] > 0.9999
    _assert_then_branch(proto)


def test_the_branches_pass_inlines_without_onnxsim(tmp_path):
    from packager.prepare import branches

    proto = onnx.load(str(switch_on_rate(tmp_path / "switch.onnx")))
    # Constants already folded: the condition is an initializer.
    proto.graph.initializer.append(onnx.numpy_helper.from_array(np.array(True), "is16k"))
    del proto.graph.node[:3]
    assert branches.run(proto) == ["1 If node(s) with a constant condition replaced by the branch taken (then)"]
    onnx.checker.check_model(proto)
    assert not any(n.op_type == "If" for n in proto.graph.node)
    _assert_then_branch(proto)


def _assert_then_branch(proto):
    import onnxruntime as ort

    x = _samples([1, 8], 1, seed=5)["x"][0]
    got = ort.InferenceSession(proto.SerializeToString()).run(None, {"x": x})[0]
    np.testing.assert_allclose(got, 2 * x, rtol=1e-6)  # the then-branch: 16000 == 16000


def test_simplify_folds_the_shape_chain_of_a_fixed_model(tmp_path):
    from packager.onnx_model import load_onnx
    from packager.shapes import fix_shapes

    model = load_onnx(dynamic_conv(tmp_path / "dyn.onnx"))
    proto = fix_shapes(model, {"x": [1, 3, 16, 16]})
    report = prepare(proto, _samples([1, 3, 16, 16]))
    assert report.nodes_after <= report.nodes_before
    assert report.cosine["y"] == pytest.approx(1.0, abs=1e-6)


def test_a_pass_that_changes_the_results_stops_the_build_naming_it(tmp_path):
    proto = onnx.load(str(switch_on_rate(tmp_path / "switch.onnx")))

    def corrupt(p):  # a buggy pass: flips the sign of the output
        out = p.graph.output[0].name
        for node in p.graph.node:
            for i, name in enumerate(node.output):
                if name == out:
                    node.output[i] = "pre_" + out
        p.graph.node.append(onnx.helper.make_node("Neg", ["pre_" + out], [out], name="neg"))
        return ["flipped the output"]

    with pytest.raises(UserError) as err:
        prepare(proto, _samples([1, 8]), passes=(*PASSES, Pass("corrupting", corrupt, exact=True)))
    message = err.value.message
    assert "pass 'corrupting'" in message and "flipped the output" in message
    assert "output 'y' has cosine -1.00000" in message


def test_a_pass_that_crashes_stops_the_build_naming_it(tmp_path):
    """Never a silent skip: a skipped pass leaves the converters ops they fail on, far from the cause."""
    proto = onnx.load(str(switch_on_rate(tmp_path / "switch.onnx")))

    def crash(p):
        del p.graph.node[:]
        raise IndexError("list index out of range")

    with pytest.raises(UserError) as err:
        prepare(proto, _samples([1, 8]), passes=(Pass("crashing", crash, exact=True),))
    assert err.value.message == ("graph preparation failed: pass 'crashing' raised IndexError: list index out of "
                                 "range")
    assert "edgepack bug" in err.value.hint


def test_a_pass_that_does_not_apply_says_why_and_leaves_the_graph(tmp_path):
    proto = onnx.load(str(switch_on_rate(tmp_path / "switch.onnx")))
    before = proto.SerializeToString()

    def refuse(p):
        del p.graph.node[:]
        raise NotApplicable("onnxsim could not simplify this graph: RuntimeError: no kernel")

    report = prepare(proto, _samples([1, 8]), passes=(Pass("refusing", refuse, exact=True),))
    assert proto.SerializeToString() == before
    assert report.changes == ["refusing: does not apply (onnxsim could not simplify this graph: RuntimeError: "
                              "no kernel)"]
