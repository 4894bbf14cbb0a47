"""Device health on /metrics: the SoC temperature from a sysfs tree, throttling from vcgencmd.

`edge-run serve --sysfs PATH --vcgencmd PATH` reads them from elsewhere (a
container that mounts the host's /sys at /host/sys), which is also how the
tests give every host a board to read: a sysfs tree in a temp folder and a
stand-in vcgencmd that prints what the real one prints on a Pi.
"""

import pytest

from edge_runtime.metrics import Metrics, device_health
from tests.conftest import run_cli
from tests.helpers.device_health import PI_UNDER_VOLTAGE, fake_board, write_vcgencmd


def samples(families) -> dict:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for f in families for s in f.samples}


def test_health_read_from_another_sysfs_root_and_vcgencmd(tmp_path):
    got = samples(device_health(fake_board(tmp_path)))
    assert got == {("edge_run_soc_temperature_celsius", (("zone", "thermal_zone0"),)): 47.25,
                   ("edge_run_throttled_state", ()): 0x50005, ("edge_run_throttled_now", ()): 1}
    metrics = Metrics({"model": "m"}, device=fake_board(tmp_path / "again"))
    metrics.device.refresh()  # what the server's device-health thread does
    text = metrics.render()
    assert 'edge_run_soc_temperature_celsius{zone="thermal_zone0"} 47.25' in text
    assert "edge_run_throttled_now 1.0" in text


@pytest.mark.parametrize("temp", ["hot", "", "47.5", "0x47", "47_250", "\uff14\uff17\uff12\uff15\uff10", "+47250"])
def test_malformed_temp_gives_no_sample(tmp_path, temp):
    device = fake_board(tmp_path, temp=temp)
    good = tmp_path / "sys" / "class" / "thermal" / "thermal_zone1"
    good.mkdir()
    (good / "temp").write_text("-5000\n")  # below zero is a real reading
    (tmp_path / "sys" / "class" / "thermal" / "thermal_zone2" / "temp").mkdir(parents=True)  # read fails (EISDIR)
    got = samples(device_health(device))
    assert {k: v for k, v in got.items() if k[0] == "edge_run_soc_temperature_celsius"} == {
        ("edge_run_soc_temperature_celsius", (("zone", "thermal_zone1"),)): -5.0}
    assert got[("edge_run_throttled_now", ())] == 1  # the rest of the board's health is still there


@pytest.mark.parametrize("stdout, code", [
    ("VCHI initialization failed", 255),  # no access to /dev/vchiq
    (PI_UNDER_VOLTAGE, 1),  # a plausible line, but the tool said it failed
    ("throttled=unknown", 0),
    ("", 0),
])
def test_failing_vcgencmd_gives_no_throttling_and_no_crash(tmp_path, stdout, code):
    device = fake_board(tmp_path)
    write_vcgencmd(tmp_path / "vcgencmd", stdout, code)
    got = samples(device_health(device))
    assert got == {("edge_run_soc_temperature_celsius", (("zone", "thermal_zone0"),)): 47.25}
    metrics = Metrics({"model": "m"}, device=device)
    metrics.device.refresh()
    text = metrics.render()
    assert "edge_run_throttled" not in text and "edge_run_soc_temperature_celsius{" in text


def test_vcgencmd_gone_after_start_gives_no_throttling(tmp_path):
    device = fake_board(tmp_path)
    (tmp_path / "vcgencmd").unlink()
    assert [f.name for f in device_health(device)] == ["edge_run_soc_temperature_celsius"]


def given(folder, what: str) -> str:
    """A path to give a flag: a folder, a plain (not executable) file, nothing there, or a bare name."""
    if what == "file":
        (folder / "file").write_text("#!/bin/sh\n")
        return str(folder / "file")
    return {"folder": str(folder), "missing": str(folder / "missing"), "name": "no-such-vcgencmd-here"}[what]


@pytest.mark.parametrize("flag, what, words", [
    ("--sysfs", "missing", "expected the folder of a sysfs tree (thermal zones under class/thermal), found nothing "
                           "there. pass the folder where the host's /sys is mounted (e.g. --sysfs /host/sys)"),
    ("--sysfs", "file", "expected the folder of a sysfs tree (thermal zones under class/thermal), found a file there"),
    ("--vcgencmd", "folder", "expected an executable program, found a folder. pass the path of the board's vcgencmd"),
    ("--vcgencmd", "file", "expected an executable program, found a file that is not executable"),
    ("--vcgencmd", "missing", "expected an executable program, found nothing. pass"),
    ("--vcgencmd", "name", "expected an executable program, found no such program on PATH"),
])
def test_bad_health_source_is_a_one_line_error_before_anything_starts(tmp_path, flag, what, words):
    proc = run_cli("edge_runtime", "serve", tmp_path / "no-bundle", flag, given(tmp_path, what), check=False)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.startswith(f"error: {flag} ") and words in proc.stderr and proc.stderr.count("\n") == 1, \
        proc.stderr
