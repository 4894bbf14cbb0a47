"""Signed bundles: the device's pinned key and the manifest's signature.

``edgepack build --sign KEY`` signs manifest.json with OpenSSH's
``ssh-keygen -Y sign`` (manifest.json.sig); the manifest holds every file's
sha256, so the signature covers the whole bundle. ``install.sh --trust
KEY.pub`` pins a key in an OpenSSH allowed-signers file; once one exists,
only bundles signed by that key run. verify-bundle checks it before any
Python from the bundle runs; the runner checks it again here, so a bundle
opened by ``edge_runtime.load`` (no launcher) meets the same rule. The
cryptography is ssh-keygen's, never ours; with no key pinned nothing changes.

Which pin is in effect (verify-bundle follows the same rule), failing
closed: the first that exists of ``/etc/edgepack/allowed_signers`` (root's
pin binds every user and the systemd service),
``$EDGEPACK_TRUST_DIR/allowed_signers`` and
``~/.config/edgepack/allowed_signers``. An environment variable can name a
pin but never switch one off; a folder it names must exist, and a pin that
exists must be a readable file, or nothing runs.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

from .errors import UserError

SIGNATURE = "manifest.json.sig"
# The signature's namespace and the allowed-signers principal: a key pinned
# for edgepack bundles verifies nothing else (and no other signature verifies here).
NAMESPACE = "edgepack-bundle"
TRUST_FILE = "allowed_signers"
SYSTEM_TRUST = Path("/etc/edgepack") / TRUST_FILE
MAX_SIGNATURE_BYTES = 64 << 10
REBUILD = "rebuild it with edgepack build --sign KEY (the key pinned with install.sh --trust)"


def trust_file() -> Path | None:
    """The pinned-key file in effect, or None when no key is pinned (signatures are not checked).

    Raises:
        UserError: EDGEPACK_TRUST_DIR names no readable folder, or the pin in effect cannot be read.
    """
    named = os.environ.get("EDGEPACK_TRUST_DIR")
    if named and not _can_enter(named):
        raise UserError(f"EDGEPACK_TRUST_DIR names {named}, which is not a folder this user can enter",
                        "create it (install.sh --trust KEY.pub pins a key there) or unset the variable")
    home = Path(os.environ.get("HOME") or "/nonexistent") / ".config" / "edgepack" / TRUST_FILE
    for path in (SYSTEM_TRUST, *([Path(named) / TRUST_FILE] if named else []), home):
        if os.path.lexists(path):
            if not _can_read(path):
                raise UserError(f"a key is pinned in {path}, but it is not a file this user can read; so no "
                                "bundle may run", "fix its permissions, or pin again with install.sh --trust KEY.pub")
            return path
    return None


def _can_enter(folder: str) -> bool:
    """A folder whose entries this user can look up: tried, not asked with os.access (proot, which runs the
    emulated boards, does not translate faccessat2's path)."""
    try:
        os.stat(os.path.join(folder, "."))
    except OSError:
        return False
    return os.path.isdir(folder)


def _can_read(path: Path) -> bool:
    """A regular file (asked first: opening a FIFO would wait for a writer) this user can open."""
    if not path.is_file():
        return False
    try:
        with open(path, "rb"):
            return True
    except OSError:
        return False


def _ssh_keygen(args: list[str], data: bytes) -> subprocess.CompletedProcess:
    return subprocess.run(["ssh-keygen", *args], input=data, capture_output=True, timeout=60,
                          start_new_session=True)  # no terminal: nothing ever waits for a passphrase


def check_signature(folder: Path, trusted: Path | None = None) -> str | None:
    """Refuse the bundle unless its manifest is signed by the pinned key.

    Args:
        folder: the bundle folder (manifest.json and, when signed, manifest.json.sig).
        trusted: the allowed-signers file; default :func:`trust_file`.

    Returns:
        The signer's key fingerprint, or None when no key is pinned.

    Raises:
        UserError: unsigned, signed by another key, or the manifest changed after signing.
    """
    trusted = trusted or trust_file()
    if trusted is None:
        return None
    where = f"edgepack bundle {folder}"
    if shutil.which("ssh-keygen") is None:
        raise UserError(f"{where}: a signing key is pinned in {trusted}, but ssh-keygen is not installed "
                        "to check signatures", "apt install openssh-client")
    sig = folder / SIGNATURE
    if not sig.is_file() or sig.is_symlink():
        raise UserError(f"{where}: not signed, and this device runs only bundles signed by the key pinned in "
                        f"{trusted}", REBUILD)
    if sig.stat().st_size > MAX_SIGNATURE_BYTES:
        raise UserError(f"{where}: {SIGNATURE} is over 64 KB; ssh-keygen writes under 1 KB", REBUILD)
    manifest = (folder / "manifest.json").read_bytes()
    proc = _ssh_keygen(["-Y", "verify", "-f", str(trusted), "-I", NAMESPACE, "-n", NAMESPACE, "-s", str(sig)],
                       manifest)
    if proc.returncode == 0:
        return _fingerprint(proc)
    # Why not: a sound signature by another key, or none that holds for this manifest.
    anyone = _ssh_keygen(["-Y", "check-novalidate", "-n", NAMESPACE, "-s", str(sig)], manifest)
    if anyone.returncode == 0:
        raise UserError(f"{where}: signed by another key ({_fingerprint(anyone)}), not the one pinned in "
                        f"{trusted}", "rebuild it with the pinned key, or pin its key with install.sh --trust")
    raise UserError(f"{where}: manifest.json was changed after it was signed (its signature does not match)",
                    "copy the bundle again, or " + REBUILD)


def _fingerprint(proc: subprocess.CompletedProcess) -> str:
    """The key fingerprint in ssh-keygen's 'Good "..." signature ... key SHA256:...' line."""
    found = re.search(r"key (SHA256:[A-Za-z0-9+/=]+)", (proc.stdout + proc.stderr).decode("utf-8", "replace"))
    return found.group(1) if found else "unknown key"


def signature_of(folder: Path) -> dict:
    """Who signed the bundle, for ``edgepack inspect``: whatever key the device pins.

    ``ssh-keygen -Y check-novalidate`` checks that manifest.json.sig is a sound
    signature of this manifest and names its key; whether a device accepts
    that key is its pin's business (check_signature).

    Returns:
        ``{"signed": bool, "fingerprint": "SHA256:..." | None, "key_type": "ED25519" | None,
        "problem": why it counts as unsigned | None}``.
    """
    sig = folder / SIGNATURE
    info = {"signed": False, "fingerprint": None, "key_type": None, "problem": None}
    if not sig.exists():
        return {**info, "problem": f"no {SIGNATURE}"}
    if not sig.is_file() or sig.is_symlink() or sig.stat().st_size > MAX_SIGNATURE_BYTES:
        return {**info, "problem": f"{SIGNATURE} is not a plain file under 64 KB, as ssh-keygen writes"}
    if shutil.which("ssh-keygen") is None:
        return {**info, "problem": f"{SIGNATURE} is there, but ssh-keygen is not installed to read it "
                                   "(apt install openssh-client)"}
    proc = _ssh_keygen(["-Y", "check-novalidate", "-n", NAMESPACE, "-s", str(sig)],
                       (folder / "manifest.json").read_bytes())
    if proc.returncode != 0:
        return {**info, "problem": f"{SIGNATURE} does not match manifest.json (changed after it was signed)"}
    said = (proc.stdout + proc.stderr).decode("utf-8", "replace")
    kind = re.search(r"signature with (\S+) key SHA256:", said)
    return {**info, "signed": True, "fingerprint": _fingerprint(proc), "key_type": kind.group(1) if kind else None}
