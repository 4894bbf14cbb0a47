"""External delegates and the Edge TPU model choice, with a real delegate.

No NPU exists here, so tests/fixtures/delegate/copy_delegate.c is compiled
into a genuine TFLite external delegate (tests.helpers.delegates; the
fixtures copy_delegate and copy_delegate_aarch64 are in tests/conftest.py).
Everything the runner does with a vendor's delegate (loading it with
options, counting the nodes it took, falling back to the CPU with a reason)
is tested on it.
Tests marked slow need the built digits bundle (one RESHAPE among 8 nodes).
"""

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edge_runtime.bundle import open_bundle, sha256_file
from edge_runtime.cli import main
from edge_runtime.delegates import choose, elf_machine, parse_options
from edge_runtime.errors import UserError
from edge_runtime.interpreter import make_engine
from edge_runtime.manifest import validate
from packager.profiles import load_profile
from tests.conftest import ROOT, reseal, run_cli
from tests.helpers.serve import Server
from tests.helpers.board import Board, within_one_step
from tests.helpers.delegates import AARCH64_GCC, build_delegate

LIBC = "/lib/x86_64-linux-gnu/libc.so.6"
RPI4 = load_profile("rpi4")


def test_a_missing_compiler_fails_the_fixture_never_skips_it(tmp_path):
    with pytest.raises(pytest.fail.Exception, match="no aarch64-linux-gnu-gcc on this machine to build the test "
                                                     r"delegate: make emulator-tools installs it \(apt-get install "
                                                     r"gcc-aarch64-linux-gnu\)"):
        build_delegate(AARCH64_GCC, "gcc-aarch64-linux-gnu", tmp_path, path="/nonexistent")


@pytest.fixture(scope="session")
def reshape_model(tmp_path_factory) -> Path:
    """A small float Keras model with two RESHAPE nodes between its dense and conv layers, as TFLite."""
    import tensorflow as tf

    tf.keras.utils.set_random_seed(0)
    inp = tf.keras.Input((16,), batch_size=1)
    x = tf.keras.layers.Dense(32, activation="relu")(inp)
    x = tf.keras.layers.Reshape((4, 8, 1))(x)
    x = tf.keras.layers.Conv2D(4, 3, padding="same", activation="relu")(x)
    x = tf.keras.layers.Reshape((128,))(x)
    out = tf.keras.layers.Dense(10)(x)
    path = tmp_path_factory.mktemp("reshape") / "reshape.tflite"
    path.write_bytes(tf.lite.TFLiteConverter.from_keras_model(tf.keras.Model(inp, out)).convert())
    return path


def op_names(model_path) -> list[str]:
    from ai_edge_litert.interpreter import Interpreter

    return [op["op_name"] for op in Interpreter(model_path=str(model_path))._get_ops_details()]


def run(engine, x: np.ndarray) -> np.ndarray:
    interp = engine.interpreter
    interp.set_tensor(interp.get_input_details()[0]["index"], x)
    interp.invoke()
    return interp.get_tensor(interp.get_output_details()[0]["index"])


def external(library, *options):
    return choose(library, list(options), {})


def test_delegate_takes_exactly_the_reshape_nodes_and_matches_the_cpu(copy_delegate, reshape_model):
    ops = op_names(reshape_model)
    assert ops.count("RESHAPE") == 2 and len(ops) == 5
    engine = make_engine(str(reshape_model), 1, external(copy_delegate))
    assert (engine.delegate, engine.fallback, engine.delegate_library) == ("external", None, copy_delegate)
    assert (engine.delegate_nodes, engine.total_nodes, engine.partitions) == (2, 5, 2)
    assert "took 2 of 5 nodes in 2 partitions" in engine.summary()
    cpu = make_engine(str(reshape_model), 1, "xnnpack")
    assert (cpu.delegate_nodes, cpu.total_nodes) == (5, 5)  # XNNPACK alone takes the whole graph
    x = np.random.default_rng(0).standard_normal((1, 16)).astype(np.float32)
    for _ in range(2):  # the delegate's kernels copy on every invoke, not once
        np.testing.assert_array_equal(run(engine, x), run(cpu, x))
        x = x[:, ::-1].copy()
    # the rest of the graph still ran on XNNPACK, applied after the external delegate
    names = [op["op_name"] for op in engine.interpreter._get_ops_details()]
    assert names.count("DELEGATE") == 2 + 3  # 2 copy kernels, then XNNPACK's around them


def test_one_partition_of_two_nodes(copy_delegate, tmp_path):
    """Two RESHAPEs the partitioner puts in one delegate kernel (with two outputs): both counted, both copied."""
    import tensorflow as tf

    @tf.function(input_signature=[tf.TensorSpec([1, 16], tf.float32)])
    def twice(x):
        y = tf.squeeze(tf.expand_dims(tf.reshape(x * 2.0, [4, 4]), 0), 0)
        return y + 1.0, tf.reshape(y, [16])

    path = tmp_path / "two.tflite"
    path.write_bytes(tf.lite.TFLiteConverter.from_concrete_functions([twice.get_concrete_function()], twice).convert())
    assert sorted(op_names(path)) == ["ADD", "MUL", "RESHAPE", "RESHAPE"]
    engine = make_engine(str(path), 1, external(copy_delegate))
    assert (engine.delegate_nodes, engine.total_nodes, engine.partitions) == (2, 4, 1)
    cpu = make_engine(str(path), 1, "cpu")
    x = np.arange(16, dtype=np.float32).reshape(1, 16)
    for eng in (engine, cpu):
        eng.interpreter.set_tensor(eng.interpreter.get_input_details()[0]["index"], x)
        eng.interpreter.invoke()
    for got, want in zip(engine.interpreter.get_output_details(), cpu.interpreter.get_output_details()):
        np.testing.assert_array_equal(engine.interpreter.get_tensor(got["index"]),
                                      cpu.interpreter.get_tensor(want["index"]))


def test_options_reach_the_delegate(copy_delegate, reshape_model):
    one = make_engine(str(reshape_model), 1, external(copy_delegate, "max_nodes=1"))
    assert (one.delegate_nodes, one.partitions, one.fallback) == (1, 1, None)
    none = make_engine(str(reshape_model), 1, external(copy_delegate, "ops=SQUEEZE,EXPAND_DIMS"))
    assert (none.delegate, none.delegate_nodes, none.partitions, none.fallback) == ("external", 0, 0, None)


@pytest.mark.parametrize(("library", "options", "reason"), [
    ("missing", [], "no file at {tmp}/missing.so"),
    ("text", [], "cannot load {tmp}/text.so: file too short"),
    (LIBC, [], f"{LIBC} is not a TFLite external delegate (no tflite_plugin_create_delegate or"),
    ("copy", ["colour=red"], "refused to create its delegate with options colour=red: copy_delegate: unknown option"),
    ("copy", ["max_nodes=many"], "copy_delegate: max_nodes must be a whole number"),
    ("copy", ["fail=prepare"], "runtime could not apply it: copy_delegate: refusing to prepare (fail=prepare)"),
    # glibc itself says "No such file or directory" of a library for another architecture
    ("aarch64", [], "cannot load {path}: it is built for aarch64, 64-bit, this machine is x86_64, 64-bit; running"),
])
def test_fallback_to_xnnpack_says_why(copy_delegate, reshape_model, tmp_path, capfd, request, library, options,
                                      reason):
    (tmp_path / "text.so").write_text("not a library\n")
    path = {"missing": f"{tmp_path}/missing.so", "text": f"{tmp_path}/text.so", "copy": copy_delegate}.get(library,
                                                                                                         library)
    if library == "aarch64":
        path = request.getfixturevalue("copy_delegate_aarch64")
    engine = make_engine(str(reshape_model), 1, external(path, *options))
    assert engine.delegate == "xnnpack" and engine.delegate_library == ""
    assert engine.fallback.startswith(f"external delegate {path} not used: ")
    assert reason.format(tmp=tmp_path, path=path) in engine.fallback
    assert engine.fallback.endswith("; running reshape.tflite on the CPU with XNNPACK")
    assert "\n" not in engine.fallback
    x = np.ones((1, 16), np.float32)
    np.testing.assert_array_equal(run(engine, x), run(make_engine(str(reshape_model), 1), x))
    assert "Traceback" not in capfd.readouterr().err


def test_elf_machine_names_what_a_library_is_built_for(tmp_path):
    def elf(klass: int, order: int, machine: int) -> str:
        path = tmp_path / f"{klass}-{order}-{machine}.so"
        path.write_bytes(b"\x7fELF" + bytes([klass, order]) + bytes(12)
                         + machine.to_bytes(2, "little" if order == 1 else "big") + bytes(44))
        return str(path)

    assert elf_machine(elf(1, 1, 40)) == "arm, 32-bit"  # armv7l, as on a 32-bit Raspberry Pi OS
    assert elf_machine(elf(2, 2, 21)) == "ppc64, 64-bit"
    assert elf_machine(elf(2, 1, 9999)) == "ELF machine 9999, 64-bit"
    assert elf_machine(LIBC) == "x86_64, 64-bit"
    (tmp_path / "short").write_bytes(b"\x7fELF\x02")
    for path in (tmp_path / "short", tmp_path / "absent", tmp_path, elf(3, 1, 62)):
        assert elf_machine(str(path)) is None


def test_delegate_choice_and_options_checked():
    assert choose("/opt/npu/libvx_delegate.so", ["a=1", "b=x=y"], {}).options == (("a", "1"), ("b", "x=y"))
    assert choose("libvx_delegate.so", [], {}).name == "external"  # found through the loader's path
    assert choose(None, [], {"delegates": ["cpu"]}).name == "cpu"
    target = {"delegates": ["external"], "external_delegate": {"library": "/usr/lib/libvx.so", "options": {"a": "1"}}}
    chosen = choose(None, ["b=2", "a=3"], target)
    assert (chosen.library, chosen.options) == ("/usr/lib/libvx.so", (("a", "3"), ("b", "2")))  # the CLI wins
    assert choose("xnnpack", [], target).name == "xnnpack"
    with pytest.raises(UserError, match="--delegate-option is for an external delegate library; the delegate "
                                        "here is xnnpack"):
        choose(None, ["a=1"], {})
    with pytest.raises(UserError, match="--delegate must be one of xnnpack, cpu, edgetpu or the path"):
        choose("gpu", [], {})
    for bad in ("novalue", "=1", "a b=1", "k=line\nbreak"):
        with pytest.raises(UserError, match="--delegate-option must be KEY=VALUE"):
            parse_options([bad])


def target_manifest(**target) -> dict:
    return {"name": "m", "target": {"name": "t", "human_name": "T", **target},
            "source": {"file": "m.onnx", "sha256": "0" * 64},
            "inputs": [{"name": "x", "shape": [1, 2], "dtype": "float32", "tflite_dtype": "float32",
                        "permutation": [0, 1], "tflite_shape": [1, 2], "tflite_index": 0}],
            "outputs": [{"name": "y", "shape": [1, 2], "dtype": "float32", "tflite_dtype": "float32",
                         "permutation": [0, 1], "tflite_shape": [1, 2], "tflite_index": 1}]}


@pytest.mark.parametrize(("target", "message"), [
    ({"delegates": ["external"]}, 'target.external_delegate must be an object {"library": "/abs/path.so", '
                                  '"options": {...}} when target.delegates holds "external", found nothing'),
    ({"delegates": ["external"], "external_delegate": {"library": "libvx.so"}},
     'target.external_delegate.library must be an absolute path of at most 4096 characters'),
    ({"delegates": ["external"], "external_delegate": {"library": "/l.so", "options": {"k": 1}}},
     'target.external_delegate.options["k"] must be a string value of 0 to 1024 characters'),
    ({"delegates": ["external"], "external_delegate": {"library": "/l.so", "options": {"": "v"}}},
     'target.external_delegate.options[""] must be a string key of 1 to 1024 characters'),
    ({"delegates": ["external"], "external_delegate": {"library": "/l.so",
                                                       "options": {str(i): "v" for i in range(65)}}},
     "target.external_delegate.options must be an object of at most 64 string options"),
])
def test_manifest_external_delegate_validated(target, message):
    with pytest.raises(UserError, match="^m.json: " + message.replace("[", r"\[").replace("(", r"\(")
                       .replace("{", r"\{").replace(".", r"\.").replace("+", r"\+")):
        validate(target_manifest(**target), "m.json")
    validate(target_manifest(delegates=["external", "xnnpack"],
                             external_delegate={"library": "/usr/lib/libvx_delegate.so", "options": {"k": "v"}}), "m")


# ---------------------------------------------------------------- the bundle, through edge-run

def stop_with_log(server) -> tuple[int, str]:
    """SIGTERM, then the exit code and everything the server logged."""
    server.proc.send_signal(signal.SIGTERM)
    _, log = server.proc.communicate(timeout=30)
    return server.proc.returncode, log


def bench_json(*args) -> dict:
    return json.loads(run_cli("edge_runtime", "bench", *args, "--runs", "3", "--warmup", "1", "--json").stdout)


@pytest.mark.slow
def test_bench_and_info_report_the_delegate_share(copy_delegate, digits_bundle, digits, tmp_path):
    result = bench_json(digits_bundle, "--delegate", copy_delegate)
    assert {k: result[k] for k in ("delegate", "delegate_library", "delegate_nodes", "total_nodes", "partitions",
                                   "model_file", "fallback")} == {
        "delegate": "external", "delegate_library": copy_delegate, "delegate_nodes": 1, "total_nodes": 8,
        "partitions": 1, "model_file": "model.tflite", "fallback": None}
    text = run_cli("edge_runtime", "bench", digits_bundle, "--delegate", copy_delegate, "--runs", "2").stdout
    assert f"engine     delegate external ({copy_delegate}), took 1 of 8 nodes in 1 partition; model model.tflite" \
        in text
    info = run_cli("edge_runtime", "info", digits_bundle, "--delegate", copy_delegate,
                   "--delegate-option", "max_nodes=0").stdout
    assert f"delegate external ({copy_delegate}), took 0 of 8 nodes in 0 partitions" in info
    engine = json.loads(run_cli("edge_runtime", "info", digits_bundle, "--json").stdout)["engine"]
    # int8 SOFTMAX stays on the builtin kernels
    assert (engine["delegate"], engine["delegate_nodes"], engine["total_nodes"]) == ("xnnpack", 7, 8)
    # same scores through the delegate as on the CPU, bit for bit
    np.save(tmp_path / "x.npy", np.load(digits / "test_x.npy")[:8])
    for name, extra in (("cpu", []), ("copy", ["--delegate", copy_delegate])):
        run_cli("edge_runtime", "run", digits_bundle, "--input", tmp_path / "x.npy", "--output",
                tmp_path / f"{name}.npz", *extra)
    with np.load(tmp_path / "cpu.npz") as cpu, np.load(tmp_path / "copy.npz") as copy:
        np.testing.assert_array_equal(copy["scores"], cpu["scores"])


@pytest.mark.slow
@pytest.mark.parametrize(("library", "options", "reason"), [
    ("missing", [], "no file at {tmp}/missing.so"),
    ("text", [], "cannot load {tmp}/text.so: file too short"),
    (LIBC, [], "is not a TFLite external delegate"),
    ("copy", ["--delegate-option", "colour=red"], "copy_delegate: unknown option"),
])
def test_bench_and_info_report_the_fallback(copy_delegate, digits_bundle, tmp_path, library, options, reason):
    (tmp_path / "text.so").write_text("not a library\n")
    path = {"missing": f"{tmp_path}/missing.so", "text": f"{tmp_path}/text.so", "copy": copy_delegate}.get(library,
                                                                                                         library)
    result = bench_json(digits_bundle, "--delegate", path, *options)
    assert result["delegate"] == "xnnpack" and result["model_file"] == "model.tflite"
    assert reason.format(tmp=tmp_path) in result["fallback"]
    proc = run_cli("edge_runtime", "info", digits_bundle, "--delegate", path, *options)
    assert f"fallback   external delegate {path} not used: " in proc.stdout
    assert reason.format(tmp=tmp_path) in proc.stdout and "Traceback" not in proc.stderr


@pytest.mark.slow
def test_delegate_flag_mistakes_are_one_line_errors(capsys, digits_bundle, copy_delegate):
    for args, message in ((["--delegate-option", "max_nodes=1"], "--delegate-option is for an external delegate"),
                          (["--delegate", copy_delegate, "--delegate-option", "max_nodes"],
                           "--delegate-option must be KEY=VALUE"),
                          (["--delegate", "npu"], "--delegate must be one of xnnpack, cpu, edgetpu or the path")):
        for command in ("info", "bench"):
            code = main([command, str(digits_bundle), *args])
            err = capsys.readouterr().err
            assert code == 2 and err.startswith("error: ") and len(err.strip().splitlines()) == 1, err
            assert message in err


@pytest.mark.slow
def test_manifest_names_the_external_delegate(copy_delegate, digits_bundle, tmp_path):
    bundle = tmp_path / "bundle"
    shutil.copytree(digits_bundle, bundle)
    _, manifest = open_bundle(bundle)
    target = dict(manifest["target"], delegates=["external", "xnnpack"],
                  external_delegate={"library": copy_delegate, "options": {"max_nodes": "0"}})
    reseal(bundle, dict(manifest, target=target))
    # outside the system library folders: loaded only when the device's user names it
    refused = bench_json(bundle)
    assert refused["delegate"] == "xnnpack" and refused["fallback"].startswith(
        f"external delegate {copy_delegate} not used: refused: the bundle names {copy_delegate}, outside the "
        "system library folders (/lib, /lib64, /usr/lib, /usr/lib64, /usr/local/lib); to load it, name it "
        f"yourself with --delegate {copy_delegate}; running model.tflite"), refused["fallback"]
    result = bench_json(bundle, "--delegate", copy_delegate)  # the manifest's options for its library apply
    assert (result["delegate"], result["delegate_library"], result["delegate_nodes"]) == ("external", copy_delegate, 0)
    result = bench_json(bundle, "--delegate", copy_delegate, "--delegate-option", "max_nodes=1")  # the command
    assert (result["delegate"], result["delegate_nodes"]) == ("external", 1)  # line's options win
    assert bench_json(bundle, "--delegate", "xnnpack")["delegate"] == "xnnpack"


@pytest.mark.slow
def test_server_reports_the_delegate_and_the_fallback(copy_delegate, digits_bundle):
    server = Server(digits_bundle, "--delegate", copy_delegate)
    try:
        text = server.metrics()
    finally:
        _, log = stop_with_log(server)
    assert f"edge-run serve: delegate external ({copy_delegate}), took 1 of 8 nodes in 1 partition" in log
    assert (f'edge_run_delegate_info{{delegate="external",fallback="false",library="{copy_delegate}",'
            f'model_file="model.tflite",reason=""}} 1.0') in text
    assert 'edge_run_delegate_nodes{delegate="external"} 1.0\n' in text and "edge_run_model_nodes 8.0\n" in text
    assert 'edge_run_delegate_partitions{delegate="external"} 1.0\n' in text
    server = Server(digits_bundle, "--delegate", copy_delegate, "--delegate-option", "fail=prepare",
                    "--workers", "2")
    try:
        text = server.metrics()
    finally:
        _, log = stop_with_log(server)
    assert 'edge_run_delegate_info{delegate="xnnpack",fallback="true",library="",model_file="model.tflite",' \
           f'reason="external delegate {copy_delegate} not used: the ai_edge_litert runtime could not apply it: ' \
           "copy_delegate: refusing to prepare (fail=prepare)" in text
    assert "edge-run serve: delegate xnnpack, took 7 of 8 nodes in 1 partition; model model.tflite" in log
    assert f"edge-run serve: fallback: external delegate {copy_delegate} not used" in log
    assert "Traceback" not in log


# ---------------------------------------------------------------- Edge TPU model selection

@pytest.mark.slow
def test_edgetpu_model_only_with_its_delegate(digits_bundle, tmp_path):
    """No libedgetpu here: model_edgetpu.tflite (an op only the TPU runs) must not run on the CPU."""
    bundle = tmp_path / "bundle"
    shutil.copytree(digits_bundle, bundle)
    _, manifest = open_bundle(bundle)
    # a stand-in the CPU could never run: if it were chosen, loading would fail
    (bundle / "model_edgetpu.tflite").write_bytes(b"TFL3 compiled for the Edge TPU")
    files = dict(manifest["files"], **{"model_edgetpu.tflite": sha256_file(bundle / "model_edgetpu.tflite")})
    sizes = dict(manifest["sizes"], **{"model_edgetpu.tflite": (bundle / "model_edgetpu.tflite").stat().st_size})
    reseal(bundle, dict(manifest, files=files, sizes=sizes, target=dict(manifest["target"], delegates=["edgetpu"])))
    result = bench_json(bundle)
    assert (result["delegate"], result["model_file"]) == ("xnnpack", "model.tflite")
    assert result["fallback"].startswith("Edge TPU delegate not used: cannot load libedgetpu.so.1: ")
    assert result["fallback"].endswith("; running model.tflite on the CPU with XNNPACK")
    info = run_cli("edge_runtime", "info", bundle).stdout
    assert "engine     ai_edge_litert" in info and "delegate xnnpack, took 7 of 8 nodes" in info
    assert "fallback   Edge TPU delegate not used: cannot load libedgetpu.so.1" in info
    server = Server(bundle)
    try:
        text = server.metrics()
    finally:
        _, log = stop_with_log(server)
    assert 'edge_run_delegate_info{delegate="xnnpack",fallback="true",library="",model_file="model.tflite",' \
           'reason="Edge TPU delegate not used: cannot load libedgetpu.so.1' in text
    assert "edge-run serve: fallback: Edge TPU delegate not used" in log


# ---------------------------------------------------------------- on the emulated Raspberry Pi 4

@pytest.mark.emulated
@pytest.mark.slow
def test_cross_compiled_delegate_on_the_emulated_rpi4(copy_delegate, copy_delegate_aarch64, digits, digits_bundle,
                                                      tmp_path):
    """The aarch64 build of the delegate runs the digits RESHAPE on the emulated board with the device's own
    XNNPACK scores; a library that is absent, or built for x86-64, leaves the model on XNNPACK with the reason.
    Everything in one emulated run (each costs tens of seconds)."""
    shutil.copy2(copy_delegate_aarch64, tmp_path / "libcopy_delegate.so")
    shutil.copy2(copy_delegate, tmp_path / "libcopy_delegate_x86_64.so")
    np.save(tmp_path / "x.npy", np.load(digits / "test_x.npy")[:40])
    vx = "/usr/lib/libvx_delegate.so"
    script = (
        'set -e; "$BUNDLE/install.sh" >/dev/null; E="$BUNDLE/edge-run"; D="$PWD/libcopy_delegate.so"; '
        'bench() { "$E" bench "$BUNDLE" --runs 2 --warmup 1 --json "$@"; }; '
        'bench --delegate "$D" --delegate-option max_nodes=1 >external.json 2>external.err; '
        '"$E" run "$BUNDLE" --input x.npy --output external.npz --delegate "$D" --delegate-option max_nodes=1 '
        '2>>external.err; '
        '"$E" run "$BUNDLE" --input x.npy --output xnnpack.npz 2>xnnpack.err; '
        f'bench --delegate {vx} >vx.json 2>vx.err; '
        'bench --delegate "$PWD/libcopy_delegate_x86_64.so" >x86_64.json 2>x86_64.err; uname -m'
    )
    proc = Board("rpi4").run(digits_bundle, script, tmp_path).proc
    errs = {p.stem: p.read_text() for p in tmp_path.glob("*.err")}
    assert proc.returncode == 0, proc.stderr[-3000:] + json.dumps(errs)[-3000:]
    assert proc.stdout.strip().splitlines()[-1] == "aarch64"
    for name, err in errs.items():
        assert "Traceback" not in err, f"{name}: {err}"

    library = str(tmp_path / "libcopy_delegate.so")
    external = json.loads((tmp_path / "external.json").read_text())
    assert {k: external[k] for k in ("delegate", "delegate_library", "delegate_nodes", "total_nodes", "partitions",
                                     "model_file", "fallback")} == {
        "delegate": "external", "delegate_library": library, "delegate_nodes": 1, "total_nodes": 8,
        "partitions": 1, "model_file": "model.tflite", "fallback": None}
    assert external["runtime"].startswith("ai_edge_litert 2.3.0")
    # the delegate only copies bytes: the device's XNNPACK scores, bit for bit
    with np.load(tmp_path / "external.npz") as ext, np.load(tmp_path / "xnnpack.npz") as xnn:
        np.testing.assert_array_equal(ext["scores"], xnn["scores"])
        device = {"scores": ext["scores"]}
    import edge_runtime

    host = edge_runtime.load(digits_bundle).predict({"image": np.load(tmp_path / "x.npy")})
    within_one_step(device, host, json.loads((digits_bundle / "manifest.json").read_text()))

    x86 = str(tmp_path / "libcopy_delegate_x86_64.so")
    for name, path, reason in (("vx", vx, f"no file at {vx}"),
                               ("x86_64", x86, f"cannot load {x86}: it is built for x86_64, 64-bit, "
                                               "this machine is aarch64, 64-bit")):
        result = json.loads((tmp_path / f"{name}.json").read_text())
        assert (result["delegate"], result["delegate_library"], result["model_file"]) == (
            "xnnpack", None, "model.tflite")
        assert (result["delegate_nodes"], result["total_nodes"]) == (7, 8)  # int8 SOFTMAX stays on builtin kernels
        assert result["fallback"] == (f"external delegate {path} not used: {reason}; "
                                      "running model.tflite on the CPU with XNNPACK"), result["fallback"]


# ---------------------------------------------------------------- native code from a bundle's folder

# A library whose loading alone runs its code (an ELF constructor): whether the runner dlopened it shows as a file.
CONSTRUCTOR = r"""
#include <stdio.h>
#include <stdlib.h>
__attribute__((constructor)) static void loaded(void) {
    const char *marker = getenv("EDGE_RUN_TEST_MARKER");
    FILE *f = marker ? fopen(marker, "w") : NULL;
    if (f) { fputs("the bundle's native code ran\n", f); fclose(f); }
}
"""


def constructor_library(out: Path) -> Path:
    gcc = shutil.which("gcc")
    if not gcc:
        pytest.fail("no gcc on this machine to build the test library: make emulator-tools installs it")
    (out.parent / "loaded.c").write_text(CONSTRUCTOR)
    subprocess.run([gcc, "-shared", "-fPIC", "-o", str(out), str(out.parent / "loaded.c")], check=True)
    (out.parent / "loaded.c").unlink()
    return out


@pytest.mark.slow
def test_no_native_code_from_a_bundle_folder(digits_bundle, tmp_path):
    """An unsigned bundle's manifest names a delegate library by an absolute path that resolves into the bundle
    (/proc/self/cwd/...); `edge-run info` run in the bundle's folder dlopened it, running the bundle's code.
    Refused with the reason, before any dlopen."""
    bundle = tmp_path / "bundle"
    shutil.copytree(digits_bundle, bundle)
    _, manifest = open_bundle(bundle)
    library = constructor_library(bundle / "libfast.so")
    files = dict(manifest["files"], **{"libfast.so": sha256_file(library)})
    sizes = dict(manifest["sizes"], **{"libfast.so": library.stat().st_size})
    target = dict(manifest["target"], delegates=["external"],
                  external_delegate={"library": "/proc/self/cwd/libfast.so", "options": {}})
    reseal(bundle, dict(manifest, files=files, sizes=sizes, target=target))
    marker = tmp_path / "ran"
    # -P: this checkout's runner (PYTHONPATH), not the bundle's own copy in the current folder
    proc = subprocess.run([sys.executable, "-P", "-m", "edge_runtime", "info", "."], cwd=bundle, capture_output=True,
                          text=True, env={**os.environ, "PYTHONPATH": str(ROOT), "EDGE_RUN_TEST_MARKER": str(marker)})
    assert not marker.exists(), "the runner loaded a library from the bundle's folder"
    assert proc.returncode == 0, proc.stderr
    assert (f"fallback   external delegate /proc/self/cwd/libfast.so not used: refused: it resolves to "
            f"{bundle.resolve()}/libfast.so, inside the bundle") in proc.stdout, proc.stdout


def test_no_native_code_from_a_bundle_folder_nor_from_a_writable_library(copy_delegate, tmp_path):
    """Where a library may come from, judged on its resolved path before any dlopen (library_problem)."""
    from edge_runtime.delegates import library_problem

    bundle = tmp_path / "bundle"
    bundle.mkdir()
    inside = bundle / "lib.so"
    shutil.copy2(copy_delegate, inside)
    (tmp_path / "link.so").symlink_to(inside)
    assert library_problem(str(tmp_path / "link.so"), str(bundle), named=True) == (
        f"refused: it resolves to {inside}, inside the bundle; a bundle never brings native code")
    assert "outside the system library folders" in library_problem(copy_delegate, str(bundle), named=False)
    assert library_problem(copy_delegate, str(bundle), named=True) is None  # the device's user named it
    assert library_problem(LIBC, str(bundle), named=False) is None  # a system library
    writable = tmp_path / "writable.so"
    shutil.copy2(copy_delegate, writable)
    for mode, who in ((0o757, "others"), (0o775, "its group")):
        writable.chmod(mode)
        assert library_problem(str(writable), str(bundle), named=True) == f"refused: {writable} may be written by {who}"
    open_folder = tmp_path / "open"
    open_folder.mkdir()
    shutil.copy2(copy_delegate, open_folder / "lib.so")
    open_folder.chmod(0o777)
    assert "its folder is world-writable" in library_problem(str(open_folder / "lib.so"), str(bundle), named=True)
    open_folder.chmod(0o1777)  # sticky, as /tmp: only the owner may replace the file
    assert library_problem(str(open_folder / "lib.so"), str(bundle), named=True) is None
