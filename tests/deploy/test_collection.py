"""The edgepack.fleet collection (deploy/ansible) builds and installs with ansible-galaxy, passes ansible-lint
(offline: nothing is fetched), and its token drop-in makes a unit systemd accepts."""

import shutil
import subprocess

import pytest

from tests.helpers.ansible import COLLECTION, fleet_bin, tool_env


def test_builds_installs_and_passes_ansible_lint(tmp_path):
    env = tool_env(tmp_path)
    built = subprocess.run([fleet_bin() / "ansible-galaxy", "collection", "build", str(COLLECTION),
                            "--output-path", str(tmp_path)], capture_output=True, text=True, env=env,
                           stdin=subprocess.DEVNULL)
    assert built.returncode == 0, built.stderr
    archive = tmp_path / "edgepack-fleet-0.1.0.tar.gz"
    installed = subprocess.run([fleet_bin() / "ansible-galaxy", "collection", "install", str(archive),
                                "-p", str(tmp_path / "collections")], capture_output=True, text=True, env=env,
                               stdin=subprocess.DEVNULL)
    assert installed.returncode == 0, installed.stderr
    role = tmp_path / "collections" / "ansible_collections" / "edgepack" / "fleet" / "roles" / "edgepack"
    assert (role / "tasks" / "main.yml").is_file()
    # The playbooks' own roles resolve through the installed copy; the linted files are the repository's.
    lint = subprocess.run([fleet_bin() / "ansible-lint", "--nocolor", "--offline"], capture_output=True, text=True,
                          cwd=COLLECTION, stdin=subprocess.DEVNULL,
                          env={**env, "ANSIBLE_COLLECTIONS_PATH": str(tmp_path / "collections")})
    assert lint.returncode == 0, lint.stdout[-4000:] + lint.stderr[-4000:]
    assert "Passed: 0 failure(s), 0 warning(s)" in lint.stdout + lint.stderr


def test_token_drop_in_passes_systemd_analyze(tmp_path):
    """The role's drop-in (LoadCredential= and ExecStart with --token-file %d/token) over the unit install.sh
    writes, as systemd on a board would load them."""
    if shutil.which("systemd-analyze") is None:
        pytest.fail("systemd-analyze is missing (Debian's systemd package)")
    prefix = tmp_path / "opt" / "digits-rpi4"
    (prefix / "bin").mkdir(parents=True)
    (prefix / "bin" / "edge-run").write_text("#!/bin/sh\n")
    (prefix / "bin" / "edge-run").chmod(0o755)
    unit_dir = tmp_path / "system"
    (unit_dir / "edge-run-digits-rpi4.service.d").mkdir(parents=True)
    unit = (COLLECTION.parent.parent / "packager" / "device_files" / "edge-run.service").read_text()
    for key, value in {"@NAME@": "digits-rpi4", "@BUNDLE@": f"{prefix}/current", "@LAUNCHER@": f"{prefix}/bin/edge-run",
                       "@HOST@": "127.0.0.1", "@PORT@": "8080"}.items():
        unit = unit.replace(key, value)
    (unit_dir / "edge-run-digits-rpi4.service").write_text(unit)
    rendered = subprocess.run(
        [fleet_bin() / "ansible", "localhost", "-m", "ansible.builtin.template", "-a",
         f"src={COLLECTION}/roles/edgepack/templates/token.conf.j2 dest={unit_dir}/edge-run-digits-rpi4.service.d/"
         "edgepack-token.conf", "-e", f"_edgepack_name=digits-rpi4 edgepack_prefix={prefix} "
         "edgepack_service_host=127.0.0.1 edgepack_service_port=8080"],
        capture_output=True, text=True, env=tool_env(tmp_path), stdin=subprocess.DEVNULL)
    assert rendered.returncode == 0, rendered.stdout + rendered.stderr
    drop_in = (unit_dir / "edge-run-digits-rpi4.service.d" / "edgepack-token.conf").read_text()
    assert "LoadCredential=token:/etc/edgepack/digits-rpi4.token" in drop_in
    assert f"ExecStart={prefix}/bin/edge-run serve {prefix}/current --host 127.0.0.1 --port 8080 --token-file %d/token" \
        in drop_in
    def verify():
        return subprocess.run(["systemd-analyze", "verify", "--man=no", str(unit_dir / "edge-run-digits-rpi4.service")],
                              capture_output=True, text=True, env={"SYSTEMD_UNIT_PATH": f"{unit_dir}:"})

    assert verify().returncode == 0 and verify().stderr.strip() == "", verify().stderr
    # the drop-in is what was verified: broken, the same check fails
    (unit_dir / "edge-run-digits-rpi4.service.d" / "edgepack-token.conf").write_text(
        drop_in.replace(f"ExecStart={prefix}", "ExecStart=relative"))
    assert verify().returncode != 0
