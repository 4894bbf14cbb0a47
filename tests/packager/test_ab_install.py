"""A/B updates on the emulated Raspberry Pi 4 (issue 10, part 3b): install.sh
--prefix makes a new version current only once it passes its health check,
keeps the one before, and --rollback returns to it; a version that fails or
hangs its check, or a truncated archive, leaves the running one current.

Variants of the digits bundle are resealed copies (tests.conftest.reseal):
another ``created_at`` gives another manifest digest, so another version: a later one, as versions only
move forward (issue 24; an older one is refused). They keep the digits bundle's wheels, so each is a
model-only update: the current version's environment, checked by verify-env, reused by hard links (issue 21).
The hanging one really hangs: its target names the test delegate
(tests/fixtures/delegate/copy_delegate.c, built for aarch64) with
``hang=create``, which never returns from the delegate's creation.
"""

import hashlib
import io
import json
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest

from edge_runtime.bundle import MANIFEST, sha256_file
from packager import emulator
from packager.profiles import load_profile
from tests.conftest import reseal

pytestmark = [pytest.mark.emulated, pytest.mark.slow]
RPI4 = load_profile("rpi4")
HEALTH_FAILED = "failed its health check"
HANG_TIMEOUT = 120  # seconds to reach the delegate under emulation, where it then blocks: the whole check took 57 s in CI, more than 60 s on a loaded host


def variant(bundle: Path, dest: Path, created_at: str, files: dict[str, bytes] | None = None,
            target: dict | None = None) -> Path:
    """A resealed copy of ``bundle`` with another creation time and, optionally, files replaced and
    target entries (the manifest's device profile) changed."""
    shutil.copytree(bundle, dest, ignore=shutil.ignore_patterns(".venv"))
    manifest = json.loads((dest / MANIFEST).read_text())
    manifest["created_at"] = created_at
    manifest["target"].update(target or {})
    for rel, data in (files or {}).items():
        (dest / rel).write_bytes(data)
        manifest["files"][rel], manifest["sizes"][rel] = sha256_file(dest / rel), len(data)
    reseal(dest, manifest)
    return dest


def version(bundle: Path) -> str:
    return f"{bundle.name}-{hashlib.sha256((bundle / MANIFEST).read_bytes()).hexdigest()[:12]}"


def test_update_then_rollback(digits, digits_bundle, tmp_path):
    v2 = variant(digits_bundle, tmp_path / "v2" / digits_bundle.name, "2100-01-01T00:00:00+00:00")
    np.save(tmp_path / "x.npy", np.load(digits / "test_x.npy")[:4])
    script = (
        'set -e; P="$PWD/ab"; "$BUNDLE/install.sh" --prefix "$P"; echo "V1 $(readlink "$P/current")"; '
        f'EDGE_RUN_UNIT_DIR="$PWD/units" "$PWD/v2/{v2.name}/install.sh" --prefix "$P" --service; '
        'echo "V2 $(readlink "$P/current") $(readlink "$P/previous")"; '
        '"$P/bin/edge-run" run "$P/current" --input x.npy --output y.npz; '
        '"$P/current/install.sh" --rollback --prefix "$P"; '
        'echo "BACK $(readlink "$P/current") $(readlink "$P/previous")"'
    )
    proc, _ = emulator.run_on_device(RPI4, digits_bundle, script, cwd=tmp_path, capture=True)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    one, two = version(digits_bundle), version(v2)
    assert f"V1 versions/{one}" in lines
    assert f"V2 versions/{two} versions/{one}" in lines
    assert f"BACK versions/{one} versions/{two}" in lines
    assert f"install.sh: rolled back: current is {one} (was {two}, now previous" in proc.stdout
    assert proc.stdout.count("health: ok: digits-rpi4") == 2
    assert f"edge-run serve {two} answered /v2/health/ready and named digits-rpi4, {two}" in proc.stdout
    # the model-only update: v1's environment, checked, by hard links; pip ran for v1 only
    assert f"{tmp_path}/ab/versions/{one}/.venv: its environment reused (hard links), checked by verify-env" \
        in proc.stdout
    assert proc.stdout.count("install.sh: installed ") == 1
    numpy = [tmp_path / "ab" / "versions" / v / ".venv" / "lib" / "python3.11" / "site-packages" / "numpy" /
             "__init__.py" for v in (one, two)]
    assert numpy[0].stat().st_ino == numpy[1].stat().st_ino
    unit = (tmp_path / "units" / "edge-run-digits-rpi4.service").read_text()
    assert f"ExecStart={tmp_path}/ab/bin/edge-run serve {tmp_path}/ab/current --host" in unit
    with np.load(tmp_path / "y.npz") as y:
        assert y["scores"].shape[0] == 4


def test_failed_hanging_and_truncated_updates_leave_current(digits_bundle, copy_delegate_aarch64, tmp_path):
    with np.load(digits_bundle / "health" / "expected.npz") as f:
        wrong = {k: f[k] + 1.0 for k in f.files}
    buffer = io.BytesIO()
    np.savez(buffer, **wrong)
    bad = variant(digits_bundle, tmp_path / "bad" / digits_bundle.name, "2100-01-01T00:00:00+00:00",
                  {"health/expected.npz": buffer.getvalue()})
    # a bundle may name a delegate only in a system library folder: the board sees this one in /usr/local/lib
    (tmp_path / "lib").mkdir()
    shutil.copy2(copy_delegate_aarch64, tmp_path / "lib" / "libcopy_delegate.so")
    system = "/usr/local/lib/edgepack-test"
    hung = variant(digits_bundle, tmp_path / "hung" / digits_bundle.name, "2101-01-01T00:00:00+00:00",
                   target={"delegates": ["external", "xnnpack"],
                           "external_delegate": {"library": f"{system}/libcopy_delegate.so",
                                                 "options": {"hang": "create"}}})
    old = variant(digits_bundle, tmp_path / "old" / digits_bundle.name, "2001-01-01T00:00:00+00:00")
    # A .tar.gz cut in half, unpacked as far as it goes (the device's own tar stops there too, on its own terms)
    archive = (digits_bundle.parent / f"{digits_bundle.name}.tar.gz").read_bytes()
    with pytest.raises((EOFError, tarfile.ReadError)), tarfile.open(fileobj=io.BytesIO(archive[: len(archive) // 2])) as tar:
        tar.extractall(tmp_path / "cut", filter="data")
    script = (
        'P="$PWD/ab"; "$BUNDLE/install.sh" --prefix "$P" || exit 9; '
        f'"$PWD/bad/{bad.name}/install.sh" --prefix "$P" 2>bad.err; echo "BAD $? $(readlink "$P/current")"; '
        f's=$(date +%s); EDGEPACK_HEALTH_TIMEOUT={HANG_TIMEOUT} "$PWD/hung/{hung.name}/install.sh" --prefix "$P" '
        '2>hung.err; echo "HUNG $? $(readlink "$P/current")"; echo "HUNG-SECONDS $(( $(date +%s) - s ))"; '
        f'sh "cut/{digits_bundle.name}/install.sh" --prefix "$P" 2>cut.err; echo "CUT $? $(readlink "$P/current")"; '
        f'"$PWD/old/{old.name}/install.sh" --prefix "$P" 2>old.err; echo "OLD $? $(readlink "$P/current")"; '
        'ls "$P/versions"; [ ! -e "$P/previous" ] && echo NO-PREVIOUS; "$P/bin/edge-run" health "$P/current"'
    )
    proc, _ = emulator.run_on_device(RPI4, digits_bundle, script, cwd=tmp_path, capture=True,
                                     binds=((str(tmp_path / "lib"), system),))
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    one = version(digits_bundle)
    for label in ("BAD", "HUNG", "CUT", "OLD"):
        assert f"{label} 1 versions/{one}" in lines, proc.stdout
    nothing_changed = f"nothing changed: {one} is still current in {tmp_path}/ab"
    bad_err = (tmp_path / "bad.err").read_text()
    assert "health check: output 'scores' differs from the build's by" in bad_err
    assert f"{version(bad)} {HEALTH_FAILED} (above); {nothing_changed}" in bad_err
    # The check got as far as the delegate's creation and blocked there (it never returns) until timeout ended
    # it, after waiting out the whole bound.
    hung_err = (tmp_path / "hung.err").read_text()
    assert "copy_delegate: hanging in tflite_plugin_create_delegate (hang=create)" in hung_err
    assert (f"{version(hung)} {HEALTH_FAILED}: it did not finish within {HANG_TIMEOUT}s (EDGEPACK_HEALTH_TIMEOUT); "
            f"{nothing_changed}") in hung_err
    assert int(next(line for line in lines if line.startswith("HUNG-SECONDS ")).split()[1]) >= HANG_TIMEOUT
    assert "the bundle failed its check (above); nothing was installed" in (tmp_path / "cut.err").read_text()
    assert "before the newest version installed in" in (tmp_path / "old.err").read_text()
    # The refused versions are gone; the running one still passes its check.
    assert lines[lines.index(f"OLD 1 versions/{one}") + 1:][:2] == [one, "NO-PREVIOUS"]
    assert proc.stdout.rstrip().endswith("health: ok: digits-rpi4 reproduces its build's outputs for its stored sample")
