"""`edgepack fleet inventory`: boards mapped to targets, read back by Ansible's own ansible-inventory, so each
board's group gives the edgepack.fleet role its target's bundle (DIST/<model>-<target>.tar.gz)."""

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from edge_runtime.errors import UserError
from packager.fleet import Board, inventory, parse_board
from tests.conftest import run_cli
from tests.helpers.ansible import fleet_bin, tool_env


def test_board_forms():
    assert parse_board("pi-01=rpi4@10.0.0.21") == Board("pi-01", "rpi4", "10.0.0.21")
    assert parse_board("zero-01=zero2w@pi@[fe80::1]:2222") == Board("zero-01", "zero2w", "fe80::1", "pi", 2222)
    assert parse_board("k1=devices/my.toml@ops@board.lan") == Board("k1", "devices/my.toml", "board.lan", "ops")
    for bad in ("pi-01", "pi-01=rpi4", "pi-01=rpi4@", "pi 01=rpi4@h", "=rpi4@h", "pi-01=rpi4@h:99999"):
        with pytest.raises(UserError, match="write it as NAME=TARGET@"):
            parse_board(bad)


def ansible_inventory(path: Path, tmp_path: Path) -> dict:
    proc = subprocess.run([fleet_bin() / "ansible-inventory", "-i", str(path), "--list"], capture_output=True,
                          text=True, env=tool_env(tmp_path), stdin=subprocess.DEVNULL)
    assert proc.returncode == 0 and "WARNING" not in proc.stderr.upper().replace("CRYPTOGRAPHYDEPRECATIONWARNING", ""), \
        proc.stderr
    return json.loads(proc.stdout)


def test_ansible_reads_boards_targets_and_bundles(tmp_path):
    boards = [Board("pi-01", "rpi4", "10.0.0.21", "pi"), Board("zero-01", "zero2w", "fe80::1", None, 2222),
              Board("k.1", "arm64-trixie", "board.lan")]
    path = tmp_path / "hosts.yml"
    path.write_text(inventory(boards, "digits", Path("/srv/dist"), canary="zero-01"))
    listed = ansible_inventory(path, tmp_path)
    assert listed["edgepack_boards"]["children"] == ["edgepack_rpi4", "edgepack_zero2w", "edgepack_arm64_trixie"]
    assert listed["edgepack_canary"]["hosts"] == ["zero-01"]
    assert listed["edgepack_arm64_trixie"]["hosts"] == ["k.1"]
    hostvars = listed["_meta"]["hostvars"]
    assert hostvars["pi-01"] == {"ansible_host": "10.0.0.21", "ansible_user": "pi", "edgepack_target": "rpi4",
                                 "edgepack_dist": "/srv/dist", "edgepack_model": "digits",
                                 "ansible_python_interpreter": "/usr/bin/python3"}
    assert hostvars["zero-01"]["ansible_port"] == 2222 and hostvars["zero-01"]["edgepack_target"] == "zero2w"
    with pytest.raises(UserError, match="--canary pi-09 is not one of the boards"):
        inventory(boards, "digits", Path("/srv/dist"), canary="pi-09")


def test_cli_refuses_what_it_cannot_map(tmp_path):
    (tmp_path / "dist").mkdir()
    cases = {
        ("--board", "pi-01=rpi4@h"): "error: no bundle for rpi4 in",
        ("--board", "pi-01=rpi9@h"): "error: unknown target 'rpi9'",
        ("--board", "pi-01=rpi4@h", "--board", "pi-01=zero2w@g"): "error: board pi-01 is given twice",
        ("--board", "pi-01"): "error: --board 'pi-01' is not a board",
    }
    for args, message in cases.items():
        proc = run_cli("packager", "fleet", "inventory", "--model", "digits", "--dist", tmp_path / "dist", *args,
                       check=False)
        assert proc.returncode == 2 and message in proc.stderr, (args, proc.stderr)
        assert len(proc.stderr.strip().splitlines()) == 1  # one line, no traceback


@pytest.mark.slow
def test_cli_maps_each_board_to_its_targets_bundle(fleet_build, tmp_path):
    dist, _ = fleet_build
    out = tmp_path / "hosts.yml"
    proc = run_cli("packager", "fleet", "inventory", "--model", "digits", "--dist", dist, "-o", out,
                   "--board", "pi-01=rpi4@pi@10.0.0.21", "--board", "zero-01=zero2w@pi@10.0.0.31")
    assert proc.stderr.strip() == f"wrote {out}: 2 board(s) of 2 target(s)"
    hostvars = ansible_inventory(out, tmp_path)["_meta"]["hostvars"]
    for board, target in (("pi-01", "rpi4"), ("zero-01", "zero2w")):  # the role's edgepack_bundle, made of them
        bundle = Path(hostvars[board]["edgepack_dist"]) / f"{hostvars[board]['edgepack_model']}-{target}.tar.gz"
        assert hostvars[board]["edgepack_target"] == target and bundle.is_file()
    # An archive that is not the target's bundle is refused: its manifest names its own target.
    wrong = tmp_path / "dist"
    wrong.mkdir()
    shutil.copy(dist / "digits-rpi4.tar.gz", wrong / "digits-rpi5.tar.gz")
    proc = run_cli("packager", "fleet", "inventory", "--model", "digits", "--dist", wrong,
                   "--board", "pi-01=rpi5@10.0.0.21", check=False)
    assert proc.returncode == 2 and "is a bundle for 'rpi4', not 'rpi5'" in proc.stderr, proc.stderr
