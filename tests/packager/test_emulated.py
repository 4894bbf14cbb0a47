"""The emulated Raspberry Pi 4: bundles install offline from their own wheels
and give the host's outputs, under QEMU with the Pi's CPU model."""

import dataclasses
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from edge_runtime.errors import UserError
from packager import emulator, rootfs
from packager.profiles import DEVICES_DIR, load_profile
from tests.conftest import ROOT, run_cli
from tests.helpers.board import Board, within_one_step

pytestmark = [pytest.mark.emulated, pytest.mark.slow]
RPI4 = load_profile("rpi4")


def test_digits_installs_offline_runs_and_matches_host(digits, digits_bundle, tmp_path):
    x = np.load(digits / "test_x.npy")[:40]
    np.save(tmp_path / "x.npy", x)
    # Installed at a folder whose name is shell syntax: every script quotes it (issue 12).
    script = (
        'set -e; W="$PWD/we ird \\$(touch PWNED); a|b&c \'q\'"; cp -r "$BUNDLE" "$W"; BUNDLE=$W; '
        '"$BUNDLE/install.sh"; "$BUNDLE/install.sh"; '
        'if python3 -c "import socket; socket.create_connection((\\"1.1.1.1\\", 53), timeout=3)" 2>/dev/null; '
        'then echo NETWORK-REACHABLE; fi; '
        '"$BUNDLE/.venv/bin/edge-run" run "$BUNDLE" --input x.npy --output y.npz; '
        'EDGE_RUN_UNIT_DIR="$PWD/units" "$BUNDLE/install.sh" --service 2>service.err || echo SERVICE-REFUSED; '
        '"$BUNDLE/edge-run" bench "$BUNDLE" --runs 5 --warmup 1 --json > bench.json; uname -m'
    )
    out = Board("rpi4").run(digits_bundle, script, tmp_path, fresh_env=True).check().stdout
    assert not list(tmp_path.rglob("PWNED"))
    assert "SERVICE-REFUSED" in out and "--service needs the bundle, venv and --prefix at plain paths" in (
        tmp_path / "service.err").read_text()
    assert not (tmp_path / "units").exists()
    assert "installed ai-edge-litert==2.3.0 numpy==" in out
    assert "already installed" in out  # install.sh is idempotent
    assert "NETWORK-REACHABLE" not in out
    assert out.strip().splitlines()[-1] == "aarch64"
    bench = json.loads((tmp_path / "bench.json").read_text())
    assert bench["runtime"].startswith("ai_edge_litert 2.3.0") and bench["delegate"] == "xnnpack"

    manifest = json.loads((digits_bundle / "manifest.json").read_text())
    with np.load(tmp_path / "y.npz") as y:
        device = {k: y[k] for k in y.files}
    import edge_runtime

    host = edge_runtime.load(digits_bundle).predict({"image": x})
    within_one_step(device, host, manifest)


def test_ppocr_camera_frames_through_edgepack_emulate_match_host(ppocr_camera, tmp_path):
    """The real classifier built for camera frames (--input-format image-uint8): on the emulated Pi it installs
    Pillow from its own wheels (--fresh-env: a real pip install), reads a PNG line as it is and answers as the
    host does."""
    dist = ppocr_camera / "dist"
    archive = dist / "ch_ppocr_mobile_v2.0_cls_infer-rpi4.tar.gz"
    manifest = json.loads((dist / "ch_ppocr_mobile_v2.0_cls_infer-rpi4" / "manifest.json").read_text())
    assert list((dist / "ch_ppocr_mobile_v2.0_cls_infer-rpi4" / "wheels").glob("pillow-*.whl"))
    shutil.copy(ppocr_camera / "held_out" / "line_0001.png", tmp_path / "line.png")
    proc = subprocess.run(
        [sys.executable, "-m", "packager", "emulate", archive, "--fresh-env", "--", "run", "--input", "line.png",
         "--output", "y_device.npz"],
        cwd=tmp_path, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "timings are not device timings" in proc.stderr
    run_cli("edge_runtime", "run", archive, "--input", tmp_path / "line.png", "--output", tmp_path / "y_host.npz")
    with np.load(tmp_path / "y_device.npz") as d, np.load(tmp_path / "y_host.npz") as h:
        device, host = {k: d[k] for k in d.files}, {k: h[k] for k in h.files}
    within_one_step(device, host, manifest)


def test_install_refuses_other_python(digits, tmp_path):
    profile = (DEVICES_DIR / "rpi4.toml").read_text().replace('python = "3.11"', 'python = "3.12"')
    (tmp_path / "rpi4-py312.toml").write_text(profile.replace('name = "rpi4"', 'name = "py312"'))
    run_cli("packager", "build", digits / "digits.onnx", "--target", tmp_path / "rpi4-py312.toml",
            "--calibration", digits / "calibration.npy", "--no-wheels", "-o", tmp_path / "dist")
    proc = Board("rpi4").run(tmp_path / "dist" / "digits-py312", '"$BUNDLE/install.sh"', tmp_path, fresh_env=True).proc
    assert proc.returncode == 1
    assert "wheels are for Python 3.12" in proc.stderr and "is Python 3.11" in proc.stderr


def test_install_refuses_bundle_missing_a_wheel(digits_bundle, tmp_path):
    broken = tmp_path / "bundle"
    shutil.copytree(digits_bundle, broken)
    (numpy_wheel,) = broken.glob("wheels/numpy-*.whl")
    numpy_wheel.unlink()
    proc = Board("rpi4").run(broken, '"$BUNDLE/install.sh"', tmp_path, fresh_env=True).proc
    assert proc.returncode == 1
    assert f"file(s) missing: wheels/{numpy_wheel.name}" in proc.stderr


def test_install_refuses_other_architecture_on_host(digits_bundle, tmp_path):
    copy = tmp_path / "bundle"
    shutil.copytree(digits_bundle, copy)
    proc = subprocess.run(["sh", str(copy / "install.sh")], capture_output=True, text=True)
    assert proc.returncode == 1
    assert "wheels are for aarch64, this machine is x86_64" in proc.stderr
    assert not (copy / ".venv").exists()


def test_emulate_target_without_emulator(digits_bundle, tmp_path, capsys):
    from packager.cli import main

    armv7 = (DEVICES_DIR / "rpi4.toml").read_text().replace('arch = "aarch64"', 'arch = "armv7l"')
    (tmp_path / "pi-armv7.toml").write_text(armv7)
    code = main(["emulate", str(digits_bundle), "--target", str(tmp_path / "pi-armv7.toml"), "--", "info"])
    assert code == 2
    err = capsys.readouterr().err
    assert "no emulator for target 'rpi4' (arch armv7l)" in err and "aarch64" in err


def test_corrupt_cached_rootfs_is_rebuilt_offline(tmp_path):
    """A truncated interpreter in a copy of the cached tree is found and the tree rebuilt, with no network at all:
    mmdebstrap takes the packages the tree was first built from, kept beside it (emulator.local_mirror)."""
    good = emulator.rootfs_dir(RPI4)
    assert emulator.check_rootfs(good, emulator._spec(RPI4)) is None
    cache = tmp_path / "cache"
    copy = cache / good.relative_to(emulator.cache_root())
    copy.parent.mkdir(parents=True)
    shutil.copytree(good, copy, symlinks=True)
    python = copy / "root" / "usr" / "bin" / "python3.11"
    python.write_bytes(python.read_bytes()[:1000])  # a truncated interpreter
    env = {**os.environ, "EDGEPACK_CACHE": str(cache), "EDGEPACK_DEBIAN_MIRROR": emulator.local_mirror(RPI4),
           "PYTHONPATH": str(ROOT)}
    offline = ["unshare", "--net", "--map-root-user"] if os.getuid() else ["unshare", "--net"]
    proc = subprocess.run([*offline, sys.executable, "-m", "packager.emulator", "rpi4"], env=env, cwd=ROOT,
                          capture_output=True, text=True, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "(usr/bin/python3.11 was modified); rebuilding" in proc.stderr
    assert "built bookworm/arm64 root filesystem" in proc.stderr
    assert len((copy / "root" / "usr" / "bin" / "python3.11").read_bytes()) > 1_000_000
    assert emulator.check_rootfs(copy, emulator._spec(RPI4)) is None


def test_a_tree_in_use_is_not_a_corrupt_tree(tmp_path):
    """proot -q keeps an empty, mode-000 /etc/ld.so.preload in the tree while a run lasts: another run's check
    (a fleet of boards, tests side by side) must not take it for corruption and rebuild the tree under them."""
    cache, spec = tmp_path / "tree", emulator._spec(RPI4)
    (cache / "root" / "etc").mkdir(parents=True)
    (cache / "root" / "etc" / "hostname").write_text("edgepack-emulated\n")
    (cache / emulator.CHECKSUMS).write_text(json.dumps({"spec": spec, "files": rootfs._tree_checksums(cache / "root")}))
    glue = cache / "root" / "etc" / "ld.so.preload"
    glue.touch()
    glue.chmod(0)
    assert emulator.check_rootfs(cache, spec) is None
    glue.chmod(0o644)  # a real file someone left there is a change
    assert emulator.check_rootfs(cache, spec) == "etc/ld.so.preload appeared"
    glue.write_text("/usr/lib/evil.so\n")
    glue.chmod(0)
    assert emulator.check_rootfs(cache, spec) == "etc/ld.so.preload appeared"


def test_profile_cpu_is_what_qemu_emulates():
    info = emulator.cpuinfo(RPI4)
    assert info.count("processor\t:") == 4 and "CPU part\t: 0xd08" in info and "asimddp" not in info
    with pytest.raises(UserError, match="no emulator"):
        emulator.emulator_for(dataclasses.replace(RPI4, arch="armv7l"))
    a76 = emulator.cpuinfo(load_profile("rpi5"))  # the profile's own part and features
    assert "CPU part\t: 0xd0b" in a76 and ("Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp "
                                          "asimdhp cpuid asimdrdm lrcpc dcpop asimddp\n") in a76


def test_a_profile_without_its_cpus_part_and_features_cannot_be_emulated():
    unknown = dataclasses.replace(RPI4, cpu_part=None, cpu_features=None, source="mine.toml")
    with pytest.raises(UserError, match="device profile mine.toml does not give 'cpu_part' and 'cpu_features'") as err:
        emulator.cpuinfo(unknown)
    assert "--target" in err.value.hint


CLIENT = '''
import json, sys, time, urllib.request
base = "http://127.0.0.1:8099"
for _ in range(600):
    try:
        if urllib.request.urlopen(base + "/v2/health/ready", timeout=2).status == 200:
            break
    except OSError:
        time.sleep(0.5)
x = json.load(open("request.json"))
req = urllib.request.Request(base + "/v2/models/digits-rpi4/infer", data=json.dumps(x).encode(),
                             headers={"Content-Type": "application/json"})
out = json.load(urllib.request.urlopen(req, timeout=60))
metrics = urllib.request.urlopen(base + "/metrics", timeout=10).read().decode()
json.dump({"out": out, "metrics": metrics}, open("result.json", "w"))
'''


def test_serve_on_the_emulated_device(digits, digits_bundle, tmp_path):
    x = np.load(digits / "test_x.npy")[:1]
    (tmp_path / "client.py").write_text(CLIENT)
    (tmp_path / "request.json").write_text(json.dumps(
        {"inputs": [{"name": "image", "shape": list(x.shape), "datatype": "FP32", "data": x.ravel().tolist()}]}))
    script = (
        'set -e; "$BUNDLE/install.sh" >/dev/null; '
        'EDGE_RUN_UNIT_DIR="$PWD/units" "$BUNDLE/install.sh" --service --port 8099; '
        '"$BUNDLE/edge-run" serve "$BUNDLE" --port 8099 2>serve.log & pid=$!; '
        '"$BUNDLE/.venv/bin/python" client.py; kill -TERM $pid; code=0; wait $pid || code=$?; echo "serve-exit=$code"'
    )
    run = Board("rpi4").run(digits_bundle, script, tmp_path)
    proc, guest_bundle = run.proc, run.bundle
    log = tmp_path / "serve.log"
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:] + (log.read_text() if log.exists() else "")
    assert "serve-exit=0" in proc.stdout
    result = json.loads((tmp_path / "result.json").read_text())
    device = np.array(result["out"]["outputs"][0]["data"], np.float32).reshape(1, 10)
    import edge_runtime

    host = edge_runtime.load(digits_bundle).predict({"image": x})
    manifest = json.loads((digits_bundle / "manifest.json").read_text())
    within_one_step({"scores": device}, host, manifest)
    assert 'edge_run_requests_total{code="200",endpoint="infer"} 1' in result["metrics"]

    # The unit install.sh wrote is valid for systemd (paths moved to the host copy to check it).
    unit = tmp_path / "units" / "edge-run-digits-rpi4.service"
    text = unit.read_text()
    assert f"ExecStart={guest_bundle}/.venv/bin/edge-run serve {guest_bundle} --host 127.0.0.1 --port 8099" in text
    assert "DynamicUser=yes" in text and "ProtectSystem=strict" in text and "Restart=on-failure" in text
    host_copy = tmp_path / "bundle"
    shutil.copytree(digits_bundle, host_copy)
    (host_copy / ".venv" / "bin").mkdir(parents=True)
    shutil.copy2(host_copy / "edge-run", host_copy / ".venv" / "bin" / "edge-run")
    unit.write_text(text.replace(guest_bundle, str(host_copy)))
    verify = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True)
    assert verify.returncode == 0 and verify.stderr.strip() == "", verify.stderr
