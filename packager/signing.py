"""``edgepack build --sign KEY``: manifest.json signed with OpenSSH's ssh-keygen.

The manifest holds every file's sha256 (and its own digest), so signing it
signs the bundle. ssh-keygen does the cryptography (``-Y sign``, namespace
``edgepack-bundle``); the device checks with ``ssh-keygen -Y verify``
against the key ``install.sh --trust`` pinned (see ``edge_runtime.trust``).
The key is tried before any conversion work, so a wrong path, a file that is
no key, or a passphrase nobody can type fails in a second, not at the end.
"""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
import tempfile
from pathlib import Path

from edge_runtime.errors import UserError
from edge_runtime.trust import NAMESPACE, SIGNATURE

PASSPHRASE_HINT = ("use a key without a passphrase (ssh-keygen -t ed25519 -N '' -f KEY), or load it into "
                   "ssh-agent first (ssh-add KEY)")


@dataclasses.dataclass(frozen=True)
class Signer:
    key: Path
    fingerprint: str  # "SHA256:... (ED25519)", as ssh-keygen -l shows it


def _ssh_keygen(args: list, what: str, hint: str, cwd: Path | None = None) -> str:
    """Run ssh-keygen with no terminal and no stdin (an encrypted key fails, never prompts); its stdout."""
    try:
        proc = subprocess.run(["ssh-keygen", *map(str, args)], capture_output=True, text=True, cwd=cwd,
                              stdin=subprocess.DEVNULL, start_new_session=True, timeout=60)
    except subprocess.TimeoutExpired:
        raise UserError(f"{what}: ssh-keygen did not answer within 60 s", hint) from None
    if proc.returncode != 0:
        # Its passphrase prompt, answered by nobody, left out.
        said = " ".join(proc.stderr.replace("Enter passphrase:", "").split()).rstrip(".")
        raise UserError(f"{what}: ssh-keygen failed ({said or f'exit {proc.returncode}'})", hint)
    return proc.stdout


def check_key(key: str | Path) -> Signer:
    """The signing key, tried with a signature of a scratch file.

    Raises:
        UserError: ssh-keygen missing, no such file, not a key, or a key it cannot use unattended.
    """
    key = Path(key)
    what = f"--sign {key}"
    if shutil.which("ssh-keygen") is None:
        raise UserError(f"{what}: ssh-keygen not found", "apt install openssh-client (it signs the bundle)")
    if not key.is_file():
        raise UserError(f"{what}: no such key file", "pass an OpenSSH private key (ssh-keygen -t ed25519 -f KEY "
                                                     "makes one)")
    listed = _ssh_keygen(["-l", "-f", key], f"{what} is not an OpenSSH key", "pass an OpenSSH private key, e.g. ~/.ssh/id_ed25519").split()
    # "256 SHA256:... comment (ED25519)": the comment may hold spaces or be empty.
    fingerprint = f"{listed[1]} {listed[-1]}" if len(listed) >= 3 else " ".join(listed)
    with tempfile.TemporaryDirectory(prefix="edgepack-sign-") as scratch:
        (Path(scratch) / "probe").write_text("edgepack signing probe\n")
        _ssh_keygen(["-Y", "sign", "-f", key.resolve(), "-n", NAMESPACE, "probe"], what, PASSPHRASE_HINT,
                    cwd=Path(scratch))
    return Signer(key, fingerprint)


def sign(stage: Path, signer: Signer) -> None:
    """Write ``manifest.json.sig`` next to a sealed manifest."""
    (stage / SIGNATURE).unlink(missing_ok=True)  # ssh-keygen asks before overwriting, and stdin is empty
    _ssh_keygen(["-Y", "sign", "-f", signer.key.resolve(), "-n", NAMESPACE, "manifest.json"],
                f"signing {stage.name} with {signer.key}", PASSPHRASE_HINT, cwd=stage)
