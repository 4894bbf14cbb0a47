"""The accelerator table: the build's preflight and per-target stage, the Edge TPU as its one row."""

from __future__ import annotations

import pytest

from edge_runtime.errors import UserError
from packager.accelerators import ACCELERATORS, check_accelerators, stage_accelerators
from packager.build import BuildOptions
from packager.profiles import load_profile


def _opts(target: str, require: bool) -> BuildOptions:
    return BuildOptions("m.onnx", target, "random", require_edgetpu=require)


def test_the_edge_tpu_is_a_row_that_applies_to_targets_listing_its_delegate():
    assert [row.name for row in ACCELERATORS] == ["edgetpu"]
    row = ACCELERATORS[0]
    assert row.applies(load_profile("coral-usb")) and not row.applies(load_profile("rpi4"))
    assert row.required(_opts("coral-usb", True)) and not row.required(_opts("coral-usb", False))


def test_preflight_refuses_a_demanded_accelerator_no_target_lists(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no edgetpu_compiler
    profiles = [load_profile("rpi4"), load_profile("rpi5")]
    with pytest.raises(UserError, match="--require-edgetpu, but no target of rpi4,rpi5 lists the edgetpu delegate"):
        check_accelerators(profiles, _opts("rpi4,rpi5", True))
    check_accelerators(profiles, _opts("rpi4,rpi5", False))  # not demanded: nothing to check
    with pytest.raises(UserError, match="--require-edgetpu: edgetpu_compiler is not on PATH"):
        check_accelerators([*profiles, load_profile("coral-usb")], _opts("rpi4,rpi5,coral-usb", True))


@pytest.mark.slow
def test_every_target_gets_the_report_and_an_edge_tpu_target_a_warning_for_a_float_model(tmp_path, monkeypatch):
    import tensorflow as tf

    monkeypatch.setenv("PATH", str(tmp_path))  # no edgetpu_compiler: the CPU model ships with the report
    f = tf.function(lambda x: tf.nn.relu(x * 2.0 + 1.0), input_signature=[tf.TensorSpec([1, 4], tf.float32)])
    tflite = tf.lite.TFLiteConverter.from_concrete_functions([f.get_concrete_function()], f).convert()
    for name, warned in (("rpi4", False), ("coral-usb", True)):
        stage = tmp_path / name
        stage.mkdir()
        entries, warnings = stage_accelerators(tflite, "float32", load_profile(name), stage, _opts(name, False))
        assert list(entries) == ["edgetpu"] and entries["edgetpu"]["ops_edgetpu"] == 0
        assert ("compiled" in entries["edgetpu"]) == warned  # null: the compiler is not on PATH
        assert list(stage.iterdir()) == []
        if warned:
            assert warnings == [f"target coral-usb: the Edge TPU runs full-integer models only, and the chosen "
                                f"precision is float32: {entries['edgetpu']['summary']}. --precision int8 demands "
                                "full integer (or fails, saying what it loses)"]
        else:
            assert warnings == []
