"""Hostile bundles: nothing from a bundle runs before it is verified, and
archives are read within what their manifest declares (issue 12, §1).

Each test is one class of attack on a copy of the real digits bundle; the
device scripts run with the host's sh and coreutils, the runner with the
host venv's Python (EDGE_RUN_PYTHON), as the launcher would on the device.
"""

import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from edge_runtime.bundle import MANIFEST, SUMS, open_bundle, sha256_file
from edge_runtime.errors import UserError
from packager.bundle import DEVICE_FILES
from tests.conftest import reseal

pytestmark = pytest.mark.slow  # the digits bundle is a real build


@pytest.fixture
def bundle(digits_bundle, tmp_path) -> Path:
    copy = tmp_path / "bundle"
    shutil.copytree(digits_bundle, copy, ignore=shutil.ignore_patterns(".venv"))
    return copy


def launch(bundle: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    """The bundle's own edge-run launcher, with the host venv's Python."""
    env = {"PATH": os.environ["PATH"], "EDGE_RUN_PYTHON": sys.executable, "HOME": str(cwd)}
    return subprocess.run(["sh", str(bundle / "edge-run"), *args], cwd=cwd, env=env, capture_output=True, text=True)


def edit_manifest(bundle: Path, change) -> dict:
    """Edit the manifest and reseal it (digest and SHA256SUMS), as an attacker could."""
    manifest = json.loads((bundle / MANIFEST).read_text())
    change(manifest)
    return reseal(bundle, manifest)


MARKER_CODE = "import pathlib; pathlib.Path({marker!r}).write_text('ran')\n"


@pytest.mark.parametrize("planted", ["sitecustomize.py", "numpy.py", "edge_runtime/extra.py",
                                     "edge_runtime/__pycache__/cli.cpython-311.pyc", "wheels/evil-1.0-py3-none-any.whl"])
def test_unlisted_file_is_refused_before_any_python_runs(bundle, tmp_path, planted):
    marker = tmp_path / "pwned"
    (bundle / planted).parent.mkdir(parents=True, exist_ok=True)
    (bundle / planted).write_text(MARKER_CODE.format(marker=str(marker)))
    proc = launch(bundle, "info", str(bundle), cwd=tmp_path)
    assert proc.returncode == 1 and f"not in its manifest: {planted}" in proc.stderr, proc.stderr
    assert not marker.exists()
    # install.sh checks first too (here it would otherwise stop at the architecture)
    proc = subprocess.run(["sh", str(bundle / "install.sh")], capture_output=True, text=True)
    assert proc.returncode == 1 and f"not in its manifest: {planted}" in proc.stderr
    assert "nothing was installed" in proc.stderr and not (bundle / ".venv").exists()
    # and the runner itself, opened from Python
    with pytest.raises(UserError, match=f"does not list: {planted}"):
        open_bundle(bundle)


def test_edited_runner_source_never_runs(bundle, tmp_path):
    marker = tmp_path / "pwned"
    cli = bundle / "edge_runtime" / "cli.py"
    cli.write_text(MARKER_CODE.format(marker=str(marker)) + cli.read_text())
    proc = launch(bundle, "info", str(bundle), cwd=tmp_path)
    assert proc.returncode == 1 and "edge_runtime/cli.py: FAILED" in proc.stderr, proc.stderr
    assert not marker.exists()


def test_intact_bundle_runs_isolated_from_the_environment(bundle, tmp_path):
    """PYTHONPATH, a sitecustomize on it and the working folder are not imported; no .pyc lands in the bundle."""
    marker = tmp_path / "pwned"
    (tmp_path / "hostile").mkdir()
    (tmp_path / "hostile" / "sitecustomize.py").write_text(MARKER_CODE.format(marker=str(marker)))
    (tmp_path / "numpy.py").write_text(MARKER_CODE.format(marker=str(marker)))
    env = {"PATH": os.environ["PATH"], "EDGE_RUN_PYTHON": sys.executable, "PYTHONPATH": str(tmp_path / "hostile")}
    proc = subprocess.run(["sh", str(bundle / "edge-run"), "info", str(bundle)], cwd=tmp_path, env=env,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "digits-rpi4" in proc.stdout and not marker.exists()
    assert not list(bundle.rglob("__pycache__"))
    assert open_bundle(bundle)[1]["name"] == "digits-rpi4"  # still exactly its files


def test_symlinked_file_is_refused(bundle, tmp_path):
    outside = tmp_path / "model-elsewhere.tflite"
    shutil.move(bundle / "model.tflite", outside)
    (bundle / "model.tflite").symlink_to(outside)
    proc = launch(bundle, "info", str(bundle), cwd=tmp_path)
    assert proc.returncode == 1 and "model.tflite is a symlink or special file" in proc.stderr
    with pytest.raises(UserError, match="model.tflite is a symlink"):
        open_bundle(bundle)


@pytest.mark.parametrize("entry", ["../outside.txt", "/etc/passwd", "./model.tflite", "a//b", "wheels/../x"])
def test_manifest_paths_must_stay_inside_the_bundle(bundle, tmp_path, entry):
    (tmp_path / "outside.txt").write_text("secret")
    edit_manifest(bundle, lambda m: (m["files"].__setitem__(entry, "0" * 64), m["sizes"].__setitem__(entry, 6)))
    with pytest.raises(UserError, match="not a plain relative path inside the bundle"):
        open_bundle(bundle)
    proc = launch(bundle, "info", str(bundle), cwd=tmp_path)
    assert proc.returncode == 1 and "SHA256SUMS holds a line that is not" in proc.stderr


def test_corrupt_wheel_is_refused_by_install(bundle):
    (wheel,) = bundle.glob("wheels/numpy-*.whl")
    wheel.write_bytes(wheel.read_bytes()[:-10])
    proc = subprocess.run(["sh", str(bundle / "install.sh")], capture_output=True, text=True)
    assert proc.returncode == 1 and f"wheels/{wheel.name}: FAILED" in proc.stderr
    assert not (bundle / ".venv").exists()


def test_wheels_are_pinned_by_hash_for_pip(bundle):
    lines = (bundle / "wheels" / "requirements.txt").read_text().splitlines()
    wheels = sorted(bundle.glob("wheels/*.whl"))
    assert len(lines) == len(wheels) >= 2
    digests = {line.split("--hash=sha256:")[1] for line in lines}
    assert digests == {sha256_file(w) for w in wheels}
    script = (bundle / "install.sh").read_text()
    assert "--require-hashes" in script and "-r \"$REQS\"" in script


def test_device_scripts_are_not_templates(digits, tmp_path):
    """A model file name full of shell syntax never reaches a script: the bundle's name is made plain
    and the scripts are byte-for-byte the packaged ones."""
    from tests.conftest import run_cli

    weird = tmp_path / "in" / "my model $(touch PWNED); x|y&z 'q\"\n.onnx"
    weird.parent.mkdir()
    shutil.copy2(digits / "digits.onnx", weird)
    run_cli("packager", "build", weird, "--target", "rpi4", "--calibration", digits / "calibration.npy",
            "--no-wheels", "-o", tmp_path / "dist")
    (built,) = [p for p in (tmp_path / "dist").iterdir() if p.is_dir()]
    assert built.name == "my-model-touch-PWNED-x-y-z-q-rpi4"
    for name in ("install.sh", "edge-run", "verify-bundle", "edge-run.service"):
        assert (built / name).read_bytes() == (DEVICE_FILES / name).read_bytes()
    assert f"name={built.name}\n" in (built / "install.conf").read_text()
    proc = subprocess.run(["sh", str(built / "install.sh"), "-h"], cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 0 and "--prefix DIR" in proc.stdout
    assert not list(tmp_path.rglob("PWNED"))


def test_install_conf_is_data_not_code(bundle, tmp_path):
    conf = "name=x$(touch PWNED)\narch=aarch64\npython=3.11\npackages=numpy\n"
    (bundle / "install.conf").write_text(conf)
    edit_manifest(bundle, lambda m: (m["files"].__setitem__("install.conf", sha256_file(bundle / "install.conf")),
                                     m["sizes"].__setitem__("install.conf", len(conf))))
    proc = subprocess.run(["sh", str(bundle / "install.sh")], cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 1 and "install.conf: name holds characters it may not" in proc.stderr
    assert not list(tmp_path.rglob("PWNED"))


# --- archives ---------------------------------------------------------------------------------------------------


class Zeros(io.RawIOBase):
    """n zero bytes, streamed (a bomb compresses 1000:1)."""

    def __init__(self, n):
        self.left = n

    def readable(self):
        return True

    def readinto(self, b):
        n = min(len(b), self.left)
        b[:n] = bytes(n)
        self.left -= n
        return n


def rebuild_archive(bundle: Path, path: Path, order=None, extra=()):
    """A .tar.gz of ``bundle`` in edgepack's member order, plus ``extra`` (TarInfo, fileobj) members."""
    manifest = json.loads((bundle / MANIFEST).read_text())
    with tarfile.open(path, "w:gz", compresslevel=1) as tar:
        tar.add(bundle, arcname="b", recursive=False)
        for rel in order or (MANIFEST, SUMS, *manifest["files"]):
            tar.add(bundle / rel, arcname=f"b/{rel}", recursive=False)
        for info, fileobj in extra:
            tar.addfile(info, fileobj)
    return path


def test_archive_member_larger_than_declared_is_refused_unwritten(bundle, tmp_path, monkeypatch):
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    manifest = json.loads((bundle / MANIFEST).read_text())
    order = [MANIFEST, SUMS, *[f for f in manifest["files"] if f != "model.tflite"]]
    bomb = tarfile.TarInfo("b/model.tflite")
    bomb.size = 256 << 20  # declared 256 MB in the tar header; the manifest says a few KB
    archive = rebuild_archive(bundle, tmp_path / "bomb.tar.gz", order, [(bomb, Zeros(bomb.size))])
    assert archive.stat().st_size < bomb.size // 4  # it expands far beyond its own size
    with pytest.raises(UserError, match=r"member model.tflite is 268435456 bytes; the manifest says \d+"):
        open_bundle(archive)
    written = [p for p in (tmp_path / "tmp").rglob("*") if p.is_file()]
    assert written and not [p for p in written if p.name == "model.tflite"]  # refused at its header, unwritten


def test_archive_declaring_more_than_the_cap_is_refused_unread(bundle, tmp_path, monkeypatch):
    edit_manifest(bundle, lambda m: m["sizes"].__setitem__("model.tflite", 3 << 30))
    monkeypatch.setattr("edge_runtime.bundle.MAX_BUNDLE_BYTES", 1 << 30)
    archive = rebuild_archive(bundle, tmp_path / "big.tar.gz")
    with pytest.raises(UserError, match="declares 32\\d+ bytes of files; the limit is"):
        open_bundle(archive)


@pytest.mark.parametrize("kind", ["symlink", "hardlink", "device", "traversal", "unlisted", "manifest-not-first"])
def test_archive_with_entries_outside_its_manifest_is_refused(bundle, tmp_path, kind):
    extra, order = [], None
    if kind == "manifest-not-first":
        manifest = json.loads((bundle / MANIFEST).read_text())
        order = ["model.tflite", MANIFEST, SUMS, *manifest["files"]]
    else:
        info = tarfile.TarInfo({"traversal": "b/../../evil", "unlisted": "b/extra.py"}.get(kind, "b/link"))
        info.type = {"symlink": tarfile.SYMTYPE, "hardlink": tarfile.LNKTYPE, "device": tarfile.CHRTYPE}.get(
            kind, tarfile.REGTYPE)
        info.linkname = "/etc/passwd"
        extra = [(info, io.BytesIO(b""))]
    archive = rebuild_archive(bundle, tmp_path / "bad.tar.gz", order, extra)
    with pytest.raises(UserError, match="does not hold b/manifest.json first|does not list as a file"):
        open_bundle(archive)
    assert not (tmp_path / "evil").exists()


@pytest.mark.parametrize("pep706", [True, False])
def test_built_archive_opens_and_lists_manifest_first(digits_bundle, monkeypatch, pep706):
    if not pep706:  # a Python before tarfile's extraction filters (3.11.4): the member checks alone
        monkeypatch.delattr(tarfile, "data_filter")
    archive = digits_bundle.parent / f"{digits_bundle.name}.tar.gz"
    with tarfile.open(archive) as tar:
        names = tar.getnames()
    assert names[:3] == ["digits-rpi4", "digits-rpi4/manifest.json", "digits-rpi4/SHA256SUMS"]
    folder, manifest = open_bundle(archive)
    assert sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()) == sorted(
        [*manifest["files"], MANIFEST, SUMS])


@pytest.mark.parametrize("field, value, message", [
    ("inputs", "x", "inputs must be"),
    ("target", {"name": "rpi4"}, "target.human_name must be"),
    ("name", "a\nb", "name must be"),
])
def test_resealed_malformed_manifest_is_refused_naming_the_field(bundle, tmp_path, field, value, message):
    """The digest is no signature: a resealed manifest still meets validation by type before any field is used."""
    edit_manifest(bundle, lambda m: m.__setitem__(field, value))
    with pytest.raises(UserError, match=message):
        open_bundle(bundle)
    proc = launch(bundle, "info", str(bundle), cwd=tmp_path)
    assert proc.returncode == 2 and proc.stderr.startswith("error: ") and "Traceback" not in proc.stderr
    assert message in proc.stderr
