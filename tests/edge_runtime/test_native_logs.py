"""The native libraries' lines on stderr: the ones no log level turns off are dropped, nothing else is."""

import os
import subprocess
import sys
import time

import pytest

from edge_runtime.native_logs import PARTIAL_LINE_WAIT, filtered_stderr, is_noise, quiet_process
from tests.helpers.stderr_lines import NATIVE_LINES_BEFORE

KEPT = (
    "[6/9] choosing the precision (auto): full int8 first",
    "      float32 reference: 0.01 ms on this host, 1 XNNPACK partition(s)",
    "error: the TFLite converter could not export the float model",
    "warning: --calibration random: the accuracy figures mean nothing",
    "copy_delegate: hanging in tflite_plugin_create_delegate (hang=create)",
    "Traceback (most recent call last):",
    "E0000 00:00:1796621351.762670   28739 tflite_flex.cc:52] Op type not registered 'Foo'",
    "F0000 00:00:1796621351.762670   28739 tensor.cc:12] Check failed: dims == 4",
    "ERROR: failed to prepare the delegate",
    "WARNING: Attempting to use a delegate that only supports static-sized tensors",
)


@pytest.mark.parametrize("line", NATIVE_LINES_BEFORE)
def test_what_tensorflow_and_tflite_printed_is_noise(line):
    assert is_noise(line.encode())
    assert is_noise(line.encode() + b"\n")


@pytest.mark.parametrize("line", KEPT)
def test_errors_fatal_lines_and_ours_are_never_noise(line):
    assert not is_noise(line.encode())


def test_the_level_is_tensorflows():
    warning = b"W1207 05:22:01.123456   28739 loader.cc:52] a warning"
    assert is_noise(warning, 2) and not is_noise(warning, 1)
    assert not any(is_noise(line.encode(), 0) for line in NATIVE_LINES_BEFORE)  # 0: everything shows


def test_quiet_process_sets_the_level_unless_the_user_did():
    unset = {}
    quiet_process(unset)
    assert unset == {"TF_CPP_MIN_LOG_LEVEL": "2"}
    chosen = {"TF_CPP_MIN_LOG_LEVEL": "0"}
    quiet_process(chosen)
    assert chosen == {"TF_CPP_MIN_LOG_LEVEL": "0"}


def test_noise_is_dropped_and_the_rest_passed_on_in_order(capfd, monkeypatch):
    monkeypatch.delenv("TF_CPP_MIN_LOG_LEVEL", raising=False)
    before = os.fstat(2)
    child = "import os; os.write(2, b'child line\\nINFO: Created TensorFlow Lite XNNPACK delegate for CPU.\\n')"
    with filtered_stderr():
        os.write(2, f"first\n{NATIVE_LINES_BEFORE[0]}\n{NATIVE_LINES_BEFORE[1]}\n".encode())
        os.write(2, b"ours\n")
        subprocess.run([sys.executable, "-c", child], check=True)  # a child writes through the filter too
        with filtered_stderr():  # nested: one filter
            os.write(2, f"{NATIVE_LINES_BEFORE[5]}\nnested\n".encode())
        os.write(2, b"last words without a newline")
    assert capfd.readouterr().err == "first\nours\nchild line\nnested\nlast words without a newline"
    after = os.fstat(2)
    assert (after.st_dev, after.st_ino) == (before.st_dev, before.st_ino)  # fd 2 is where it was


def test_lines_pass_while_the_block_still_runs(capfd):
    """A delegate that hangs has said so first: its line is out before the block ends, a line without its newline
    too."""
    with filtered_stderr():
        os.write(2, b"copy_delegate: hanging in tflite_plugin_create_delegate (hang=create)\nprompt> ")
        deadline = time.monotonic() + 10
        seen = ""
        while "prompt> " not in seen and time.monotonic() < deadline:
            time.sleep(PARTIAL_LINE_WAIT)
            seen += capfd.readouterr().err
        assert seen == "copy_delegate: hanging in tflite_plugin_create_delegate (hang=create)\nprompt> "


def test_a_process_that_outlives_the_block_does_not_hold_it_up(capfd):
    """A child started inside keeps the pipe (multiprocessing's resource tracker does, for the process's life): the
    block ends once what was written is passed on, and what the child writes later still comes through, filtered."""
    late = ("import os, time; time.sleep(1.5); "
            "os.write(2, b'late line\\nINFO: Created TensorFlow Lite XNNPACK delegate for CPU.\\n')")
    start = time.monotonic()
    with filtered_stderr():
        os.write(2, b"ours\n")
        child = subprocess.Popen([sys.executable, "-c", late])
    took = time.monotonic() - start
    seen = capfd.readouterr().err
    child.wait(timeout=30)
    deadline = time.monotonic() + 10
    while "late line" not in seen and time.monotonic() < deadline:
        time.sleep(0.05)
        seen += capfd.readouterr().err
    assert took < 1.5 and child.returncode == 0
    assert seen == "ours\nlate line\n"


def test_level_zero_filters_nothing(capfd, monkeypatch):
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "0")
    with filtered_stderr():
        os.write(2, "".join(f"{line}\n" for line in NATIVE_LINES_BEFORE).encode())
    assert capfd.readouterr().err.splitlines() == list(NATIVE_LINES_BEFORE)
