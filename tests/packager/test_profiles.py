import json
import tomllib

import pytest

from edge_runtime.errors import UserError
from packager.cli import main
from packager.profiles import DEVICES_DIR, load_profile, parse_profile


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
    ],
)
def test_profile_validation(edit, expect):
    data = rpi4_data()
    edit(data)
    with pytest.raises(UserError, match=expect.replace("(", r"\(").replace(")", r"\)")):
        parse_profile(data, "test.toml")


def test_user_profile_file(tmp_path):
    path = tmp_path / "mypi.toml"
    path.write_text((DEVICES_DIR / "rpi4.toml").read_text().replace('name = "rpi4"', 'name = "mypi"'))
    assert load_profile(str(path)).name == "mypi"


def test_targets_table_and_json(capsys):
    assert main(["targets"]) == 0
    out = capsys.readouterr().out
    assert "rpi4" in out and "cortex-a72" in out and "ai-edge-litert 2.3.0" in out
    assert main(["targets", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data[0]["name"] == "rpi4" and data[0]["os"]["debian_suite"] == "bookworm"


def test_broken_profile_file_is_a_clear_error(capsys, tmp_path):
    path = tmp_path / "broken.toml"
    path.write_text("name = [unclosed")
    code = main(["build", "m.onnx", "--target", str(path), "--calibration", "random"])
    assert code == 2 and "is not valid TOML" in capsys.readouterr().err
