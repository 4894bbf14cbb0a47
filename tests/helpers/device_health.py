"""A board on every host: a sysfs tree in a temp folder and a stand-in vcgencmd.

What `edge-run serve --sysfs PATH --vcgencmd PATH` reads device health from,
printing what the real tool prints on a Raspberry Pi.
"""

from __future__ import annotations

import stat

from edge_runtime.metrics import DeviceSources

# What `vcgencmd get_throttled` prints on a Raspberry Pi that is under-voltage and throttled now (bits 0
# and 2), both having also happened since boot (bits 16 and 18). The firmware tool's output format.
PI_UNDER_VOLTAGE = "throttled=0x50005"


def write_vcgencmd(path, stdout: str, code: int = 0, delay: float = 0.0):
    """An executable standing in for the board's vcgencmd: answers `get_throttled` with stdout and code,
    after ``delay`` seconds (a firmware mailbox that is slow to answer)."""
    path.write_text("#!/bin/sh\n"
                    '[ "$1" = get_throttled ] || { echo "usage: vcgencmd get_throttled" >&2; exit 2; }\n'
                    + (f"sleep {delay}\n" if delay else "")
                    + f"printf '%s\\n' '{stdout}'\nexit {code}\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def fake_board(folder, temp: str = "47250", throttled: str = PI_UNDER_VOLTAGE, delay: float = 0.0) -> DeviceSources:
    """A sysfs tree with one thermal zone (millidegrees, as the kernel writes them) and a vcgencmd."""
    zone = folder / "sys" / "class" / "thermal" / "thermal_zone0"
    zone.mkdir(parents=True)
    (zone / "temp").write_text(temp + "\n")
    return DeviceSources(sysfs=str(folder / "sys"),
                         vcgencmd=str(write_vcgencmd(folder / "vcgencmd", throttled, delay=delay)))
