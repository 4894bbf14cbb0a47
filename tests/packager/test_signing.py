"""Signed bundles (issue 10, part 3a): once a device pins a key, only bundles
that key signed install and run.

Real ed25519 keys from ``ssh-keygen -N ""``; the device scripts run with the
host's sh, coreutils and ssh-keygen, the runner with the host venv's Python
(EDGE_RUN_PYTHON), as the launcher would on the device. The pin goes to a
temp EDGEPACK_TRUST_DIR, never /etc.
"""

import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from edge_runtime.bundle import MANIFEST, SUMS, open_bundle, sha256_file, sums_text
from edge_runtime.errors import UserError
from edge_runtime.trust import SIGNATURE, trust_file
from tests.conftest import reseal, run_cli

pytestmark = pytest.mark.slow  # real builds (and one emulated run)

MARKER_CODE = "import pathlib; pathlib.Path({marker!r}).write_text('ran')\n"
NOT_SIGNED = "not signed, and this device runs only bundles signed by the key pinned in"
CHANGED = "manifest.json was changed after it was signed (its signature does not match)"


def keygen(path: Path, passphrase: str = "") -> Path:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", passphrase, "-C", "", "-f", str(path)], check=True,
                   stdin=subprocess.DEVNULL)
    return path


def fingerprint(key: Path) -> str:
    return subprocess.run(["ssh-keygen", "-l", "-f", str(key)], capture_output=True, text=True,
                          check=True).stdout.split()[1]


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    folder = tmp_path_factory.mktemp("keys")
    return keygen(folder / "signer"), keygen(folder / "other")


@pytest.fixture(scope="module")
def signed_build(digits, keys, tmp_path_factory):
    out = tmp_path_factory.mktemp("signed")
    proc = run_cli("packager", "build", digits / "digits.onnx", "--target", "rpi4",
                   "--calibration", digits / "calibration.npy", "-o", out, "--sign", keys[0])
    return out / "digits-rpi4", proc.stdout


@pytest.fixture
def bundle(signed_build, tmp_path) -> Path:
    copy = tmp_path / "bundle"
    shutil.copytree(signed_build[0], copy, ignore=shutil.ignore_patterns(".venv"))
    return copy


@pytest.fixture
def trust(tmp_path, monkeypatch) -> Path:
    """A pin-less trust folder for this test, for the scripts and for open_bundle alike."""
    folder = tmp_path / "trust"
    folder.mkdir()
    monkeypatch.setenv("EDGEPACK_TRUST_DIR", str(folder))
    return folder


def device_env(cwd: Path) -> dict:
    env = {"PATH": os.environ["PATH"], "EDGE_RUN_PYTHON": sys.executable, "HOME": str(cwd)}
    if "EDGEPACK_TRUST_DIR" in os.environ:
        env["EDGEPACK_TRUST_DIR"] = os.environ["EDGEPACK_TRUST_DIR"]
    return env


def launch(bundle: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["sh", str(bundle / "edge-run"), *args], cwd=cwd, env=device_env(cwd),
                          capture_output=True, text=True)


def install(bundle: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    """install.sh on the host: it checks (and pins) first, then stops at the architecture (aarch64 wheels)."""
    return subprocess.run(["sh", str(bundle / "install.sh"), *args], cwd=cwd, env=device_env(cwd),
                          capture_output=True, text=True)


def pin(bundle: Path, key: Path, cwd: Path) -> subprocess.CompletedProcess:
    proc = install(bundle, "--trust", f"{key}.pub", cwd=cwd)
    assert f"pinned {fingerprint(key)} in " in proc.stdout, proc.stdout + proc.stderr
    return proc


def assert_refused(bundle: Path, tmp_path: Path, message: str, python_message: str | None = None):
    """Refused by install.sh, by the edge-run launcher (before any Python), and by open_bundle."""
    proc = install(bundle, cwd=tmp_path)
    assert proc.returncode == 1 and message in proc.stderr, proc.stderr
    assert "nothing was installed" in proc.stderr and not (bundle / ".venv").exists()
    proc = launch(bundle, "info", str(bundle), cwd=tmp_path)
    assert proc.returncode == 1 and message in proc.stderr, proc.stderr
    assert proc.stderr.startswith(f"edgepack bundle {bundle}: ") and len(proc.stderr.splitlines()) == 1
    with pytest.raises(UserError, match=re.escape(python_message or message)):
        open_bundle(bundle)


def test_signed_build_verifies_against_the_pinned_key(signed_build, bundle, keys, trust, tmp_path):
    folder, stdout = signed_build
    assert f"signed     manifest.json.sig by {fingerprint(keys[0])} (ED25519)" in stdout
    manifest = json.loads((folder / MANIFEST).read_text())
    assert SIGNATURE not in manifest["files"] and SIGNATURE not in (folder / SUMS).read_text()
    assert fingerprint(keys[0]).split(":")[1] not in (folder / MANIFEST).read_text()  # in the build output only
    with tarfile.open(folder.parent / "digits-rpi4.tar.gz") as tar:
        assert tar.getnames()[:4] == ["digits-rpi4", f"digits-rpi4/{MANIFEST}", f"digits-rpi4/{SUMS}",
                                      f"digits-rpi4/{SIGNATURE}"]
    # no key pinned: runs as before, and install.sh says signatures are not checked
    assert trust_file() is None
    proc = install(bundle, cwd=tmp_path)
    assert "no signing key pinned: signatures are not checked" in proc.stdout
    proc = pin(bundle, keys[0], tmp_path)
    assert "signature checked against the key pinned in" in proc.stdout
    assert "wheels are for aarch64" in proc.stderr  # past every check, stopped by the host's architecture
    pinned = (trust / "allowed_signers").read_text()
    public = (Path(f"{keys[0]}.pub").read_text().split())
    assert pinned == f'edgepack-bundle namespaces="edgepack-bundle" {public[0]} {public[1]}\n'
    assert trust_file() == trust / "allowed_signers"
    proc = launch(bundle, "info", str(bundle), cwd=tmp_path)
    assert proc.returncode == 0 and "digits-rpi4" in proc.stdout, proc.stderr
    assert open_bundle(bundle)[1]["name"] == "digits-rpi4"
    assert open_bundle(folder.parent / "digits-rpi4.tar.gz")[1]["name"] == "digits-rpi4"


def test_inspect_says_who_signed_it(signed_build, digits_bundle, bundle, keys, trust, tmp_path):
    """edgepack inspect: one line, signed or not and by which key, whatever this machine pins (nothing here)."""
    folder = signed_build[0]
    signed = f"signed     yes, by {fingerprint(keys[0])} (ED25519): runs on devices that pinned this key, or none\n"
    assert signed in run_cli("packager", "inspect", folder).stdout
    assert signed in run_cli("packager", "inspect", folder.parent / "digits-rpi4.tar.gz").stdout
    shown = json.loads(run_cli("packager", "inspect", "--json", folder).stdout)["signature"]
    assert shown == {"signed": True, "fingerprint": fingerprint(keys[0]), "key_type": "ED25519", "problem": None}
    refused = ("devices that pinned a key refuse it; rebuild it with edgepack build --sign KEY (the key pinned with "
               "install.sh --trust)\n")
    text = run_cli("packager", "inspect", digits_bundle).stdout
    assert f"signed     no (no {SIGNATURE}): {refused}" in text and "signed     yes" not in text
    reseal(bundle, dict(json.loads((bundle / MANIFEST).read_text()), name="digits-evil"))  # sealed anew, not signed
    shown = run_cli("packager", "inspect", bundle).stdout
    assert f"signed     no ({SIGNATURE} does not match manifest.json (changed after it was signed)): {refused}" in shown


def test_unsigned_bundle_is_refused_once_a_key_is_pinned(digits_bundle, bundle, keys, trust, tmp_path):
    pin(bundle, keys[0], tmp_path)
    unsigned = tmp_path / "unsigned"
    shutil.copytree(digits_bundle, unsigned, ignore=shutil.ignore_patterns(".venv"))
    assert_refused(unsigned, tmp_path, NOT_SIGNED)
    (bundle / SIGNATURE).unlink()  # a signed bundle stripped of its signature
    assert_refused(bundle, tmp_path, NOT_SIGNED)


def test_pins_fail_closed_no_variable_switches_a_pin_off(bundle, keys, tmp_path, monkeypatch):
    """A key pinned in the user's folder binds although EDGEPACK_TRUST_DIR names a folder with no pin (it used
    to replace the user's and the system's pin, so an unsigned bundle ran); a trust folder named but missing, or
    a pin that is no readable file (a dangling link), refuses every bundle rather than checking none."""
    monkeypatch.setenv("HOME", str(tmp_path))  # device_env's HOME for the scripts, the same for open_bundle
    user_pin = tmp_path / ".config" / "edgepack" / "allowed_signers"
    user_pin.parent.mkdir(parents=True)
    monkeypatch.setenv("EDGEPACK_TRUST_DIR", str(user_pin.parent))  # as root install.sh would pin in /etc
    pin(bundle, keys[0], cwd=tmp_path)
    monkeypatch.delenv("EDGEPACK_TRUST_DIR")
    assert user_pin.is_file() and trust_file() == user_pin
    (bundle / SIGNATURE).unlink()
    empty = tmp_path / "no-pin-here"
    empty.mkdir()
    monkeypatch.setenv("EDGEPACK_TRUST_DIR", str(empty))
    assert trust_file() == user_pin
    assert_refused(bundle, tmp_path, f"{NOT_SIGNED} {user_pin}")
    monkeypatch.setenv("EDGEPACK_TRUST_DIR", str(tmp_path / "missing"))
    said = f"EDGEPACK_TRUST_DIR names {tmp_path / 'missing'}, which is not a folder this user can enter"
    for proc in (launch(bundle, "info", str(bundle), cwd=tmp_path), install(bundle, cwd=tmp_path)):
        assert proc.returncode == 1 and said in proc.stderr, proc.stderr
    with pytest.raises(UserError, match=re.escape(said)):
        open_bundle(bundle)
    monkeypatch.delenv("EDGEPACK_TRUST_DIR")
    user_pin.unlink()
    user_pin.symlink_to(tmp_path / "gone")  # a pin that cannot be read is no reason to check nothing
    said = f"a key is pinned in {user_pin}, but it is not a file this user can read"
    for proc in (launch(bundle, "info", str(bundle), cwd=tmp_path), install(bundle, cwd=tmp_path)):
        assert proc.returncode == 1 and said in proc.stderr, proc.stderr
    with pytest.raises(UserError, match=re.escape(said)):
        open_bundle(bundle)
    user_pin.unlink()
    os.mkfifo(user_pin)  # nor a pin no one writes to: it is refused, never waited on
    for proc in (launch(bundle, "info", str(bundle), cwd=tmp_path), install(bundle, cwd=tmp_path)):
        assert proc.returncode == 1 and said in proc.stderr, proc.stderr
    with pytest.raises(UserError, match=re.escape(said)):
        open_bundle(bundle)
    assert not (bundle / ".venv").exists()


def test_bundle_signed_by_another_key_is_refused(bundle, keys, trust, tmp_path):
    pin(bundle, keys[1], tmp_path)
    assert_refused(bundle, tmp_path, f"signed by another key ({fingerprint(keys[0])}), not the one pinned in")


def test_resealed_manifest_is_refused(bundle, keys, trust, tmp_path):
    """Digest and SHA256SUMS recomputed, as anyone can: the signature still tells."""
    pin(bundle, keys[0], tmp_path)
    manifest = json.loads((bundle / MANIFEST).read_text())
    reseal(bundle, dict(manifest, name="digits-evil"))
    assert_refused(bundle, tmp_path, CHANGED)


def test_file_changed_after_signing_is_refused(bundle, keys, trust, tmp_path):
    pin(bundle, keys[0], tmp_path)
    model = bundle / "model.tflite"
    model.write_bytes(model.read_bytes()[:-4] + b"evil")
    assert_refused(bundle, tmp_path, "model.tflite: FAILED", "bundle file model.tflite was modified")


def test_file_and_its_sum_changed_together_never_run(bundle, keys, trust, tmp_path):
    """SHA256SUMS is no signature either: verify-bundle holds it to the signed manifest before trusting it."""
    pin(bundle, keys[0], tmp_path)
    marker = tmp_path / "pwned"
    cli = bundle / "edge_runtime" / "cli.py"
    cli.write_text(MARKER_CODE.format(marker=str(marker)) + cli.read_text())
    files = dict(json.loads((bundle / MANIFEST).read_text())["files"], **{"edge_runtime/cli.py": sha256_file(cli)})
    (bundle / SUMS).write_text(sums_text(files, sha256_file(bundle / MANIFEST)))
    assert_refused(bundle, tmp_path, "SHA256SUMS does not match the signed manifest.json (a file changed after "
                                     "signing)", "SHA256SUMS: does not match the manifest")
    assert not marker.exists()


def test_trust_pins_exactly_the_keys_given_and_rotation_pins_two(bundle, keys, trust, tmp_path):
    """A second --trust replaces the pin, and says which key it dropped (what it signed, installed versions too,
    stops running); --trust NEW.pub --trust OLD.pub pins both while devices move to the new key."""
    new_signed = tmp_path / "new-signed"
    shutil.copytree(bundle, new_signed)
    (new_signed / SIGNATURE).unlink()
    subprocess.run(["ssh-keygen", "-Y", "sign", "-f", str(keys[1]), "-n", "edgepack-bundle", MANIFEST],
                   cwd=new_signed, check=True, capture_output=True, stdin=subprocess.DEVNULL)
    old, new = fingerprint(keys[0]), fingerprint(keys[1])
    pinned = trust / "allowed_signers"
    pin(bundle, keys[0], tmp_path)
    proc = install(bundle, "--trust", f"{keys[1]}.pub", "--trust", f"{keys[0]}.pub", cwd=tmp_path)
    both = ", ".join(sorted([old, new]))
    assert (f"install.sh: pinned {both} in {pinned}: from now on only bundles one of them signed install and "
            "run\n") in proc.stdout, proc.stdout + proc.stderr
    assert "no longer pinned" not in proc.stdout and "wheels are for aarch64" in proc.stderr  # past the checks
    assert len(pinned.read_text().splitlines()) == 2
    for copy in (bundle, new_signed):
        proc = launch(copy, "info", str(copy), cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr
        assert open_bundle(copy)[1]["name"] == "digits-rpi4"
    proc = install(new_signed, "--trust", f"{keys[1]}.pub", cwd=tmp_path)  # the rotation done: the old key dropped
    assert (f"install.sh: pinned {new} in {pinned}: from now on only bundles it signed install and run\n"
            f"install.sh: no longer pinned: {old} (--trust replaces the pin with exactly the keys given): bundles "
            "signed only by it no longer install or run, installed versions included; to rotate keys, pin the new "
            "and the old together (--trust NEW.pub --trust OLD.pub) until every version in use is signed by the "
            "new one\n") in proc.stdout, proc.stdout + proc.stderr
    assert "wheels are for aarch64" in proc.stderr
    assert launch(new_signed, "info", str(new_signed), cwd=tmp_path).returncode == 0
    # --rollback (no architecture check on that path, so it runs here) refuses a previous version the pin refuses
    ab = tmp_path / "ab"
    for name, copy in (("old", bundle), ("new", new_signed)):
        shutil.copytree(copy, ab / "versions" / name)
    (ab / "current").symlink_to("versions/new")
    (ab / "previous").symlink_to("versions/old")
    proc = install(ab / "current", "--rollback", "--prefix", str(ab), cwd=tmp_path)
    assert proc.returncode == 1 and proc.stderr.endswith(
        f"signed by another key ({old}), not the one pinned in {pinned}; rebuild it with the pinned key, or pin "
        "its key with install.sh --trust\ninstall.sh: error: old, the previous version, fails its check (above), "
        "so it would not run: not rolled back, current stays new\n"), proc.stderr
    assert [os.readlink(ab / link) for link in ("current", "previous")] == ["versions/new", "versions/old"]
    install(new_signed, "--trust", f"{keys[1]}.pub", "--trust", f"{keys[0]}.pub", cwd=tmp_path)  # both again
    proc = install(ab / "current", "--rollback", "--prefix", str(ab), cwd=tmp_path)
    assert proc.returncode == 0 and "install.sh: rolled back: current is old (was new" in proc.stdout, proc.stderr
    assert [os.readlink(ab / link) for link in ("current", "previous")] == ["versions/old", "versions/new"]
    install(new_signed, "--trust", f"{keys[1]}.pub", cwd=tmp_path)
    assert_refused(bundle, tmp_path, f"signed by another key ({old}), not the one pinned in {pinned}")
    proc = install(new_signed, "--trust", f"{keys[1]}.pub", cwd=tmp_path)  # the same pin again: nothing dropped
    assert f"install.sh: pinned {new} in " in proc.stdout and "no longer pinned" not in proc.stdout


def test_trust_refuses_what_is_not_a_public_key(bundle, keys, trust, tmp_path):
    proc = install(bundle, "--trust", str(keys[0]), cwd=tmp_path)  # the private key, by mistake
    assert proc.returncode == 1 and "is not one OpenSSH public key line; pass KEY.pub" in proc.stderr
    proc = install(bundle, "--trust", str(tmp_path / "nope.pub"), cwd=tmp_path)
    assert proc.returncode == 1 and "nope.pub: no such file" in proc.stderr
    proc = install(bundle, "--trust", f"{keys[0]}.pub", "--trust", str(keys[1]), cwd=tmp_path)  # one bad of two
    assert proc.returncode == 1 and f"--trust {keys[1]} is not one OpenSSH public key line" in proc.stderr
    assert not (trust / "allowed_signers").exists()


@pytest.mark.parametrize("case", ["missing", "not-a-key", "passphrase"])
def test_sign_with_unusable_key_fails_before_any_work(digits, tmp_path, case):
    key = tmp_path / "key"
    if case == "not-a-key":
        key.write_text("hello\n")
    elif case == "passphrase":
        keygen(key, passphrase="secret")
    env_free = {k: v for k, v in os.environ.items() if k != "SSH_AUTH_SOCK"}  # no agent to unlock it
    proc = subprocess.run(
        [sys.executable, "-m", "packager", "build", str(digits / "digits.onnx"), "--target", "rpi4",
         "--calibration", str(digits / "calibration.npy"), "-o", str(tmp_path / "dist"), "--sign", str(key)],
        capture_output=True, text=True, stdin=subprocess.DEVNULL, env=env_free, timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    first = proc.stderr.splitlines()[0]
    assert first.startswith(f"error: --sign {key}"), proc.stderr
    assert {"missing": ": no such key file", "not-a-key": " is not an OpenSSH key: ssh-keygen failed",
            "passphrase": "incorrect passphrase"}[case] in first
    if case == "passphrase":
        assert "ssh-add KEY" in first
    assert "[1/9]" not in proc.stderr  # before loading the model
    assert not (tmp_path / "dist").exists()


@pytest.mark.emulated
def test_emulated_device_runs_only_what_the_pinned_key_signed(signed_build, digits, keys, tmp_path):
    """One emulated run: pin, install and run a signed bundle; a tampered and an other-key copy are refused
    by install.sh and by the launcher, with their exact messages."""
    import numpy as np

    import edge_runtime
    from tests.helpers.board import Board, within_one_step

    folder = signed_build[0]
    shutil.copy2(f"{keys[0]}.pub", tmp_path / "signer.pub")
    tampered, other = tmp_path / "tampered", tmp_path / "other"
    for copy in (tampered, other):
        shutil.copytree(folder, copy)
    reseal(tampered, dict(json.loads((tampered / MANIFEST).read_text()), name="digits-evil"))
    (other / SIGNATURE).unlink()
    subprocess.run(["ssh-keygen", "-Y", "sign", "-f", str(keys[1]), "-n", "edgepack-bundle", MANIFEST],
                   cwd=other, check=True, capture_output=True, stdin=subprocess.DEVNULL)
    x = np.load(digits / "test_x.npy")[:10]
    np.save(tmp_path / "x.npy", x)
    # The pin goes where a non-root user's would: as root it would land in the cached tree's /etc.
    script = (
        'set -e; export EDGEPACK_TRUST_DIR="$HOME/.config/edgepack"; '
        '"$BUNDLE/install.sh" --trust signer.pub; '
        '"$BUNDLE/edge-run" run "$BUNDLE" --input x.npy --output y.npz; '
        'for b in tampered other; do '
        '  "$PWD/$b/install.sh" > $b.install.out 2> $b.install.err && echo "$b INSTALLED"; '
        '  "$PWD/$b/edge-run" info "$PWD/$b" > $b.run.out 2> $b.run.err && echo "$b RAN"; '
        'done; echo DONE'
    )
    proc = Board("rpi4").run(folder, script, tmp_path).proc
    assert proc.returncode == 0 and proc.stdout.strip().endswith("DONE"), proc.stderr[-3000:]
    out = proc.stdout
    assert f"install.sh: pinned {fingerprint(keys[0])} in /root/.config/edgepack/allowed_signers" in out
    assert "install.sh: signature checked against the key pinned in /root/.config/edgepack/allowed_signers" in out
    assert "already installed in" in out and "INSTALLED" not in out and "RAN" not in out  # the board env, reused
    with np.load(tmp_path / "y.npz") as y:
        device = {k: y[k] for k in y.files}
    within_one_step(device, edge_runtime.load(folder).predict({"image": x}), json.loads(
        (folder / MANIFEST).read_text()))
    pinned = "/root/.config/edgepack/allowed_signers"
    expected = {
        "tampered": f"edgepack bundle {tampered}: {CHANGED}; copy the bundle again, or rebuild it with edgepack "
                    "build --sign KEY (the key pinned with install.sh --trust)",
        "other": f"edgepack bundle {other}: signed by another key ({fingerprint(keys[1])}), not the one pinned in "
                 f"{pinned}; rebuild it with the pinned key, or pin its key with install.sh --trust",
    }
    for name, message in expected.items():
        assert (tmp_path / f"{name}.run.err").read_text() == message + "\n"
        assert (tmp_path / f"{name}.install.err").read_text() == (
            message + "\ninstall.sh: error: the bundle failed its check (above); nothing was installed\n")
        assert not (tmp_path / name / ".venv").exists()
