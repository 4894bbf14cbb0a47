"""install.sh under fuzzed inputs (issue 24, installer part), on this machine with the host bundle:
install.conf's contents, what DIR/versions holds (odd names, symlinks, files where folders belong),
DIR/current and DIR/previous, and the DIR/newest record. Whatever it finds, install.sh ends with success or
one line of its own error, never a shell error, and deletes nothing outside its prefix.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge_runtime.bundle import MANIFEST, SUMS, sha256_file
from tests.conftest import reseal
from tests.helpers.bundles import version

pytestmark = pytest.mark.slow  # the host bundle is a real build
SHELL_ERROR = re.compile(r"^[^:\n]*: (line )?\d+: ", re.M)  # how sh (dash, busybox) reports its own errors
FUZZ = settings(max_examples=15, deadline=None, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@pytest.fixture
def installed_bundle(host_bundle, tmp_path) -> Path:
    """A copy of the host bundle installed in place once: A/B installs from it reuse its checked environment
    (hard links), so each fuzzed install takes seconds."""
    copy = tmp_path / "src" / host_bundle.name
    shutil.copytree(host_bundle, copy, ignore=shutil.ignore_patterns(".venv", "__pycache__"))
    proc = run(copy, tmp_path)
    assert proc.returncode == 0, proc.stderr
    return copy


def run(bundle: Path, tmp_path: Path, *args) -> subprocess.CompletedProcess:
    (tmp_path / "trust").mkdir(exist_ok=True)  # an empty trust folder: no key pinned
    env = {**os.environ, "EDGEPACK_TRUST_DIR": str(tmp_path / "trust")}
    return subprocess.run(["sh", str(bundle / "install.sh"), *map(str, args)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, stdin=subprocess.DEVNULL)


def tree(folder: Path) -> dict:
    """Every path under ``folder`` (links not followed) with its file's bytes."""
    return {str(p.relative_to(folder)): (p.read_bytes() if p.is_file() and not p.is_symlink() else os.readlink(p)
                                          if p.is_symlink() else None) for p in sorted(folder.rglob("*"))}


def assert_ended_cleanly(proc: subprocess.CompletedProcess) -> None:
    assert proc.returncode in (0, 1), proc.stderr
    assert not SHELL_ERROR.search(proc.stderr) and "Traceback" not in proc.stderr, proc.stderr
    if proc.returncode == 1:
        last = proc.stderr.strip().splitlines()[-1]
        assert last.startswith(("install.sh: error: ", "edgepack bundle ")), proc.stderr


ODD = ["-rf", "$(touch PWNED)", "a b", "*", "...", ".partial", "x\ny", "é", "versions", "current"]
NAMES = st.one_of(st.sampled_from(ODD), st.text(st.characters(codec="utf-8", exclude_characters="/\0"),
                                                min_size=1, max_size=10).filter(lambda s: s not in (".", "..")))
KINDS = st.sampled_from(["dir", "file", "link-to-outside", "link-to-outside-file", "dangling", "half-venv"])
LINKS = st.one_of(st.none(), st.sampled_from(["outside", "file", "dir", "versions/..", "../outside"]),
                  NAMES.map(lambda n: f"versions/{n}"), st.just("THE-VERSION"))
NEWEST = st.one_of(st.none(), st.text(max_size=40), st.sampled_from(
    ["2000-01-01T00:00:00+00:00", "2100-01-01T00:00:00+00:00", "2100-01-01T00:00:00", "<link>", "<dir>", "<0666>"]))


def plant(path: Path, kind: str, outside: Path) -> None:
    if kind == "dir":
        (path / "sub").mkdir(parents=True)
        (path / "sub" / "f").write_text("x")
    elif kind == "file":
        path.write_text("not a folder")
    elif kind == "link-to-outside":
        path.symlink_to(outside)
    elif kind == "link-to-outside-file":
        path.symlink_to(outside / "canary")
    elif kind == "dangling":
        path.symlink_to(outside / "nothing-here")
    else:  # what a killed python -m venv leaves
        (path / ".venv" / "bin").mkdir(parents=True)
        (path / ".venv" / "pyvenv.cfg").write_text("home = /usr/bin\n")


def fill_prefix(prefix: Path, outside: Path, versions, current, previous, newest, the_version: str) -> None:
    (prefix / "versions").mkdir(parents=True)
    for name, kind in versions:
        if not os.path.lexists(prefix / "versions" / name):
            plant(prefix / "versions" / name, kind, outside)
    for link, target in (("current", current), ("previous", previous)):
        if target in ("file", "dir"):
            plant(prefix / link, target, outside)
        elif target is not None:
            (prefix / link).symlink_to(outside if target == "outside" else target.replace("THE-VERSION", f"versions/{the_version}"))
    if newest in ("<link>", "<dir>"):
        plant(prefix / "newest", "link-to-outside-file" if newest == "<link>" else "dir", outside)
    elif newest is not None:
        (prefix / "newest").write_text(newest.replace("<0666>", "2000-01-01T00:00:00+00:00"))
        if newest == "<0666>":
            (prefix / "newest").chmod(0o666)


def test_installer_fuzz_prefix_state(installed_bundle, tmp_path):
    outside = tmp_path / "outside"
    (outside / "sub").mkdir(parents=True)
    (outside / "canary").write_text("keep me")
    (outside / "sub" / "f").write_text("keep me too")
    before, the_version, count = tree(outside), version(installed_bundle), iter(range(10**6))

    @FUZZ
    @given(versions=st.lists(st.tuples(st.one_of(NAMES, st.just(the_version), st.just(the_version + ".partial")),
                                       KINDS), max_size=4),
           current=LINKS, previous=LINKS, newest=NEWEST)
    def check(versions, current, previous, newest):
        prefix = tmp_path / f"p{next(count)}"
        fill_prefix(prefix, outside, versions, current, previous, newest, the_version)
        proc = run(installed_bundle, tmp_path, "--prefix", prefix)
        assert_ended_cleanly(proc)
        assert tree(outside) == before
        if proc.returncode == 0:
            assert os.readlink(prefix / "current") == f"versions/{the_version}"
        shutil.rmtree(prefix)

    check()
    assert not list(tmp_path.rglob("PWNED"))
    assert subprocess.run(["sh", str(installed_bundle / "verify-bundle"), "--all"]).returncode == 0


CONF_KEYS = st.sampled_from(["name", "arch", "python", "packages", "other", "", "name ", "NAME"])
CONF_VALUES = st.one_of(st.sampled_from(["digits-host-x86_64", "x86_64", "aarch64", "3.11", "3.9", "$(touch PWNED)",
                                         "`id`", "a;b", "numpy==2.4.6", "", "x" * 300]),
                        st.text(st.characters(codec="utf-8", exclude_characters="\0"), max_size=20))


def test_installer_fuzz_install_conf(installed_bundle, tmp_path):
    count = iter(range(10**6))

    @FUZZ
    @given(lines=st.lists(st.tuples(CONF_KEYS, CONF_VALUES), max_size=6), trailing_newline=st.booleans())
    def check(lines, trailing_newline):
        copy = tmp_path / f"c{next(count)}" / installed_bundle.name
        shutil.copytree(installed_bundle, copy, symlinks=True, copy_function=os.link)  # the env too: hard links
        text = "\n".join(f"{k}={v}" for k, v in lines) + ("\n" if trailing_newline else "")
        for rel in ("install.conf", MANIFEST, SUMS):
            (copy / rel).unlink()  # a hard link to the shared bundle's file: never written through
        (copy / "install.conf").write_bytes(text.encode())
        manifest = json.loads((installed_bundle / MANIFEST).read_text())
        manifest["files"]["install.conf"], manifest["sizes"]["install.conf"] = sha256_file(copy / "install.conf"), len(text.encode())
        reseal(copy, manifest)
        proc = run(copy, tmp_path)
        assert_ended_cleanly(proc)
        shutil.rmtree(copy.parent)

    check()
    assert not list(tmp_path.rglob("PWNED"))
    assert subprocess.run(["sh", str(installed_bundle / "verify-bundle"), "--all"]).returncode == 0
