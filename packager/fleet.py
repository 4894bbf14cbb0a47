"""`edgepack fleet inventory`: an Ansible inventory that maps boards to targets.

A multi-target build writes one bundle per target (``DIST/<model>-<target>.tar.gz``); the boards of a
fleet are of several targets. The inventory puts each board in the group of its target and gives that
group the variables the edgepack.fleet collection (deploy/ansible) reads, so each board gets its own
target's bundle: ``edgepack_dist``, ``edgepack_model`` and ``edgepack_target`` (the role's
``edgepack_bundle`` is made of them). Ansible does the rest: reaching the boards over SSH, batches,
the failure budget. Users with an inventory of their own set the same three variables instead.

Groups: ``edgepack_boards`` (every board), ``edgepack_<target>`` per target and ``edgepack_canary`` (the
board the rollout updates first). Scalars are written as JSON strings, which YAML reads as they are.
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

from edge_runtime.errors import UserError

BOARD = re.compile(r"(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)=(?P<target>[^@\s]+)@(?:(?P<user>[A-Za-z0-9._-]+)@)?"
                   r"(?P<host>[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(?::(?P<port>[0-9]{1,5}))?")
FORM = "NAME=TARGET@[USER@]HOST[:PORT], e.g. pi-01=rpi4@pi@192.168.1.21"
# edgepack's targets run Raspberry Pi OS / Debian, whose python3 Ansible's modules use (no discovery round trip).
PYTHON = "/usr/bin/python3"


@dataclasses.dataclass(frozen=True)
class Board:
    """One board: its inventory name, target profile name and how SSH reaches it."""

    name: str
    target: str
    host: str
    user: str | None = None
    port: int | None = None


def parse_board(text: str) -> Board:
    """A ``--board`` value: NAME=TARGET@[USER@]HOST[:PORT]."""
    match = BOARD.fullmatch(text.strip())
    if not match:
        raise UserError(f"--board {text!r} is not a board", f"write it as {FORM}")
    port = int(match["port"]) if match["port"] else None
    if port is not None and not 1 <= port <= 65535:
        raise UserError(f"--board {text!r}: port {port} is not 1..65535", f"write it as {FORM}")
    return Board(match["name"], match["target"], match["host"].strip("[]"), match["user"], port)


def check_bundles(boards: list[Board], model: str, dist: Path) -> list[Board]:
    """Each board's target as its profile's name, once that target's bundle is in DIST and is for it."""
    from edge_runtime.bundle import open_bundle

    from .profiles import load_profile

    names = [b.name for b in boards]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise UserError(f"board {twice[0]} is given twice", "give each board one --board")
    targets = {b.target: load_profile(b.target).name for b in boards}
    missing = [t for t in dict.fromkeys(targets.values()) if not (dist / f"{model}-{t}.tar.gz").is_file()]
    if missing:
        raise UserError(
            f"no bundle for {', '.join(missing)} in {dist} (expected {dist / f'{model}-{missing[0]}.tar.gz'})",
            f"build every target the boards have: edgepack build {model}.onnx --target "
            f"{','.join(dict.fromkeys(targets.values()))} ... -o {dist}")
    for name in dict.fromkeys(targets.values()):
        _, manifest = open_bundle(dist / f"{model}-{name}.tar.gz")
        if manifest["target"].get("name") != name:
            raise UserError(f"{dist / f'{model}-{name}.tar.gz'} is a bundle for {manifest['target'].get('name')!r}, "
                            f"not {name!r}", "rebuild it; edgepack build names each archive after its target")
    return [dataclasses.replace(b, target=targets[b.target]) for b in boards]


def _group(target: str) -> str:
    return "edgepack_" + re.sub(r"[^A-Za-z0-9_]", "_", target)


def _q(value) -> str:
    return json.dumps(value)


def inventory(boards: list[Board], model: str, dist: Path, canary: str | None = None) -> str:
    """The inventory (YAML) for ``boards``, whose targets' bundles are ``DIST/<model>-<target>.tar.gz``."""
    if not boards:
        raise UserError("no board given", f"give one --board {FORM} per board")
    canary = canary or boards[0].name
    if canary not in {b.name for b in boards}:
        raise UserError(f"--canary {canary} is not one of the boards", "name one of the --board names")
    lines = [
        f"# edgepack fleet inventory: {len(boards)} board(s), bundles {dist}/{model}-<target>.tar.gz",
        "# for the edgepack.fleet collection: ansible-playbook -i THIS edgepack.fleet.rollout",
        "edgepack_boards:",
        "  vars:",
        f"    edgepack_dist: {_q(str(dist))}",
        f"    edgepack_model: {_q(model)}",
        f"    ansible_python_interpreter: {_q(PYTHON)}",
        "  children:",
    ]
    for target in dict.fromkeys(b.target for b in boards):
        lines += [f"    {_group(target)}:", "      vars:", f"        edgepack_target: {_q(target)}", "      hosts:"]
        for board in (b for b in boards if b.target == target):
            settings = {"ansible_host": board.host, "ansible_user": board.user, "ansible_port": board.port}
            pairs = ", ".join(f"{k}: {_q(v)}" for k, v in settings.items() if v is not None)
            lines.append(f"        {_q(board.name)}: {{{pairs}}}")
    lines += ["edgepack_canary:", "  hosts:", f"    {_q(canary)}: {{}}", ""]
    return "\n".join(lines)
