"""Configuration inputs fixed at build time.

Some models take a small integer input that selects a code path rather than
carrying data: Silero VAD's sample rate ``sr`` chooses, through an ``If``,
between its 8 kHz and 16 kHz networks. A converter cannot turn such control
flow into a TFLite graph, but the choice is the user's: when every sample
they calibrate with holds the same value, that value is the deployment's.
It is written into the graph as a constant (the ``If`` then folds away),
recorded in the manifest under ``fixed_inputs``, and the runner refuses any
other value with a clear error instead of computing the wrong branch.

A configuration input is a few integers (or flags) per sample, at most
``MAX_ELEMENTS`` (``is_config_input``, the one test of it): calibration does
not ask it to vary, and only such inputs, and only in graphs with control
flow, are candidates to be fixed: data inputs, states and ids are never
frozen, however constant the calibration set happens to be.
"""

from __future__ import annotations

import numpy as np

from edge_runtime.manifest import MAX_FIXED_VALUES

# The most values the runner accepts for a fixed input: the build never fixes what a bundle could not carry.
MAX_ELEMENTS = MAX_FIXED_VALUES
CONTROL_FLOW = ("If", "Loop")


def is_config_input(dtype, values_per_sample: int) -> bool:
    """Whether an input of this dtype with this many values per sample is configuration, not data."""
    return np.dtype(dtype).kind in "biu" and values_per_sample <= MAX_ELEMENTS


def constant_config_inputs(proto, specs, *sample_sets: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """{input name: value} for each integer configuration input constant over every sample."""
    if not any(n.op_type in CONTROL_FLOW for n in proto.graph.node):
        return {}
    fixed = {}
    for spec in specs:
        arrays = [s[spec.name] for s in sample_sets if spec.name in s]
        # a flag stays an input: the manifest's fixed_inputs hold integers
        if not arrays or np.dtype(spec.dtype).kind == "b" or not is_config_input(spec.dtype, arrays[0][0].size):
            continue
        first = arrays[0][0]
        if all(np.array_equal(sample, first) for array in arrays for sample in array):
            fixed[spec.name] = np.asarray(first)
    return fixed


def freeze(proto, fixed: dict[str, np.ndarray]) -> list[str]:
    """Replace each fixed graph input by a constant initializer of its value."""
    from onnx import numpy_helper

    if not fixed:
        return []
    keep = [i for i in proto.graph.input if i.name not in fixed]
    del proto.graph.input[:]
    proto.graph.input.extend(keep)
    for name, value in fixed.items():
        proto.graph.initializer.append(numpy_helper.from_array(value, name))
    return [f"input '{name}' is {value.tolist()} in every sample: fixed at that value" for name, value in fixed.items()]
