"""The test delegate (tests/fixtures/delegate/copy_delegate.c), compiled for this host or for the boards.

No NPU exists here, so copy_delegate.c is compiled into a genuine TFLite
external delegate: it claims RESHAPE (SQUEEZE, EXPAND_DIMS) nodes and runs
them itself by copying bytes.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from edge_runtime.delegates import elf_machine

SOURCE = Path(__file__).resolve().parent.parent / "fixtures" / "delegate"
AARCH64_GCC = "aarch64-linux-gnu-gcc"


def build_delegate(compiler: str, package: str, out_dir: Path, path: str | None = None) -> str:
    """copy_delegate.c built with ``compiler`` (the host gcc, or a cross gcc) against the ABI declared beside it.

    Fails the test (never skips it) when the compiler is missing: make emulator-tools installs both.
    """
    gcc = shutil.which(compiler, path=path)
    if not gcc:
        pytest.fail(f"no {compiler} on this machine to build the test delegate: make emulator-tools installs it "
                    f"(apt-get install {package})")
    out = out_dir / "libcopy_delegate.so"
    proc = subprocess.run([gcc, "-shared", "-fPIC", "-O2", "-Wall", "-Wextra", "-Werror", "-I", str(SOURCE),
                           "-o", str(out), str(SOURCE / "copy_delegate.c")], capture_output=True, text=True)
    assert proc.returncode == 0, f"{compiler} could not build copy_delegate.c:\n{proc.stderr[-3000:]}"
    return str(out)


def build_for_board(out_dir: Path, glibc: str) -> str:
    """The delegate cross-compiled for aarch64 boards with Debian's gcc, its glibc needs checked against the
    board's (a library needing a newer glibc would not load there)."""
    library = build_delegate(AARCH64_GCC, "gcc-aarch64-linux-gnu", out_dir)
    symbols = subprocess.run([AARCH64_GCC.replace("-gcc", "-objdump"), "-T", library], capture_output=True,
                             text=True, check=True).stdout
    needed = {tuple(map(int, v.split("."))) for v in re.findall(r"\(GLIBC_([0-9.]+)\)", symbols)}
    assert needed and max(needed) <= tuple(map(int, glibc.split("."))), (needed, glibc)
    assert elf_machine(library) == "aarch64, 64-bit"
    return library
