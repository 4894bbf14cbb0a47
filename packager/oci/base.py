"""The OCI image's base: a Debian root filesystem with Python and nothing to log in with.

The same machinery as the emulated board (packager.emulator): unpacked from
Debian's own packages of the profile's suite and architecture by mmdebstrap
``--variant=extract``, byte-compiled under emulation, cached under
``~/.cache/edgepack/rootfs/`` with a checksum of every file and verified
before each use. Its package list is what ``edge-run serve`` needs at run
time: python3 (and what it depends on) and the C++ runtime the TFLite
wheels link against. No shell, no coreutils, no package manager's front
end: the bundle's environment is installed on the emulated board (which has
them) and copied in, so the image has nothing a shell would be needed for.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

from .. import emulator
from ..profiles import Profile
from ..wheels import cache_root

PACKAGES = ("python3", "libstdc++6", "libgcc-s1")
# dpkg path-excludes, honoured by mmdebstrap as it unpacks: what a process that only runs Python never
# reads. gconv is glibc's iconv modules (20 MB); Python's codecs are its own.
EXCLUDE = ("/usr/share/doc/*", "/usr/share/man/*", "/usr/share/info/*", "/usr/share/locale/*",
           "/usr/share/lintian/*", "/usr/lib/*/gconv/*")
# The image's user: unprivileged, no home, no shell (the uid distroless images use for "nonroot").
USER_ID = 65532
USER_NAME = "edge-run"


def spec(profile: Profile) -> dict:
    qemu, debian_arch = emulator.emulator_for(profile)
    return {"suite": profile.os["debian_suite"], "arch": debian_arch, "qemu": qemu, "python": profile.os["python"],
            "packages": list(PACKAGES), "exclude": list(EXCLUDE), "user": [USER_NAME, USER_ID], "layout": 1}


def base_dir(profile: Profile) -> Path:
    """The cached tree's folder, beside the emulated boards' trees, named by suite, arch and spec digest."""
    tree = spec(profile)
    digest = hashlib.sha256(json.dumps(tree, sort_keys=True).encode()).hexdigest()[:8]
    return cache_root() / "rootfs" / f"{tree['suite']}-{tree['arch']}-oci-{digest}"


def _accounts(root: Path) -> None:
    """base-passwd's job, for root and the image's one user: a uid with a name (ps, id, Python's pwd)."""
    (root / "etc" / "passwd").write_text(f"root:x:0:0:root:/root:/usr/sbin/nologin\n"
                                         f"{USER_NAME}:x:{USER_ID}:{USER_ID}::/nonexistent:/usr/sbin/nologin\n")
    (root / "etc" / "group").write_text(f"root:x:0:\n{USER_NAME}:x:{USER_ID}:\n")


def ensure_base(profile: Profile, log=emulator.stderr_log) -> Path:
    """The verified base tree for the profile's suite and architecture, built when absent or corrupt."""
    return emulator.ensure_tree(base_dir(profile), spec(profile), log, customize=_accounts)


if __name__ == "__main__":  # `python -m packager.oci.base TARGET...`: build or verify the trees (set-up step)
    sys.exit(emulator.main(sys.argv[1:], ensure_base, "OCI image base"))
