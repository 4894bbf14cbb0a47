"""Rollouts with the edgepack.fleet collection (deploy/ansible): Ansible reaches four emulated boards of two
targets (two Raspberry Pi 4, two Zero 2 W) over real SSH (tests/helpers/fleet.py) and deploys the digits
bundle built once for both targets, signed; each board gets its target's bundle through the inventory
`edgepack fleet inventory` writes.

The tests run in order on the same boards, as a fleet lives: a check-mode run and a clean rollout of v1 (the
canary first, then batches); the same rollout again, changing nothing; v2, with one board whose health check
cannot pass (it keeps v1, the others carry on within the failure budget); v3 over the budget, with a board
whose served model never answers ready after the switch (it is rolled back) and a board the stopped rollout
never touches; then the whole fleet rolled back.

Batches here are ``serial: [1, "50%"]`` (canary, then two boards, then one) so that one failure in a batch of
two is 50%: within a budget of 50, over a budget of 25. The boards start with the bundle's environment
already made (Fleet.seed: pip under QEMU takes minutes); install.sh still checks it. The phases' timings are
printed (-s) and asserted against nothing: emulated boards are not device timings.
"""

import hashlib
import os
import re
import shutil
import tempfile
import time
from pathlib import Path

import pytest

from tests.conftest import run_cli
from tests.helpers.ansible import Ansible, install_collection
from tests.helpers.bundles import new_version, version
from tests.helpers.fleet import Fleet
from tests.helpers.net import free_port

pytestmark = [pytest.mark.emulated, pytest.mark.slow]
BOARDS = [("pi-01", "rpi4"), ("pi-02", "rpi4"), ("zero-01", "zero2w"), ("zero-02", "zero2w")]
BATCHES = ["-e", '{"edgepack_serial": [1, "50%"]}']  # canary pi-01, then [pi-02, zero-01], then [zero-02]
WITHIN_BUDGET = ["-e", "edgepack_max_fail_percentage=50"]
OVER_BUDGET = ["-e", "edgepack_max_fail_percentage=25"]


class Rollouts:
    """The fleet, its inventory and the bundles of every version, with Ansible ready to run."""

    def __init__(self, fleet: Fleet, ansible: Ansible, inventory: Path, versions: dict[str, Path]):
        self.fleet, self.ansible, self.inventory, self.versions = fleet, ansible, inventory, versions

    def run(self, playbook: str, dist: str | None = None, *args: str):
        """ansible-playbook edgepack.fleet.<playbook> with the bundles of version ``dist`` (v1, v2, ...)."""
        extra = ["-e", f"edgepack_dist={self.versions[dist]}"] if dist else []
        run = self.ansible.playbook(playbook, self.inventory, *extra, *args)
        print(f"\n{playbook} {dist or ''} {' '.join(args)}: exit {run.returncode}, {run.seconds:.0f} s")
        return run

    def prefix(self, board) -> Path:
        return board.path("opt", f"digits-{board.target}")

    def state(self) -> dict[str, tuple[str, str]]:
        """Each board's (current, previous) versions, read from its links (install.sh --prefix's layout)."""
        def link(path: Path) -> str:
            return os.readlink(path).removeprefix("versions/") if path.is_symlink() else ""
        return {b.name: (link(self.prefix(b) / "current"), link(self.prefix(b) / "previous")) for b in self.fleet.boards}

    def version(self, dist: str, board_name: str) -> str:
        return version(self.versions[dist] / f"digits-{self.fleet.board(board_name).target}")

    def staged(self, board) -> str:
        """sha256 of the archive the role last copied to the board ('' when none)."""
        archive = self.prefix(board) / "incoming" / f"digits-{board.target}.tar.gz"
        return hashlib.sha256(archive.read_bytes()).hexdigest() if archive.is_file() else ""


def summary(run) -> dict[str, list[str]]:
    """The summary the playbook ends with: board -> [target, state, runs, previous, (reason)]."""
    table = run.stdout.split("TASK [Which board runs which version]")[-1].split("PLAY RECAP")[0]
    rows = re.findall(r'^\s+"(\S+ .*?)",?$', table, re.M)
    return {row.split()[0]: re.split(r"\s{2,}", row)[1:] for row in rows[1:]}


def batches(run) -> list[list[str]]:
    """The boards each batch of the rollout play touched, in order."""
    plays = run.stdout.split("PLAY [Roll out]")[1:]
    return [sorted(set(re.findall(r"^\S+: \[([\w.-]+)[\] ]", p.split("PLAY [")[0], re.M)) - {"localhost"})
            for p in plays]


@pytest.fixture(scope="module")
def rollouts(fleet_build):
    dist, key = fleet_build
    work = Path(tempfile.mkdtemp(prefix="edgepack-fleet-", dir="/var/tmp"))  # outside /tmp: a board has its own
    start = time.monotonic()
    versions = {"v1": dist}
    for n, day in (("v2", "2031-01-02"), ("v3", "2031-01-03")):  # later builds: versions only move forward
        for target in ("rpi4", "zero2w"):
            new_version(dist / f"digits-{target}", work / n, f"{day}T00:00:00+00:00", key)
        versions[n] = work / n
    fleet = Fleet(work / "fleet", BOARDS)
    try:
        fleet.start()
        for board in fleet.boards:  # each version's environment, as a board that had it installed once would have
            for folder in versions.values():
                fleet.seed(board, folder / f"digits-{board.target}", board.path("opt", f"digits-{board.target}"))
        inventory = work / "inventory" / "hosts.yml"
        inventory.parent.mkdir()
        run_cli("packager", "fleet", "inventory", "--model", "digits", "--dist", dist, "-o", inventory,
                *(a for b in fleet.boards for a in ("--board", f"{b.name}={b.target}@root@{b.address}:{b.port}")))
        # Where each board installs (its persistent state), and the key every board pins.
        (inventory.parent / "host_vars").mkdir()
        for board in fleet.boards:
            (inventory.parent / "host_vars" / f"{board.name}.yml").write_text(
                f"edgepack_prefix: {board.path('opt', f'digits-{board.target}')}\n")
        (inventory.parent / "group_vars").mkdir()
        (inventory.parent / "group_vars" / "edgepack_boards.yml").write_text(
            f"edgepack_trusted_keys: ['{key}.pub']\n")
        ansible = Ansible(work / "ansible", install_collection(work), fleet.ssh_options(), fleet.env())
        print(f"\nfleet of {len(BOARDS)} boards up, seeded, versions built in {time.monotonic() - start:.0f} s")
        yield Rollouts(fleet, ansible, inventory, versions)
    finally:
        fleet.stop()  # every sshd, session and control master ended, none left behind
        shutil.rmtree(work, ignore_errors=True)


def test_check_mode_then_a_clean_rollout_canary_first(rollouts, fleet_build):
    names = [name for name, _ in BOARDS]
    check = rollouts.run("rollout", "v1", "--check", "-e", '{"edgepack_serial": ["100%"]}')  # reads, in one batch
    assert check.returncode == 0, check
    assert {b: row[1] for b, row in summary(check).items()} == dict.fromkeys(names, "would update")
    assert all(check.recap[b]["changed"] >= 1 for b in names)
    assert rollouts.state() == dict.fromkeys(names, ("", ""))  # nothing installed, nothing copied
    assert not any(rollouts.staged(b) for b in rollouts.fleet.boards)

    run = rollouts.run("rollout", "v1", *BATCHES, *WITHIN_BUDGET)
    assert run.returncode == 0, run
    assert batches(run) == [["pi-01"], ["pi-02", "zero-01"], ["zero-02"]]  # the canary alone, first
    v1 = {b: rollouts.version("v1", b) for b in names}
    assert rollouts.state() == {b: (v1[b], "") for b in names}
    table = summary(run)
    for board, target in BOARDS:  # each board got its own target's bundle
        assert table[board][:3] == [target, "updated", v1[board]] and v1[board].startswith(f"digits-{target}-")
        # install.sh --trust pinned the release key (the board's trust folder, EDGEPACK_TRUST_DIR)
        pinned = rollouts.fleet.board(board).path("etc", "edgepack", "allowed_signers").read_text()
        assert Path(f"{fleet_build[1]}.pub").read_text().split()[1] in pinned


def test_the_same_rollout_again_changes_nothing(rollouts):
    def looks():  # the archive each board holds, and when its current link was last made
        return {b.name: (rollouts.staged(b), os.lstat(rollouts.prefix(b) / "current").st_mtime_ns)
                for b in rollouts.fleet.boards}

    before = looks()
    run = rollouts.run("rollout", "v1", *BATCHES, *WITHIN_BUDGET)
    assert run.returncode == 0, run
    assert {b: counts["changed"] for b, counts in run.recap.items()} == dict.fromkeys([*dict(BOARDS), "localhost"], 0)
    assert {b: row[1] for b, row in summary(run).items()} == dict.fromkeys(dict(BOARDS), "unchanged")
    assert looks() == before


def test_a_board_failing_its_health_check_keeps_its_version_and_the_rest_carry_on(rollouts):
    failing = rollouts.fleet.board("zero-01")
    v1 = rollouts.state()["zero-01"][0]
    rollouts.fleet.set_env(failing, EDGEPACK_HEALTH_TIMEOUT="1")  # this board cannot finish its check in time
    try:
        run = rollouts.run("rollout", "v2", *BATCHES, *WITHIN_BUDGET)
    finally:
        rollouts.fleet.set_env(failing, EDGEPACK_HEALTH_TIMEOUT=None)
    assert run.returncode == 2, run  # a host failed, the rollout went on: 1 of 2 in its batch is not over 50%
    assert batches(run) == [["pi-01"], ["pi-02", "zero-01"], ["zero-02"]]
    state = rollouts.state()
    for board in ("pi-01", "pi-02", "zero-02"):
        assert state[board] == (rollouts.version("v2", board), rollouts.version("v1", board))
    assert state["zero-01"] == (v1, "")  # never lost its running version
    row = summary(run)["zero-01"]
    assert row[1:3] == ["failed", v1] and "health check" in row[4], row
    # It still runs it: the installed launcher, on the board, over SSH.
    prefix = rollouts.prefix(failing)
    health = rollouts.fleet.ssh(failing, f"{prefix}/bin/edge-run health {prefix}/current")
    assert "health: ok: digits-zero2w" in health.stdout + health.stderr


def test_a_rollout_over_its_failure_budget_stops_and_touches_no_further_board(rollouts):
    before = rollouts.state()
    untouched = rollouts.fleet.board("zero-02")
    staged = rollouts.staged(untouched)
    # zero-01 serves the model (install.sh --service, the role's variables in its host_vars). An emulated board
    # has no systemd: install.sh writes the unit (EDGE_RUN_UNIT_DIR) and nothing starts it, so after the switch
    # the served model never answers ready, and the role rolls the board back.
    failing = rollouts.fleet.board("zero-01")
    host_vars = rollouts.inventory.parent / "host_vars" / "zero-01.yml"
    plain = host_vars.read_text()
    host_vars.write_text(plain + f"edgepack_service: true\nedgepack_service_host: {failing.address}\n"
                                 f"edgepack_service_port: {free_port(failing.address)}\nedgepack_ready_timeout: 5\n")
    rollouts.fleet.set_env(failing, EDGE_RUN_UNIT_DIR=str(failing.path("units")))
    try:
        run = rollouts.run("rollout", "v3", *BATCHES, *OVER_BUDGET)
    finally:
        host_vars.write_text(plain)
        rollouts.fleet.set_env(failing, EDGE_RUN_UNIT_DIR=None)
    assert run.returncode == 2, run
    assert batches(run) == [["pi-01"], ["pi-02", "zero-01"]]  # 1 of 2 failed, over 25%: no third batch
    assert "PLAY [Fleet summary]" not in run.stdout  # the playbook stopped there; status (below) tells the rest
    state = rollouts.state()
    for board in ("pi-01", "pi-02"):
        assert state[board] == (rollouts.version("v3", board), before[board][0])
    # zero-01 switched to v3, whose served model never answered: back on the version it ran, v3 now previous
    assert state["zero-01"] == (before["zero-01"][0], rollouts.version("v3", "zero-01")), run
    assert f"zero-01 runs {before['zero-01'][0]} (rolled back)" in run.stdout
    assert (failing.path("units") / "edge-run-digits-zero2w.service").is_file()
    # zero-02 was never reached: same version, and no new archive copied to it
    assert state["zero-02"] == before["zero-02"] and rollouts.staged(untouched) == staged

    status = rollouts.run("status")
    assert status.returncode == 0, status
    assert {b: row[1:4] for b, row in summary(status).items()} == {
        b: ["installed", current, previous or "-"] for b, (current, previous) in state.items()}



def test_the_whole_fleet_rolls_back(rollouts):
    before = rollouts.state()
    run = rollouts.run("rollback")
    assert run.returncode == 0, run
    after = rollouts.state()
    assert after == {b: (previous, current) for b, (current, previous) in before.items()}
    for board, row in summary(run).items():
        assert row[1:4] == ["rolled back", after[board][0], after[board][1]]
