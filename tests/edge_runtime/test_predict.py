"""predict() writes into the interpreter's buffers; its outputs must be the old copy-based path's, bit for bit."""

from __future__ import annotations

import numpy as np
import pytest

import edge_runtime
from edge_runtime.errors import UserError
from edge_runtime.tensors import from_tflite, to_tflite


def reference(model, feeds: dict[str, np.ndarray], stacked: bool) -> dict[str, np.ndarray]:
    """The path predict() took before: to_tflite, set_tensor, invoke, get_tensor, from_tflite, then join."""
    (spec,) = model.inputs
    x = feeds[spec["name"]]
    samples = x if stacked else x.reshape(-1, *spec["shape"])
    outs = [[] for _ in model.outputs]
    for sample in samples:
        for slot, ospec, y in zip(outs, model.outputs, model.invoke([to_tflite(sample, spec)])):
            slot.append(from_tflite(y, ospec))
    join = np.stack if stacked else np.concatenate
    return {o["name"]: join(slot) for o, slot in zip(model.outputs, outs)}


def assert_identical(got: dict, want: dict) -> None:
    assert got.keys() == want.keys()
    for name in want:
        assert got[name].dtype == want[name].dtype and got[name].shape == want[name].shape
        assert got[name].tobytes() == want[name].tobytes(), name


@pytest.fixture(scope="module")
def digits_model(digits_bundle):
    return edge_runtime.load(digits_bundle, threads=1)


@pytest.mark.parametrize("case", ["one", "batch axis", "stacked", "float64", "out of range", "strided"])
def test_predict_is_the_old_path_bit_for_bit(digits, digits_model, case):
    x = np.load(digits / "test_x.npy")[:7].astype(np.float32)  # (7, 1, 8, 8)
    stacked = False
    if case == "one":
        x = x[:1]
    elif case == "stacked":
        x, stacked = x[:, None], True  # (7, 1, 1, 8, 8)
    elif case == "float64":
        x = x.astype(np.float64) * 1.0001
    elif case == "out of range":
        x = x * 50 - 20  # saturates the int8 input at both ends
    elif case == "strided":
        x = np.ascontiguousarray(np.swapaxes(x, 2, 3)).swapaxes(2, 3)  # same values, non-contiguous
    feeds = {"image": x}
    assert_identical(digits_model.predict(feeds), reference(digits_model, feeds, stacked))


def test_outputs_are_the_callers_own(digits, digits_model):
    """The results are fresh arrays: a later call must not change an earlier result."""
    x = np.load(digits / "test_x.npy")[:2].astype(np.float32)
    first = digits_model.predict({"image": x[:1]})
    kept = {k: v.copy() for k, v in first.items()}
    digits_model.predict({"image": x[1:2]})
    assert_identical(first, kept)


def test_nan_and_inf_refused(digits, digits_model):
    x = np.load(digits / "test_x.npy")[:3].astype(np.float32)
    for bad in (np.nan, np.inf, -np.inf):
        y = x.copy()
        y[2, 0, 3, 4] = bad
        with pytest.raises(UserError, match="NaN or Inf"):
            digits_model.predict({"image": y})
    huge = np.full((7, 1, 8, 8), 1e36, np.float32)  # finite values whose float32 sum overflows: still accepted
    with np.errstate(over="ignore"):
        assert not np.isfinite(huge.sum())
    out = digits_model.predict({"image": huge})
    assert all(np.isfinite(v).all() for v in out.values())


class _Buffers:
    """interpreter.tensor(index)() as the runtime gives it: a view of the input's own buffer."""

    def __init__(self, shape, dtype):
        self.buffer = np.zeros(shape, dtype)

    def tensor(self, _index):
        return lambda: self.buffer


@pytest.mark.parametrize("tflite_dtype, zero_point", [("int8", -13), ("int8", 127), ("uint8", 0), ("uint8", 200)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16])
def test_input_writer_is_to_tflite_bit_for_bit_across_a_layout_change(tflite_dtype, zero_point, dtype):
    """NCHW -> NHWC with 3 channels (an image model's input): every value, in range or saturating."""
    from edge_runtime.tensors import InputWriter

    spec = {"name": "x", "tflite_index": 0, "shape": [1, 3, 20, 24], "dtype": "float32", "permutation": [0, 2, 3, 1],
            "tflite_shape": [1, 20, 24, 3], "tflite_dtype": tflite_dtype, "scale": 0.01817644014954567,
            "zero_point": zero_point}
    rng = np.random.default_rng(zero_point + 128)
    x = (rng.standard_normal(spec["shape"]) * 3).astype(dtype)
    x.flat[:6] = [0.0, -0.0, 1e30 if dtype != np.float16 else 6e4, -6e4, 0.5 * spec["scale"], -1.5 * spec["scale"]]
    for sample in (x, np.ascontiguousarray(x.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)):  # contiguous, strided
        buffers = _Buffers(spec["tflite_shape"], tflite_dtype)
        InputWriter(spec).write(buffers, sample)
        want = to_tflite(sample, spec)
        assert buffers.buffer.dtype == want.dtype and buffers.buffer.tobytes() == want.tobytes()
