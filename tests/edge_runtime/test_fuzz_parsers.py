"""Fuzzing what the runner parses from others (issue 12): .npy/.npz bodies, image files and the manifest.

Three classes, each by property (hypothesis) and by example:
  * arrays from anyone: arbitrary bytes, mutated real .npy/.npz files, pickled
    members, headers declaring huge shapes, zip bombs and zip members that lie
    about their size are read within the budget or refused with a UserError;
    never another exception, never an allocation beyond the budget;
  * image files from anyone: mutated real files, through both readers (the
    runner's frames, the host's calibration folders; edge_runtime.images is
    their one door), give pixels or a UserError, never another exception;
  * hand-edited manifests (a resealed manifest passes the digest): a malformed
    field is refused naming it, and whatever passes is described, measured and
    fed without a crash.

Bounded for `make test`: every property runs a fixed, derandomized set of
FUZZ_EXAMPLES cases (300, about a second each; no example database is
written). EDGEPACK_FUZZ_EXAMPLES=20000 runs a deeper, randomized search.
"""

from __future__ import annotations

import copy
import io
import json
import math
import os
import re
import struct
import tracemalloc
import warnings
import zipfile

import numpy as np
import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from edge_runtime.arrays import MAX_MEMBERS, load_arrays
from edge_runtime.describe import describe
from edge_runtime.errors import UserError
from edge_runtime.manifest import validate
from edge_runtime.metrics import model_fidelity
from edge_runtime.model import fixed_inputs, precision_report
from edge_runtime.tensors import feeds_from_numpy, from_tflite, input_budget, to_tflite
from tests.fixtures.image_files import png_with_a_garbage_chunk

FUZZ_EXAMPLES = int(os.environ.get("EDGEPACK_FUZZ_EXAMPLES", "300"))
fuzz = settings(max_examples=FUZZ_EXAMPLES, deadline=None, derandomize="EDGEPACK_FUZZ_EXAMPLES" not in os.environ,
                database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
BUDGET = 64 * 1024  # bytes of arrays the fuzzed reads may return
OVERHEAD = 512 * 1024  # what reading takes besides the arrays and the input (zipfile, numpy's header parse)


# --- arrays from anyone ---

NUMERIC = ["bool", "int8", "uint8", "int16", "int32", "int64", "float16", "float32", "float64", ">f4", "complex64"]
DESCRS = ["'<f4'", "'|b1'", "'<i8'", "'>f8'", "'|O'", "'<U8'", "'|S4'", "'|V8'", "[('a', '<f4')]", "[('o', '|O')]",
          "('<f4', (2, 2))", "'a'", "'<f99'", "1", "None", "'<f4' + 'x'"]
DIMS = st.one_of(st.integers(0, 6), st.sampled_from([-1, 2 ** 20, 2 ** 31, 2 ** 40, 2 ** 63, 2 ** 64 + 1, 10 ** 30]))
DIGITS_INPUTS = [{"name": "image", "shape": [1, 1, 8, 8], "dtype": "float32"}]


def npy_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array)
    return buf.getvalue()


def npy_with_header(descr: str, fortran: bool, shape: tuple, data: bytes, version: int = 1) -> bytes:
    """An .npy whose header says whatever we like (np.save would write none of the bad ones)."""
    header = f"{{'descr': {descr}, 'fortran_order': {fortran}, 'shape': {shape!r}, }}".encode("latin1")
    header += b" " * (-(len(header) + 11) % 64) + b"\n"
    length = struct.pack("<H" if version == 1 else "<I", len(header))
    return b"\x93NUMPY" + bytes([version, 0]) + length + header + data


def read(data: bytes, budget: int = BUDGET):
    """load_arrays on ``data``: (the arrays or the UserError, peak bytes allocated while reading)."""
    source = io.BytesIO(data)
    tracemalloc.start()
    try:
        result = load_arrays(source, budget, "the body")
    except UserError as exc:
        result = exc
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return result, peak


@st.composite
def arrays(draw) -> np.ndarray:
    shape = tuple(draw(st.lists(st.integers(0, 5), max_size=3)))
    array = np.arange(math.prod(shape)).astype(draw(st.sampled_from(NUMERIC))).reshape(shape)
    return np.asfortranarray(array) if draw(st.booleans()) else array


@st.composite
def forged_npy(draw) -> bytes:
    shape = tuple(draw(st.lists(DIMS, max_size=4)))
    return npy_with_header(draw(st.sampled_from(DESCRS)), draw(st.booleans()), shape,
                           draw(st.binary(max_size=256)), draw(st.sampled_from([1, 2])))


@st.composite
def npz_bytes(draw) -> bytes:
    """A zip of real or forged .npy members under odd names, stored or deflated, its directory then edited."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", draw(st.sampled_from([zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED]))) as archive:
        for _ in range(draw(st.integers(0, 3))):
            name = draw(st.sampled_from(["x.npy", "y.npy", "notes.txt", "../up.npy", "x"]))
            payload = draw(st.one_of(arrays().map(npy_bytes), forged_npy(), st.binary(max_size=64)))
            with warnings.catch_warnings():  # a second member of one name is the point here
                warnings.simplefilter("ignore")
                archive.writestr(zipfile.ZipInfo(name), payload, compress_type=archive.compression)
    data = bytearray(buf.getvalue())
    entries = [m.start() for m in re.finditer(b"PK\x01\x02", data)]
    for _ in range(draw(st.integers(0, 2)) if entries else 0):
        # a lie in the central directory: flags, method, compressed size or size of one member
        offset, form = draw(st.sampled_from([(8, "<H"), (10, "<H"), (20, "<L"), (24, "<L")]))
        most = 0xFFFF if form == "<H" else 0xFFFFFFFF
        value = draw(st.one_of(st.sampled_from([0, 1, 8, 12, 99, most, most // 2]), st.integers(0, most)))
        at = draw(st.sampled_from(entries)) + offset
        data[at:at + struct.calcsize(form)] = struct.pack(form, value)
    return bytes(data)


@st.composite
def mutated(draw, files) -> bytes:
    """A file with a few bytes changed, inserted, deleted, or a 32-bit field overwritten, or cut short."""
    data = bytearray(draw(files))
    for _ in range(draw(st.integers(0, 3))):
        if not data:
            break
        at = draw(st.integers(0, len(data) - 1))
        how = draw(st.sampled_from(["byte", "insert", "delete", "truncate", "u32"]))
        if how == "byte":
            data[at] = draw(st.integers(0, 255))
        elif how == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif how == "delete":
            del data[at:at + draw(st.integers(1, 16))]
        elif how == "truncate":
            del data[at:]
        else:
            data[at:at + 4] = struct.pack("<L", draw(st.sampled_from([0, 2 ** 20, 2 ** 31, 0xFFFFFFFF])))
    return bytes(data)


ANY_FILE = st.one_of(st.binary(max_size=512), mutated(arrays().map(npy_bytes)), mutated(forged_npy()),
                     mutated(npz_bytes()))


@fuzz
@given(ANY_FILE)
def test_arrays_from_anyone_are_read_within_the_budget_or_refused(data):
    result, peak = read(data)
    assert peak <= BUDGET + len(data) + OVERHEAD, f"{peak:,} bytes allocated reading {len(data)}"
    event("refused" if isinstance(result, UserError) else "read")
    if isinstance(result, UserError):
        assert result.message and "\n" not in str(result)
        return
    arrays = [result] if isinstance(result, np.ndarray) else list(result.values())
    assert sum(a.nbytes for a in arrays) <= BUDGET
    assert all(a.dtype.kind in "biufc" and not a.dtype.fields for a in arrays)


def test_real_npy_and_npz_files_read_back_exactly():
    a, b = np.arange(12, dtype=np.float32).reshape(3, 4), np.asfortranarray(np.eye(3, dtype=">i2"))
    np.testing.assert_array_equal(read(npy_bytes(a))[0], a)
    for save in (np.savez, np.savez_compressed):
        buf = io.BytesIO()
        save(buf, a=a, b=b)
        arrays, _ = read(buf.getvalue())
        assert arrays.files == ["a", "b"] and arrays["b"].dtype == np.dtype(">i2")
        np.testing.assert_array_equal(arrays["a"], a)
        np.testing.assert_array_equal(arrays["b"], b)


def test_a_pickled_member_inside_a_calibration_npz_is_never_loaded(tmp_path):
    from packager.calibration import load_calibration
    from packager.onnx_model import TensorSpec

    path = tmp_path / "calibration.npz"
    np.savez(path, x=np.zeros((12, 4), np.float32), y=np.array([{"os.system": "rm -rf ~"}] * 12, dtype=object))
    specs = [TensorSpec("x", [1, 4], "float32"), TensorSpec("y", [1, 4], "float32")]
    with pytest.raises(UserError, match=r"member 'y\.npy' .*pickled Python objects.*never loads pickles") as err:
        load_calibration(str(path), specs, {"x": [1, 4], "y": [1, 4]})
    assert str(path) in err.value.message
    with pytest.raises(UserError, match="without pickles"):  # the runner's reader is the same
        feeds_from_numpy(path, [{"name": "x", "shape": [1, 4]}, {"name": "y", "shape": [1, 4]}], "in.npz")


def test_an_npy_declaring_a_huge_shape_is_refused_before_allocation(tmp_path):
    huge = npy_with_header("'<f8'", False, (1_000_000, 1_000_000, 1000), b"\0" * 64)
    result, peak = read(huge, budget=4 * 1024 ** 3)  # even the generous calibration limit
    assert isinstance(result, UserError) and "shape (1000000, 1000000, 1000) (8,000,000,000,000,000 bytes)" in str(
        result) and peak < 64 * 1024
    # within the limit but not in the file: refused before the gigabyte is allocated
    short = npy_with_header("'<f4'", False, (250_000_000,), b"\0" * 64)
    result, peak = read(short, budget=4 * 1024 ** 3)
    assert isinstance(result, UserError) and "truncated" in result.message and peak < 64 * 1024
    # through the build's calibration reader
    from packager.calibration import load_calibration
    from packager.onnx_model import TensorSpec

    (tmp_path / "c.npy").write_bytes(huge)
    with pytest.raises(UserError, match="over the limit of 4,294,967,296 bytes"):
        load_calibration(str(tmp_path / "c.npy"), [TensorSpec("x", [1, 4], "float32")], {"x": [1, 4]})


def test_a_zip_bomb_member_is_refused_before_it_is_inflated():
    buf = io.BytesIO()  # 100 MB of zeros deflate to 100 KB
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as archive:
        with archive.open("image.npy", "w", force_zip64=True) as member:
            member.write(npy_with_header("'<f4'", False, (25_000_000, 1, 1), b""))
            for _ in range(100):
                member.write(bytes(1_000_000))
    bomb = buf.getvalue()
    result, peak = read(bomb, budget=input_budget(DIGITS_INPUTS))
    assert len(bomb) < 200_000 and isinstance(result, UserError), result
    assert "declares 100,000,128 bytes once inflated: over the limit of 589,824 bytes" in result.message
    assert peak < 2 * len(bomb) + OVERHEAD  # nothing was inflated


def test_a_zip_member_lying_about_its_size_is_refused():
    buf = io.BytesIO()
    np.savez(buf, image=np.zeros((4, 1, 8, 8), np.float32))
    honest = buf.getvalue()
    size_field = honest.rfind(b"PK\x01\x02") + 24
    for lie, says in ((0xFFFFFFFF, "more than its compression can hold"), (100, "CRC")):
        forged = honest[:size_field] + struct.pack("<L", lie) + honest[size_field + 4:]
        result, _ = read(forged)
        assert isinstance(result, UserError) and says in result.message, result


def test_an_npz_of_many_members_is_refused_before_zipfile_reads_its_directory():
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as archive:
        for i in range(MAX_MEMBERS + 1):
            archive.writestr(f"{i}.npy", b"")
    result, _ = read(buf.getvalue())
    assert isinstance(result, UserError) and f"declares {MAX_MEMBERS + 1} members" in result.message


def test_feeds_are_bounded_by_what_the_model_inputs_need():
    budget = input_budget(DIGITS_INPUTS)  # 1024 samples of 64 values at 8 bytes, and room for fixed inputs
    assert budget == 1024 * 64 * 8 + 64 * 1024
    batch, flood = io.BytesIO(), io.BytesIO()
    np.savez_compressed(batch, image=np.zeros((450, 1, 8, 8), np.float32))  # a held-out split: fine
    np.savez_compressed(flood, image=np.zeros((20_000, 1, 8, 8), np.float32))  # 5 MB from a 10 KB body
    batch.seek(0)
    flood.seek(0)
    assert feeds_from_numpy(batch, DIGITS_INPUTS, "the npz body")["image"].shape == (450, 1, 8, 8)
    with pytest.raises(UserError, match="the npz body declares .* over the limit of 589,824 bytes of arrays. "
                                        "split the samples across several files or requests"):
        feeds_from_numpy(flood, DIGITS_INPUTS, "the npz body")
    # a big input gets a few samples' worth, however big; the cap holds otherwise
    detector = [{"name": "x", "shape": [1, 3, 640, 640]}]
    assert input_budget(detector) == 64 * 1024 * 1024 + 64 * 1024
    assert input_budget([{"name": "x", "shape": [1, 3, 4096, 4096]}]) == 4 * 3 * 4096 * 4096 * 8 + 64 * 1024


# --- image files from anyone (edge-run run on a camera-frame bundle; a calibration or evaluation folder) ---

FRAME = {"name": "x", "shape": [1, 12, 16, 3], "dtype": "uint8", "format": "image-uint8"}
NEVER_DECODED = (b"II*\x00", b"MM\x00*", b"GIF8")  # TIFF and GIF


def frame_pixels() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (12, 16, 3), dtype=np.uint8)


def image_files() -> list[bytes]:
    """Real files of the frame's size in the formats edge-run reads, and in two it must refuse (TIFF, GIF)."""
    from PIL import Image

    files = []
    for form, mode in [("PNG", "RGB"), ("PNG", "P"), ("PNG", "L"), ("PNG", "RGBA"), ("JPEG", "RGB"), ("BMP", "RGB"),
                       ("PPM", "RGB"), ("WEBP", "RGB"), ("TIFF", "RGB"), ("GIF", "P")]:
        buffer = io.BytesIO()
        Image.fromarray(frame_pixels()).convert(mode).save(buffer, form)
        files.append(buffer.getvalue())
    return files


def read_or_refuse(reader: str, read):
    """What ``read()`` returns, or None when it refuses with a one-line UserError; any other exception fails."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Pillow warns of odd metadata; what counts is the outcome
            result = read()
    except UserError as exc:
        event(f"{reader}: refused")
        assert exc.message and "\n" not in str(exc)
        return None
    event(f"{reader}: read")
    return result


@fuzz
@given(mutated(st.sampled_from(image_files())))
@example(png_with_a_garbage_chunk(frame_pixels()))  # raised SyntaxError through both readers
def test_image_files_from_anyone_give_pixels_or_a_one_line_refusal(tmp_path_factory, data):
    """Whatever the bytes, each reader of image files (edge-run run's frame, the build's calibration folder, which
    `edgepack evaluate` reads too) gives pixels of the shape it promises or a UserError, never another exception;
    a frame of another size is refused from the header, a format outside the five never decoded."""
    from types import SimpleNamespace

    from edge_runtime.files import read_image
    from packager.calibration import load_image_folder
    from packager.onnx_model import TensorSpec

    folder = tmp_path_factory.mktemp("image")
    path = folder / "frame.png"
    path.write_bytes(data)
    frame = read_or_refuse("edge-run", lambda: read_image(path, SimpleNamespace(name="cam", inputs=[FRAME]))["x"])
    if frame is not None:
        assert frame.shape == (12, 16, 3) and frame.dtype == np.uint8
    spec = TensorSpec("x", [1, 3, 12, 16], "float32")
    sample = read_or_refuse("calibration", lambda: load_image_folder(folder, spec, spec.shape, None, None, raw=True))
    if sample is not None:  # resized to the input, whatever size the file has
        assert sample.shape == (1, 3, 12, 16) and sample.dtype == np.float32
        assert 0 <= sample.min() and sample.max() <= 255
    if frame is not None or sample is not None:
        assert not data.startswith(NEVER_DECODED)


# --- hand-edited manifests ---

# Snapshots of manifests edgepack build wrote (issue-13 corpus builds), trimmed to what the runner reads and a
# little more; `files`/`integrity` are the verifier's. The slow test below checks a fresh build's manifest too.
SWITCH = {'schema_version': 1,
 'name': 'switch-rpi4',
 'target': {'name': 'rpi4',
            'human_name': 'Raspberry Pi 4 Model B (Raspberry Pi OS 64-bit, bookworm)',
            'default_threads': 4,
            'delegates': ['xnnpack']},
 'created_at': '2026-11-23T14:53:03+00:00',
 'edgepack_version': '0.1.0',
 'source': {'file': 'switch.onnx', 'sha256': '647f32b429386deb6a4b30026de19866c0d7a8d04915155dbff49223b6362106'},
 'preparation': {'changes': ["config_inputs: input 'sr' is 16000 in every sample: fixed at that value",
                             'branches: 1 If node(s) with a constant condition replaced by the branch taken (then)',
                             'simplify: 5 -> 2 nodes (Constant x1, Equal x1, Identity x1 folded or fused)'],
                 'nodes_before': 4,
                 'nodes_after': 2,
                 'seconds': 0.22},
 'conversion': {'strategy': 'onnx2tf',
                'attempts': [{'strategy': 'onnx2tf',
                              'ok': True,
                              'reason': '',
                              'ops': [],
                              'seconds': 5.8,
                              'lowering': []}]},
 'inputs': [{'name': 'x',
             'shape': [1, 16],
             'dtype': 'float32',
             'permutation': [0, 1],
             'tflite_index': 0,
             'tflite_shape': [1, 16],
             'tflite_dtype': 'int8',
             'scale': 0.027315523475408554,
             'zero_point': 15}],
 'outputs': [{'name': 'y',
              'shape': [1, 4],
              'dtype': 'float32',
              'permutation': [0, 1],
              'tflite_index': 2,
              'tflite_shape': [1, 4],
              'tflite_dtype': 'int8',
              'scale': 0.07090504467487335,
              'zero_point': 9}],
 'fixed_inputs': [{'name': 'sr', 'shape': [], 'dtype': 'int64', 'value': 16000}],
 'precision': {'requested': 'auto',
               'chosen': 'int8',
               'step': 'int8, TFLite converter',
               'why': 'int8, TFLite converter is the first step that holds the bar; below it: int8, min/max',
               'bar': {'min_cosine': 0.99,
                       'min_top1': 0.99,
                       'min_f1': 0.95,
                       'min_channel_cosine': 0.9,
                       'min_positives': 20},
               'meets_bar': True,
               'accepted_low_fidelity': False,
               'shortfalls': [],
               'steps': [{'step': 'int8, TFLite converter',
                          'precision': 'int8',
                          'cosine': 0.9998543919839977,
                          'channel_cosine': None,
                          'top1': 1.0,
                          'f1': None,
                          'meets_bar': True,
                          'shortfalls': [],
                          'float_ops': 0,
                          'size': 1120,
                          'latency_ms': 0.001,
                          'xnnpack_partitions': 1,
                          'seconds': 0.3,
                          'note': ''}]},
 'fidelity': {'samples': 12,
              'outputs': {'y': {'cosine': 0.9998543919839977,
                                'min_cosine': 0.9987692157788087,
                                'max_abs_error': 0.9988021850585938,
                                'mean_abs_error': 0.05192803013293693,
                                'top1_agreement': 1.0,
                                'top5_agreement': None,
                                'worst_channel': None,
                                'score_map': None}}},
 'ops': {'total': 1, 'counts': {'FULLY_CONNECTED': {'int8': 1}}, 'float_ops': []}}
DETECTOR = {'schema_version': 1,
 'name': 'yolov8_dynamic-rpi4',
 'target': {'name': 'rpi4',
            'human_name': 'Raspberry Pi 4 Model B (Raspberry Pi OS 64-bit, bookworm)',
            'default_threads': 4,
            'delegates': ['xnnpack']},
 'created_at': '2026-11-23T15:00:42+00:00',
 'edgepack_version': '0.1.0',
 'source': {'file': 'yolov8_dynamic.onnx',
            'sha256': '1cfb6e13629d27b3f2be154bfff06e8b52ba62761e9de34cd4a1f038ef667492'},
 'preparation': {'changes': ['simplify: 147 -> 53 nodes (Unsqueeze x25, Concat x16, Gather x10, Shape x7, Range '
                             'x6, Cast x6 and 6 more op types folded or fused)'],
                 'nodes_before': 147,
                 'nodes_after': 52,
                 'seconds': 0.29},
 'conversion': {'strategy': 'onnx2tf',
                'attempts': [{'strategy': 'onnx2tf',
                              'ok': True,
                              'reason': '',
                              'ops': [],
                              'seconds': 7.4,
                              'lowering': []}]},
 'inputs': [{'name': 'x',
             'shape': [1, 3, 160, 160],
             'dtype': 'float32',
             'permutation': [0, 2, 3, 1],
             'tflite_index': 0,
             'tflite_shape': [1, 160, 160, 3],
             'tflite_dtype': 'float32',
             'scale': 0.0,
             'zero_point': 0}],
 'outputs': [{'name': 'y',
              'shape': [1, 7, 525],
              'dtype': 'float32',
              'permutation': [0, 1, 2],
              'tflite_index': 103,
              'tflite_shape': [1, 7, 525],
              'tflite_dtype': 'float32',
              'scale': 0.0,
              'zero_point': 0}],
 'fixed_inputs': [],
 'precision': {'requested': 'auto',
               'chosen': 'dynamic',
               'step': 'dynamic range',
               'why': 'dynamic range is the first step that holds the bar; below it',
               'bar': {'min_cosine': 0.99,
                       'min_top1': 0.99,
                       'min_f1': 0.95,
                       'min_channel_cosine': 0.9,
                       'min_positives': 20},
               'meets_bar': True,
               'accepted_low_fidelity': False,
               'shortfalls': [],
               'steps': [{'step': 'int8, min/max',
                          'precision': 'int8',
                          'cosine': 0.9999686157385345,
                          'channel_cosine': 0.0,
                          'top1': None,
                          'f1': 0.0,
                          'meets_bar': False,
                          'shortfalls': ['y: worst channel 4 (axis 1) cosine 0.000 < 0.9',
                                         'y: score map F1 0.000 < 0.95 (above 0.5: precision 0.000, recall 0.000)'],
                          'float_ops': 0,
                          'size': 54536,
                          'latency_ms': 0.139,
                          'xnnpack_partitions': 2,
                          'seconds': 0.9,
                          'note': ''},
                         {'step': 'dynamic range',
                          'precision': 'dynamic',
                          'cosine': 0.9999999315733308,
                          'channel_cosine': 0.9999988672239465,
                          'top1': None,
                          'f1': 0.9928125294246885,
                          'meets_bar': True,
                          'shortfalls': [],
                          'float_ops': 0,
                          'size': 52040,
                          'latency_ms': 0.465,
                          'xnnpack_partitions': 1,
                          'seconds': 0.0,
                          'note': ''}]},
 'fidelity': {'samples': 24,
              'outputs': {'y': {'cosine': 0.9999999315733308,
                                'min_cosine': 0.9999999044119693,
                                'max_abs_error': 0.520599365234375,
                                'mean_abs_error': 0.02152566701004835,
                                'top1_agreement': None,
                                'top5_agreement': None,
                                'worst_channel': {'axis': 1, 'index': 6, 'cosine': 0.9999988672239465},
                                'score_map': {'threshold': 0.5,
                                              'positives': 15958,
                                              'model_positives': 15903,
                                              'precision': 0.9945293340879079,
                                              'recall': 0.9911016418097506,
                                              'f1': 0.9928125294246885,
                                              'topk_agreement': 0.99125}}}},
 'ops': {'total': 50,
         'counts': {'ADD': {'float32': 2}, 'CONCATENATION': {'float32': 6}},
         'float_ops': [{'index': 0, 'type': 'PAD', 'output': 'model_13/tf.compat.v1.pad/Pad'},
                       {'index': 1, 'type': 'CONV_2D', 'output': 'model_13/tf.nn.relu/Relu'}]}}
REAL = {"switch": SWITCH, "detector": DETECTOR}
DELETE = object()
GARBAGE = st.recursive(
    st.none() | st.booleans() | st.integers(-2 ** 70, 2 ** 70) | st.floats() | st.text(max_size=8)
    | st.sampled_from([0, -1, -3, 2 ** 31, 2 ** 63, 2 ** 64, 1e-300, 1e300, "", "\n", "\x1b[2J", "float32", "int8",
                       "object", "xnnpack", "x"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8)
EXTREMES = [-1, 0, 1, 2 ** 31, 2 ** 63, -(2 ** 63) - 1, 10 ** 30, 1e308, -0.0, float("nan"), float("inf"), 1e-45]


def edited(manifest: dict, path: tuple, value) -> dict:
    """A copy of ``manifest`` with the field at ``path`` set to ``value`` (or deleted)."""
    manifest = copy.deepcopy(manifest)
    parent = manifest
    for key in path[:-1]:
        parent = parent[key]
    if value is DELETE:
        del parent[path[-1]]
    else:
        parent[path[-1]] = value
    return manifest


def slots(value):
    """Every (container, key) inside a JSON value: where a hand can edit."""
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, child in list(items):
        yield value, key
        yield from slots(child)


def swapped(value):
    """The same content as another JSON type."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return {str(i): item for i, item in enumerate(value)}
    return list(value.values()) if isinstance(value, dict) else 0


@st.composite
def hand_edited(draw, manifest: dict) -> dict:
    """A manifest with 1-3 fields deleted, swapped to another type, made extreme, or replaced by garbage."""
    manifest = copy.deepcopy(manifest)
    for _ in range(draw(st.integers(1, 3))):
        how = draw(st.sampled_from(["delete", "swap", "extreme", "garbage"]))
        places = [(parent, key) for parent, key in slots(manifest)
                  if how != "extreme" or isinstance(parent[key], (int, float))]
        if not places:
            continue
        parent, key = draw(st.sampled_from(places))
        if how == "delete":
            del parent[key]
        elif how == "swap":
            parent[key] = swapped(parent[key])
        else:
            parent[key] = draw(st.sampled_from(EXTREMES) if how == "extreme" else GARBAGE)
    return manifest


def runner_reads(manifest: dict) -> None:
    """What the runner does with a manifest that passed: info, /metrics, fixed inputs, tensor I/O."""
    describe(manifest)
    model_fidelity(manifest)
    precision_report(manifest)
    fixed_inputs(manifest)
    input_budget(manifest["inputs"])
    for spec in manifest["inputs"]:
        if math.prod(spec["shape"]) <= 4096:
            assert to_tflite(np.zeros(spec["shape"], spec["dtype"]), spec).shape == tuple(spec["tflite_shape"])
    for spec in manifest["outputs"]:
        if math.prod(spec["shape"]) <= 4096:
            assert from_tflite(np.zeros(spec["tflite_shape"], spec["tflite_dtype"]), spec).shape == tuple(spec["shape"])


def refused_naming_a_field_or_read(manifest: dict) -> None:
    try:
        validate(manifest, "manifest.json")
    except UserError as exc:
        event("refused")
        assert re.fullmatch(r"manifest\.json: \S.* must be .+, found .+", exc.message), exc.message
        assert "\n" not in str(exc)
        return
    event("passed, then read")
    runner_reads(manifest)


@pytest.mark.parametrize("name", REAL)
def test_real_manifests_pass_and_are_read(name):
    validate(REAL[name], "manifest.json")
    runner_reads(REAL[name])


@pytest.mark.parametrize(("path", "value", "message"), [
    (("inputs", 0, "shape", 1), -3, "inputs[0].shape[1] must be a positive integer, found -3"),
    (("inputs", 0, "shape"), [1, 2 ** 40], "inputs[0].shape[1] must be a positive integer, found 1099511627776"),
    (("inputs", 0, "dtype"), "object", "inputs[0].dtype must be one of bool, uint8, uint16, uint32, uint64, int8,"),
    (("inputs", 0, "permutation"), [0, 0], "inputs[0].permutation must be a permutation of 0..1"),
    (("inputs", 0, "tflite_shape"), [16, 1],
     "inputs[0].tflite_shape must be shape [1, 16] in the permutation's order, [1, 16], found [16, 1]"),
    (("inputs", 0, "scale"), 0, "inputs[0].scale must be positive: float32 values are carried as int8, found 0"),
    (("inputs", 0, "scale"), 1e37, "inputs[0].scale must be 0 (not quantized) or a positive number from 1.18e-38 to"),
    (("outputs", 0, "zero_point"), 300, "outputs[0].zero_point must be an integer from -128 to 127, found 300"),
    (("outputs", 0, "zero_point"), DELETE, "outputs[0].zero_point must be present, found nothing (the field is missing)"),
    (("outputs", 0, "tflite_index"), "2", 'outputs[0].tflite_index must be an integer from 0 to 2,147,483,647, found "2"'),
    (("target", "default_threads"), True, "target.default_threads must be an integer from 1 to 1,024, found true"),
    (("target", "delegates"), ["gpu"], 'target.delegates[0] must be one of xnnpack, edgetpu, nnapi, cpu, external, found "gpu"'),
    (("fixed_inputs", 0, "value"), [1] * 5, "fixed_inputs[0].value must be an integer or a list of 1 to 4 integers"),
    (("fixed_inputs", 0, "value"), 2 ** 70, "fixed_inputs[0].value must be an integer from -9,223,372,036,854,775,808"),
    (("fixed_inputs", 0, "name"), "x", 'fixed_inputs[0].name must be a name that is not also in inputs, found "x"'),
    (("name",), DELETE, "name must be present, found nothing (the field is missing)"),
    (("name",), "switch\nerror: forged", "name must be a name of 1 to 256 characters without control characters"),
    (("source", "sha256"), "abc", 'source.sha256 must be 64 lowercase hex digits, found "abc"'),
    (("inputs",), [], "inputs must be a list of at least one tensor, found []"),
    (("outputs",), {"y": 1}, 'outputs must be a list of at most 256 items, found {"y": 1}'),
    (("fidelity", "outputs", "y", "cosine"), "high", 'fidelity.outputs["y"].cosine must be a number, found "high"'),
    (("fidelity", "outputs", "y", "worst_channel"), {"cosine": 0.9, "index": -1, "axis": 1},
     'fidelity.outputs["y"].worst_channel.index must be an integer from 0 to'),
    (("ops", "counts"), [], "ops.counts must be an object, found []"),
    (("precision", "steps", 0, "cosine"), "high", 'precision.steps[0].cosine must be a number or null, found "high"'),
    (("precision", "why"), "ok\x1b[2J", "precision.why must be a string without control characters"),
    (("conversion",), None, "conversion must be an object, found null"),
    (("preparation", "changes"), "one", 'preparation.changes must be a list of at most 10,000 items, found "one"'),
])
def test_a_malformed_manifest_field_is_refused_naming_it(path, value, message):
    with pytest.raises(UserError) as err:
        validate(edited(SWITCH, path, value), "manifest.json")
    assert err.value.message.startswith(f"manifest.json: {message}"), err.value.message
    assert err.value.hint.startswith("rebuild the bundle with edgepack build")


def test_two_inputs_of_one_name_are_refused():
    manifest = edited(DETECTOR, ("inputs",), [DETECTOR["inputs"][0]] * 2)
    with pytest.raises(UserError, match=r'^manifest\.json: inputs\[1\]\.name must be unique among the inputs, found "x"'):
        validate(manifest, "manifest.json")


@fuzz
@given(st.sampled_from(list(REAL)).flatmap(lambda name: hand_edited(REAL[name])))
def test_a_hand_edited_manifest_is_refused_naming_a_field_or_read_without_a_crash(manifest):
    refused_naming_a_field_or_read(manifest)


@pytest.mark.slow
def test_a_freshly_built_manifest_passes_and_survives_hand_edits(digits_bundle):
    manifest = json.loads((digits_bundle / "manifest.json").read_text())
    validate(manifest, "manifest.json")
    runner_reads(manifest)

    @settings(fuzz, max_examples=100)
    @given(hand_edited(manifest))
    def check(edited_manifest):
        refused_naming_a_field_or_read(edited_manifest)

    check()


# --- HTTP requests from anyone (edge-run serve): headers, and requests pipelined on one connection ---

NUMERIC_HEADER = st.one_of(st.sampled_from([b"0", b"12", b"999999999999999", b"\xb2", b"1\xb9", b"\xef\xbc\x91", b"+1",
                                            b"-1", b"1_0", b"0x1f", b" 7 ", b"", b"1e3"]),
                           st.binary(max_size=8).filter(lambda v: b"\r" not in v and b"\n" not in v))
HEADER_NAMES = ["Content-Type", "Inference-Header-Content-Length", "Authorization", "Origin", "Host", "Connection",
                "Expect", "Transfer-Encoding", "X-Any"]


def live_body(binary: bool, outputs: int) -> tuple[bytes, bytes | None]:
    """A valid infer body for the stand-in model -> (body, Inference-Header-Content-Length or None)."""
    x = np.full((1, 1, 8, 8), 0.25, np.float32)
    item = {"name": "image", "datatype": "FP32", "shape": [1, 1, 8, 8]}
    head = {"inputs": [{**item, "parameters": {"binary_data_size": x.nbytes}} if binary else
                       {**item, "data": x.ravel().tolist()}], "outputs": [{"name": "scores"}] * outputs}
    text = json.dumps(head).encode()
    return (text + x.tobytes(), str(len(text)).encode()) if binary else (text, None)


@st.composite
def http_request(draw) -> bytes:
    """One request: valid, or with a header, a number, the framing or the body changed."""
    from tests.helpers.live_server import INFER

    body, split = live_body(draw(st.booleans()), draw(st.integers(0, 2)))
    method = draw(st.sampled_from([b"POST", b"GET", b"PUT", b"P\xb2ST"]))  # no HEAD: its reply has no body to frame
    path = draw(st.sampled_from([INFER.encode(), b"/metrics", b"/v2/health/live", b"/v2/models/x/infer",
                                 INFER.encode() + b"/", b"/v2/models/%2e%2e/infer", b"/\xff"]))
    headers = [(b"Host", b"127.0.0.1"), (b"Content-Type", b"application/json")]
    if split is not None:
        headers.append((b"Inference-Header-Content-Length", split))
    for _ in range(draw(st.integers(0, 3))):
        name = draw(st.sampled_from(HEADER_NAMES)).encode()
        headers = [h for h in headers if h[0] != name or draw(st.booleans())] + [(name, draw(NUMERIC_HEADER))]
    if draw(st.booleans()):
        body = draw(mutated(st.just(body)))
    length = draw(st.one_of(st.just(str(len(body)).encode()), NUMERIC_HEADER))
    return (method + b" " + path + b" HTTP/1.1\r\n" + b"".join(k + b": " + v + b"\r\n" for k, v in headers)
            + b"Content-Length: " + length + b"\r\n\r\n" + body)


@pytest.fixture(scope="module")
def live_server():
    from tests.helpers.live_server import LiveServer

    server = LiveServer()
    yield server
    server.stop()


@fuzz
@given(st.lists(http_request(), min_size=1, max_size=4))
def test_pipelined_requests_from_anyone_never_get_a_5xx(live_server, requests):
    """Requests as above, pipelined on one connection, then the client's half-close: every reply is a 2xx or a
    4xx (the server may close after a refusal), and the server goes on answering others."""
    import socket

    with live_server.connect() as s:
        s.sendall(b"".join(requests))
        s.shutdown(socket.SHUT_WR)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    from tests.helpers.live_server import split_replies

    found, rest = split_replies(data)
    codes = [int(raw.split(b" ", 2)[1]) for raw in found]
    assert not rest, rest[:200]
    event(f"{len(codes)} of {len(requests)} answered")
    assert codes and all(code < 500 for code in codes), codes
    assert live_server.request("GET", "/v2/health/live")[0] == 200


@fuzz
@given(st.lists(st.tuples(st.sampled_from(HEADER_NAMES), NUMERIC_HEADER), max_size=4), st.booleans())
def test_header_values_from_anyone_give_an_answer_or_a_4xx(headers, binary):
    """Any header values (non-ASCII digits among them) through the handlers, no socket: a reply, never a 5xx."""
    from edge_runtime.metrics import Metrics
    from edge_runtime.server import Access, Limits, Request, Service, handle
    from tests.helpers.live_server import INFER, NAME, stand_in_models

    service = Service(lambda: stand_in_models(1, 0.0), Limits(), NAME, Metrics({"model": NAME}))
    service.warm_up()
    body, split = live_body(binary, 1)
    given_headers = {"host": ["localhost"], "content-type": ["application/json"]}
    if split is not None:
        given_headers["inference-header-content-length"] = [split.decode()]
    for name, value in headers:
        given_headers.setdefault(name.lower(), []).insert(0, value.decode("latin-1"))
    reply = handle(service, Access(), Request("POST", INFER, given_headers, body))
    event(str(reply.code))
    assert reply.code < 500, reply.body
