"""`edgepack oci`: the digits bundle as an OCI image, built once per session with the real tools (umoci,
skopeo); its config and layers read back by skopeo; its root filesystem unpacked by umoci and run as the
image says (entrypoint, user, environment, working folder) on the emulated Pi: proot + QEMU with the Pi's
CPU, loopback only, answering an OIP client on the host side of the same network namespace."""

import hashlib
import json
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest

from packager import emulator
from packager.oci import base
from packager.oci.image import ENTRYPOINT, PORT
from packager.profiles import load_profile
from tests.conftest import reseal, run_cli
from tests.helpers.board import within_one_step as assert_within_one_step

pytestmark = [pytest.mark.emulated, pytest.mark.slow]
RPI4 = load_profile("rpi4")


@pytest.fixture(scope="session")
def digits_image(digits_bundle, tmp_path_factory):
    """(output folder, tag, what `edgepack oci` printed, seconds it took)."""
    out = tmp_path_factory.mktemp("oci")
    start = time.monotonic()
    proc = run_cli("packager", "oci", digits_bundle, "-o", out)
    tag = hashlib.sha256((digits_bundle / "manifest.json").read_bytes()).hexdigest()[:12]
    return out, tag, proc.stdout, time.monotonic() - start


def _skopeo(*args) -> dict:
    proc = subprocess.run(["skopeo", *args], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_image_config_and_layers(digits_image, tmp_path):
    out, tag, stdout, seconds = digits_image
    layout = out / "digits-rpi4-oci"
    print(f"edgepack oci: {seconds:.0f} s\n{stdout}")
    image = _skopeo("inspect", f"oci:{layout}:{tag}")
    assert (image["Architecture"], image["Os"]) == ("arm64", "linux")
    assert len(image["Layers"]) == 3  # base, environment, bundle
    config = _skopeo("inspect", "--config", f"oci:{layout}:{tag}")
    assert (config["architecture"], config["os"]) == ("arm64", "linux")
    runtime = config["config"]
    assert runtime["User"] == f"{base.USER_ID}:{base.USER_ID}" and runtime["ExposedPorts"] == {f"{PORT}/tcp": {}}
    assert runtime["Entrypoint"] == ENTRYPOINT and runtime["Entrypoint"][-4:] == ["--host", "0.0.0.0", "--port", "8080"]
    labels = runtime["Labels"]
    assert labels["io.edgepack.probe.liveness"] == "GET /v2/health/live"
    assert labels["io.edgepack.probe.readiness"] == "GET /v2/health/ready" and labels["io.edgepack.port"] == "8080"
    assert labels["io.edgepack.target"] == "rpi4"
    # The archive is the same image, named for `podman load` / `k3s ctr images import`.
    archived = _skopeo("inspect", f"oci-archive:{out / 'digits-rpi4-oci.tar'}")
    assert archived["Digest"] == image["Digest"]
    assert f"image      localhost/edge-run/digits-rpi4:{tag} (linux/arm64)" in stdout
    assert f"digest     {image['Digest']}" in stdout
    # Every blob matches its digest: skopeo checks them as it copies, and refuses a changed layer.
    subprocess.run(["skopeo", "copy", "--quiet", f"oci:{layout}:{tag}", f"dir:{tmp_path / 'copy'}"], check=True)
    broken = tmp_path / "broken"
    shutil.copytree(layout, broken)
    bundle_layer = broken / "blobs" / "sha256" / image["Layers"][-1].split(":")[1]
    data = bytearray(bundle_layer.read_bytes())
    data[len(data) // 2] ^= 0xFF
    bundle_layer.write_bytes(bytes(data))
    proc = subprocess.run(["skopeo", "copy", "--quiet", f"oci:{broken}:{tag}", f"dir:{tmp_path / 'copy2'}"],
                          capture_output=True, text=True)
    assert proc.returncode != 0 and "digest" in proc.stderr.lower(), proc.stderr


CLIENT = '''
import json, os, signal, subprocess, sys, time, urllib.request
server_argv, env = json.loads(sys.argv[1]), json.loads(sys.argv[2])
start = time.monotonic()
server = subprocess.Popen(server_argv, env=env, stdout=open("serve.log", "w"), stderr=subprocess.STDOUT,
                          start_new_session=True)
base = "http://127.0.0.1:%d" % int(sys.argv[3])
while server.poll() is None:
    try:
        if urllib.request.urlopen(base + "/v2/health/ready", timeout=2).status == 200:
            break
    except OSError:
        time.sleep(0.5)
ready = time.monotonic() - start
live = json.load(urllib.request.urlopen(base + "/v2/health/live", timeout=10))
req = urllib.request.Request(base + "/v2/models/digits-rpi4/infer", data=open("request.json", "rb").read(),
                             headers={"Content-Type": "application/json"})
out = json.load(urllib.request.urlopen(req, timeout=60))
metrics = urllib.request.urlopen(base + "/metrics", timeout=10).read().decode()
os.killpg(server.pid, signal.SIGTERM)  # what the runtime sends the container's one process
json.dump({"out": out, "live": live, "metrics": metrics, "ready_seconds": ready, "exit": server.wait(60)},
          open("result.json", "w"))
'''


def test_image_root_filesystem_serves_on_the_emulated_pi(digits, digits_bundle, digits_image, tmp_path):
    out, tag, _, _ = digits_image
    unpacked = tmp_path / "unpacked"
    subprocess.run(["umoci", "unpack", "--rootless", "--image", f"{out / 'digits-rpi4-oci'}:{tag}", unpacked],
                   check=True, capture_output=True)
    rootfs = unpacked / "rootfs"
    assert not any((rootfs / d / name).exists() for d in ("bin", "usr/bin") for name in ("sh", "dash", "bash"))
    process = json.loads((unpacked / "config.json").read_text())["process"]
    assert process["user"]["uid"] == base.USER_ID and process["cwd"] == "/opt/edge-run/bundle"

    x = np.load(digits / "test_x.npy")[:1]
    (tmp_path / "client.py").write_text(CLIENT)
    (tmp_path / "request.json").write_text(json.dumps(
        {"inputs": [{"name": "image", "shape": list(x.shape), "datatype": "FP32", "data": x.ravel().tolist()}]}))
    user = f"{process['user']['uid']}:{process['user']['gid']}"
    before = _files(rootfs)
    with emulator.board(RPI4, rootfs, user=user, workdir=process["cwd"]) as on_board:
        server = on_board(process["args"])
        env = dict(entry.split("=", 1) for entry in process["env"])
        # The client runs here, the server on the board: one network namespace, loopback only.
        proc = subprocess.run([*emulator.network_isolation(), sys.executable, "client.py", json.dumps(server),
                               json.dumps(env), str(PORT)], cwd=tmp_path, capture_output=True, text=True)
    log = (tmp_path / "serve.log").read_text() if (tmp_path / "serve.log").exists() else ""
    assert proc.returncode == 0, proc.stderr[-3000:] + log[-3000:]
    result = json.loads((tmp_path / "result.json").read_text())
    print(f"ready after {result['ready_seconds']:.1f} s under emulation\n{log}")
    assert result["live"] == {"live": True} and result["exit"] == 0, log
    assert "Error" not in log and "Traceback" not in log, log
    device = np.array(result["out"]["outputs"][0]["data"], np.float32).reshape(1, 10)
    import edge_runtime

    host = edge_runtime.load(digits_bundle).predict({"image": x})
    assert_within_one_step({"scores": device}, host, json.loads((digits_bundle / "manifest.json").read_text()))
    assert 'edge_run_requests_total{code="200",endpoint="infer"} 1' in result["metrics"]
    assert _files(rootfs) == before  # nothing written outside /tmp: a read-only root filesystem does


def _files(root) -> dict:
    return {str(path.relative_to(root)): (path.lstat().st_size, path.lstat().st_mtime_ns)
            for path in root.rglob("*") if not path.is_dir()}


def _edited_copy(digits_bundle, tmp_path, edit) -> str:
    copy = tmp_path / "digits-rpi4"
    shutil.copytree(digits_bundle, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    edit(copy, manifest)
    reseal(copy, manifest)
    return copy


def test_bundle_without_wheels_is_refused_before_any_work(digits_bundle, tmp_path):
    def drop_wheels(copy, manifest):
        shutil.rmtree(copy / "wheels")
        for rel in [r for r in manifest["files"] if r.startswith("wheels/")]:
            del manifest["files"][rel], manifest["sizes"][rel]

    copy = _edited_copy(digits_bundle, tmp_path, drop_wheels)
    proc = run_cli("packager", "oci", copy, "-o", tmp_path / "out", check=False)
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: ") and "has no wheels/ (built with --no-wheels)" in proc.stderr
    assert "rebuild the bundle without --no-wheels" in proc.stderr
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


def test_target_without_an_emulator_is_refused(digits_bundle, tmp_path):
    copy = _edited_copy(digits_bundle, tmp_path, lambda _, m: m["target"].update(arch="x86_64"))
    proc = run_cli("packager", "oci", copy, "-o", tmp_path / "out", check=False)
    assert proc.returncode == 2
    assert "error: no OCI image for target 'rpi4' (arch x86_64)" in proc.stderr and "aarch64" in proc.stderr
