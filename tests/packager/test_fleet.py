"""A fleet of mixed boards from one build: `--target a,b,c` converts and quantizes once, writes one
bundle per target, and every target's bundle installs offline and matches the host on its own
emulated board (its CPU, its Debian suite, its Python)."""

import json
import re
import subprocess
import sys

import numpy as np
import pytest

from packager.profiles import DEVICES_DIR, load_profile
from tests.conftest import ROOT, TARGETS, run_cli
from tests.helpers.board import Board, within_one_step

pytestmark = pytest.mark.slow
OTHERS = tuple(t for t in TARGETS if t != "rpi4")  # rpi4's first install: tests/packager/test_emulated.py


def _manifest(folder):
    return json.loads((folder / "manifest.json").read_text())


def test_one_conversion_serves_every_target(digits_fleet):
    out, stdout, stderr = digits_fleet
    manifests = {t: _manifest(out / f"digits-{t}") for t in TARGETS}
    # converted, quantized and judged once; then one bundle per target
    assert stderr.count("converting to a float model") == 1 and stderr.count("choosing the precision") == 1
    assert len({m["files"]["model.tflite"] for m in manifests.values()}) == 1
    assert {m["target"]["name"] for m in manifests.values()} == set(TARGETS)
    assert sorted(p.name for p in out.iterdir()) == sorted([f"digits-{t}" for t in TARGETS] +
                                                           [f"digits-{t}.tar.gz" for t in TARGETS])
    # only the wheels differ: trixie's Python 3.13 takes cp313 ones
    trixie = [w for w in manifests["arm64-trixie"]["files"] if w.startswith("wheels/ai_edge_litert")]
    pi = [w for w in manifests["rpi5"]["files"] if w.startswith("wheels/ai_edge_litert")]
    assert trixie == ["wheels/ai_edge_litert-2.3.0-cp313-cp313-manylinux_2_27_aarch64.whl"]
    assert pi == ["wheels/ai_edge_litert-2.3.0-cp311-cp311-manylinux_2_27_aarch64.whl"]
    # the summary table: a row per target with its CPU, Python, precision and memory against its budget
    rows = {line.split()[0]: line for line in stdout.splitlines() if line.split() and line.split()[0] in TARGETS}
    assert set(rows) == set(TARGETS)
    assert "cortex-a53" in rows["zero2w"] and "/ 256 MB" in rows["zero2w"] and "3.13" in rows["arm64-trixie"]
    assert "8/8 ops" in rows["coral-usb"] and f"shared by {len(TARGETS)} bundles" in stdout
    # memory: measured once, checked against each target's own budget
    memory = manifests["zero2w"]["memory"]
    assert 20 < memory["peak_rss_mb"] < memory["budget_mb"] == 256 and memory["memory_mb"] == 512
    assert manifests["rpi5"]["memory"]["budget_mb"] == 2048
    assert memory["runtime"] == "ai_edge_litert 2.3.0"  # measured with the target's own runtime release
    # the Edge TPU target gets its compatibility report and, without the compiler here, says so once
    assert manifests["coral-usb"]["edgetpu"]["compiled"] is None
    assert stderr.count("edgetpu_compiler is not on PATH") == 1


@pytest.mark.emulated
@pytest.mark.parametrize("target", OTHERS)
def test_every_target_installs_offline_on_its_board_and_matches_host(digits_fleet, digits, target, tmp_path):
    """Each board installs its own bundle: a fresh pip install for trixie's Python 3.13 (the only board with
    other wheels); the bookworm boards reuse the environment of those wheels, checked by install.sh."""
    out, _, _ = digits_fleet
    bundle = out / f"digits-{target}"
    profile = load_profile(target)
    x = np.load(digits / "test_x.npy")[:40]
    np.save(tmp_path / "x.npy", x)
    script = (
        'set -e; "$BUNDLE/install.sh"; grep -m1 "CPU part" /proc/cpuinfo; '
        'python3 -c "import sys; print(\'python\', *sys.version_info[:2])"; '
        '"$BUNDLE/edge-run" run "$BUNDLE" --input x.npy --output y.npz; '
        '"$BUNDLE/edge-run" bench "$BUNDLE" --runs 3 --warmup 1 --json > bench.json'
    )
    run = Board(profile).run(bundle, script, tmp_path, fresh_env=target == "arm64-trixie").check()
    assert f"CPU part\t: {profile.cpu_part}" in run.stdout
    assert f"python {profile.os['python'].replace('.', ' ')}" in run.stdout
    if target == "arm64-trixie":
        assert "installed ai-edge-litert==2.3.0 numpy==" in run.stdout
    else:
        assert "already installed" in run.stdout  # the board's environment for these wheels, checked and reused
    bench = json.loads((tmp_path / "bench.json").read_text())
    assert bench["runtime"] == "ai_edge_litert 2.3.0" and bench["model_file"] == "model.tflite"
    if "edgetpu" in profile.delegates:
        # no libedgetpu on the emulated board: the CPU model runs, and edge-run says why
        assert bench["delegate"] == "xnnpack"
        assert bench["fallback"].startswith("Edge TPU delegate not used: cannot load libedgetpu.so.1")
    else:
        assert bench["delegate"] == "xnnpack" and bench["fallback"] is None

    import edge_runtime

    with np.load(tmp_path / "y.npz") as y:
        device = {k: y[k] for k in y.files}
    within_one_step(device, edge_runtime.load(bundle).predict({"image": x}), _manifest(bundle))


def _profile(tmp_path, name: str, budget: int):
    text = (DEVICES_DIR / "zero2w.toml").read_text().replace('name = "zero2w"', f'name = "{name}"')
    path = tmp_path / f"{name}.toml"
    path.write_text(text.replace("memory_budget_mb = 256", f"memory_budget_mb = {budget}"))
    return path


def _needs(pattern: str, stderr: str) -> float:
    """The MB figure the build printed for this run (re-measured: a peak RSS moves by a MB or two)."""
    found = re.search(pattern, stderr)
    assert found, stderr[-2000:]
    return float(found.group(1))


def test_memory_budget_refuses_the_whole_build_and_warns_near_it(digits, digits_fleet, tmp_path):
    peak = _manifest(digits_fleet[0] / "digits-zero2w")["memory"]["peak_rss_mb"]
    tight, near = _profile(tmp_path, "tight", int(peak) - 10), _profile(tmp_path, "near", int(peak / 0.9))
    args = ["build", digits / "digits.onnx", "--calibration", digits / "calibration.npy", "--no-wheels"]
    refused = run_cli("packager", *args, "--target", f"rpi4,{tight}", "-o", tmp_path / "out", check=False)
    assert refused.returncode == 2
    needs = _needs(r"target tight: a run of this model needs (\d+) MB \(peak RSS, runtime and model\), over the "
                   rf"profile's budget of {int(peak) - 10} MB of its 512 MB", refused.stderr)
    assert abs(needs - peak) <= 5  # the same model measured again
    assert "memory_budget_mb" in refused.stderr  # what to do
    assert not (tmp_path / "out").exists()  # not even the target that fits: one build, all or nothing
    warned = run_cli("packager", *args, "--target", str(near), "-o", tmp_path / "out")
    needs = _needs(rf"warning: target near: a run needs (\d+) MB of its {int(peak / 0.9)} MB budget", warned.stderr)
    assert abs(needs - peak) <= 5
    assert _manifest(tmp_path / "out" / "digits-near")["memory"]["share_of_budget"] > 0.8


def test_armv7l_target_is_refused_before_any_work(digits, tmp_path):
    text = (DEVICES_DIR / "rpi4.toml").read_text().replace('arch = "aarch64"', 'arch = "armv7l"')
    (tmp_path / "pi32.toml").write_text(text.replace('name = "rpi4"', 'name = "pi32"'))
    proc = subprocess.run([sys.executable, "-m", "packager", "build", str(digits / "digits.onnx"), "--target",
                           f"rpi4,{tmp_path / 'pi32.toml'}", "--calibration", str(digits / "calibration.npy"),
                           "-o", str(tmp_path / "out")], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 2 and "[1/9]" not in proc.stderr
    assert "target pi32: 32-bit ARM (armv7l" in proc.stderr and "no TFLite runtime wheel on PyPI" in proc.stderr
    assert "--no-wheels" in proc.stderr and not (tmp_path / "out").exists()


def test_target_whose_runtime_cannot_load_the_model_is_refused_at_build_time(tmp_path):
    """tflite-runtime 2.14.0 (2023, its last release) has no int8 SQRT kernel, which an audio front-end's
    magnitude quantizes to (and no int8 LOG version 2): the build loads the model with that very release
    and refuses the target, instead of a fleet discovering it on the device."""
    from tests.fixtures.audio_models import audio_samples, kws_filterbank

    model = kws_filterbank(tmp_path / "kws.onnx")
    np.save(tmp_path / "calib.npy", audio_samples(64, seed=1)[:, 0])
    old = ROOT / "tests" / "fixtures" / "profiles" / "rpi4-tflite-runtime.toml"
    proc = run_cli("packager", "build", model, "--target", f"rpi4,{old}", "--calibration", tmp_path / "calib.npy",
                   # the int8 model (auto would ship dynamic range here: faster on x86); its LOG stays float,
                   # so it is not full integer and ships below the int8 bar by request
                   "--precision", "int8", "--accept-low-fidelity", "--no-wheels", "-o", tmp_path / "out", check=False)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert ("target rpi4-tflite-runtime: its runtime, tflite-runtime 2.14.0, cannot load this model (checked on "
            "this host with that release)") in proc.stderr
    assert "Type INT8 is unsupported by op Sqrt" in proc.stderr and "use a profile with a newer runtime" in proc.stderr
    assert "/tmp/" not in proc.stderr.split("cannot load this model")[1]  # no build-private path in the message
    assert not (tmp_path / "out").exists()
