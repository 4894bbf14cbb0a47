import dataclasses
import json
import tomllib

import pytest

from edge_runtime.errors import UserError
from packager.cli import main
from packager.profiles import all_profiles, DEVICES_DIR, load_profile, parse_profile


def test_rpi4_profile():
    p = load_profile("rpi4")
    assert (p.arch, p.cpu, p.cores, p.os["python"], p.os["glibc"]) == ("aarch64", "cortex-a72", 4, "3.11", "2.36")
    assert p.runtime["package"] == "ai-edge-litert" and "xnnpack" in p.delegates


def rpi4_data():
    return tomllib.loads((DEVICES_DIR / "rpi4.toml").read_text())


@pytest.mark.parametrize(
    "edit, expect",
    [
        (lambda d: d.pop("cpu"), "missing key 'cpu'"),
        (lambda d: d.update(cores="four"), "'cores' must be a int"),
        (lambda d: d.update(cores=True), "'cores' must be a int"),
        (lambda d: d.update(arch="mips"), "'arch' must be one of"),
        (lambda d: d.update(delegates=["gpu"]), "'delegates' must be one of"),
        (lambda d: d.update(colour="red"), "unknown key(s) colour"),
        (lambda d: d["os"].pop("glibc"), "missing key 'os.glibc'"),
        (lambda d: d["os"].update(python="3"), "'os.python' must be MAJOR.MINOR"),
        (lambda d: d["runtime"].update(package="tensorflow"), "'runtime.package' must be one of"),
        (lambda d: d.pop("cpu_features"), "'cpu_part' and 'cpu_features' go together, found only 'cpu_part'"),
        (lambda d: d.update(cpu_part="d08"), "'cpu_part' must be the CPU's part number like \"0xd08\", found 'd08'"),
        (lambda d: d.update(cpu_part=0xd08), "'cpu_part' must be a str"),
        (lambda d: d.update(cpu_features="fp asimd"), "'cpu_features' must be a list"),
        (lambda d: d.update(cpu_features=[]), "'cpu_features' must list the CPU's features like"),
        (lambda d: d.update(cpu_features=[]), '"asimd"]: it is empty'),
        (lambda d: d.update(cpu_features=["fp", "Neon!"]), "'Neon!' is no feature name"),
        (lambda d: d.update(cpu_features=["fp", 1]), "1 is no feature name"),
        (lambda d: d.update(cpu_features=["fp", "fp"]), "it repeats a name"),
    ],
)
def test_profile_validation(edit, expect):
    data = rpi4_data()
    edit(data)
    with pytest.raises(UserError, match=expect.replace("(", r"\(").replace(")", r"\)")):
        parse_profile(data, "test.toml")


def test_the_cpus_part_features_and_fp16_arithmetic_are_profile_facts(tmp_path):
    rpi5, rpi4 = load_profile("rpi5"), load_profile("rpi4")
    assert (rpi5.cpu_part, rpi5.fp16_arithmetic) == ("0xd0b", True)  # Cortex-A76: fphp asimdhp
    assert [(p.cpu_part, p.fp16_arithmetic) for p in (rpi4, load_profile("zero2w"))] == [("0xd08", False),
                                                                                         ("0xd03", False)]
    assert rpi4.cpu_features == ("fp", "asimd", "evtstrm", "crc32", "cpuid")
    # the manifest carries them, and `edgepack emulate` reads the profile back from it
    data = {k: v for k, v in rpi5.to_dict().items() if k != "source"}
    assert data["cpu_features"][-1] == "asimddp" and parse_profile(data, "manifest") == \
        dataclasses.replace(rpi5, source="manifest")
    # a user's profile may leave them out: then nothing is claimed
    mine = rpi4_data()
    del mine["cpu_part"], mine["cpu_features"]
    profile = parse_profile(mine, "mine.toml")
    assert (profile.cpu_part, profile.cpu_features, profile.fp16_arithmetic) == (None, None, None)
    assert "cpu_part" not in profile.to_dict() and "cpu_features" not in profile.to_dict()


def test_user_profile_file(tmp_path):
    path = tmp_path / "mypi.toml"
    path.write_text((DEVICES_DIR / "rpi4.toml").read_text().replace('name = "rpi4"', 'name = "mypi"'))
    assert load_profile(str(path)).name == "mypi"


def test_targets_table_and_json(capsys):
    assert main(["targets"]) == 0
    out = capsys.readouterr().out
    for name in ("rpi4", "rpi5", "zero2w", "arm64-trixie", "coral-usb"):
        assert f"\n{name} " in out
    assert "cortex-a76" in out and "cortex-a53" in out and "ai-edge-litert 2.3.0" in out
    # 32-bit Pi OS is named, with the reason it is no target
    assert "armv7l" in out and "no TFLite runtime wheel on PyPI" in out
    assert main(["targets", "--json"]) == 0
    data = {p["name"]: p for p in json.loads(capsys.readouterr().out)}
    assert data["rpi4"]["os"]["debian_suite"] == "bookworm"
    assert data["arm64-trixie"]["os"] == {"name": "Debian", "debian_suite": "trixie", "python": "3.13", "glibc": "2.41"}
    assert data["zero2w"]["memory_mb"] == 512 and data["zero2w"]["memory_budget_mb"] == 256
    assert data["rpi4"]["memory_budget_mb"] == 2048  # half the memory when the profile does not say
    assert data["coral-usb"]["delegates"] == ["edgetpu", "xnnpack"]


def test_every_shipped_profile_is_emulated_and_has_wheels_for_its_python():
    """Each profile names a CPU QEMU emulates (its cpuinfo too) and a runtime that has wheels for it."""
    from packager import emulator
    from packager.wheels import pip_platform_args

    for profile in all_profiles():
        assert f"CPU part\t: {profile.cpu_part}\n" in emulator.cpuinfo(profile), profile.name
        assert emulator.emulator_for(profile)[0] == "qemu-aarch64-static"
        assert "--python-version" in pip_platform_args(profile)


def _variant(tmp_path, name, **replace):
    text = (DEVICES_DIR / "rpi4.toml").read_text().replace('name = "rpi4"', f'name = "{name}"')
    for old, new in replace.items():
        text = text.replace(old, new)
    path = tmp_path / f"{name}.toml"
    path.write_text(text)
    return path


def test_memory_budget_over_memory_is_refused(tmp_path):
    path = _variant(tmp_path, "big", **{"memory_mb = 4096": "memory_mb = 512\nmemory_budget_mb = 1024"})
    with pytest.raises(UserError, match=r"'memory_budget_mb' \(1024\) exceeds 'memory_mb' \(512\)"):
        load_profile(str(path))


def test_external_delegate_table_goes_with_the_delegate_name(tmp_path):
    listed = _variant(tmp_path, "npu1", **{'delegates = ["xnnpack"]': 'delegates = ["external", "xnnpack"]'})
    with pytest.raises(UserError, match=r"lists \"external\" exactly when an \[external_delegate\] table"):
        load_profile(str(listed))
    relative = tmp_path / "npu2.toml"
    relative.write_text(listed.read_text().replace('name = "npu1"', 'name = "npu2"') +
                        '\n[external_delegate]\nlibrary = "libvx_delegate.so"\n')
    with pytest.raises(UserError, match="must be an absolute path on the device"):
        load_profile(str(relative))
    good = tmp_path / "npu3.toml"
    good.write_text(listed.read_text().replace('name = "npu1"', 'name = "npu3"') +
                    '\n[external_delegate]\nlibrary = "/usr/lib/libvx_delegate.so"\n'
                    '[external_delegate.options]\ncache_file_path = "/var/cache/vx"\n')
    profile = load_profile(str(good))
    assert profile.to_dict()["external_delegate"] == {"library": "/usr/lib/libvx_delegate.so",
                                                      "options": {"cache_file_path": "/var/cache/vx"}}
    assert "external_delegate" not in load_profile("rpi4").to_dict()


def test_target_lists(tmp_path):
    from packager.preflight import load_targets

    assert [p.name for p in load_targets("rpi4, rpi5,zero2w")] == ["rpi4", "rpi5", "zero2w"]
    with pytest.raises(UserError, match="rpi4 is named twice"):
        load_targets("rpi4,rpi5,rpi4")
    with pytest.raises(UserError, match="expected one target or several separated by commas"):
        load_targets("rpi4,,rpi5")
    with pytest.raises(UserError, match="unknown target 'rpi9'"):
        load_targets("rpi4,rpi9")
    armv7 = _variant(tmp_path, "pi-32bit", **{'arch = "aarch64"': 'arch = "armv7l"'})
    with pytest.raises(UserError, match=r"target pi-32bit: 32-bit ARM \(armv7l.*no TFLite runtime wheel on PyPI"):
        load_targets(f"rpi4,{armv7}")
    assert load_targets(str(armv7), wheels=False)[0].arch == "armv7l"  # --no-wheels: the user brings the runtime


def test_targets_with_different_io_dtypes_are_refused_without_io_dtype(tmp_path, capsys):
    uint8 = _variant(tmp_path, "tpu-uint8", **{'io_dtype = "int8"': 'io_dtype = "uint8"'})
    code = main(["build", "m.onnx", "--target", f"rpi4,{uint8}", "--calibration", "random", "-o", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and "want different I/O dtypes (rpi4 int8, tpu-uint8 uint8)" in err and "--io-dtype" in err
    assert not (tmp_path / "o").exists()


def test_broken_profile_file_is_a_clear_error(capsys, tmp_path):
    path = tmp_path / "broken.toml"
    path.write_text("name = [unclosed")
    code = main(["build", "m.onnx", "--target", str(path), "--calibration", "random"])
    assert code == 2 and "is not valid TOML" in capsys.readouterr().err
