"""The set-up commands (python -m packager.fetch, and every other `python -m packager.X`) start clean."""

import re
import subprocess
import sys

from tests.conftest import ROOT


def main_modules() -> list[str]:
    """packager's modules meant for `python -m` (they end in a __main__ block); cli runs as `python -m packager`."""
    found = []
    for path in sorted((ROOT / "packager").rglob("*.py")):
        if re.search(r'^if __name__ == "__main__":', path.read_text(encoding="utf-8"), re.M):
            found.append(".".join(path.relative_to(ROOT).with_suffix("").parts))
    return [name for name in found if name != "packager.cli"]


def test_no_module_run_with_python_m_is_imported_by_the_package_first():
    """runpy warns ("found in sys.modules after import of package 'packager', but prior to execution") when
    `import packager` already imported the module `python -m` runs: `make wheels` printed it twice."""
    modules = main_modules()
    assert "packager.fetch" in modules and "packager.emulator" in modules
    loaded = subprocess.run([sys.executable, "-c", "import sys, packager; print(' '.join(sys.modules))"],
                            capture_output=True, text=True, cwd=ROOT, check=True).stdout.split()
    assert "packager.build" in loaded  # the package imports its pipeline
    assert [name for name in modules if name in loaded] == []


def test_fetch_without_a_step_says_how_to_use_it():
    proc = subprocess.run([sys.executable, "-W", "error", "-m", "packager.fetch"], capture_output=True, text=True,
                          cwd=ROOT, stdin=subprocess.DEVNULL)
    assert proc.returncode == 2
    assert proc.stderr == "usage: python -m packager.fetch {wheels,runtimes} TARGET...\n"
