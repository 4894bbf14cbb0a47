"""Device profiles: the TOML files in devices/, read and validated.

A profile is data: what the device is (architecture, CPU, memory), what it
runs (Debian suite, Python, glibc) and which TFLite runtime and delegates the
bundle targets. A user can pass a path to their own profile file.
"""

from __future__ import annotations

import dataclasses
import re
import tomllib
from pathlib import Path
from typing import Any

from edge_runtime.errors import UserError

DEVICES_DIR = Path(__file__).resolve().parent.parent / "devices"

ARCHES = ("aarch64", "armv7l", "x86_64")
DELEGATES = ("xnnpack", "edgetpu", "nnapi", "external")
IO_DTYPES = ("int8", "uint8", "float32")

# key -> (type, required); tables are checked key by key below.
_TOP = {
    "name": (str, True),
    "human_name": (str, True),
    "arch": (str, True),
    "cpu": (str, True),
    "cores": (int, True),
    "memory_mb": (int, True),
    "memory_budget_mb": (int, False),
    "default_threads": (int, True),
    "io_dtype": (str, True),
    "delegates": (list, True),
    "os": (dict, True),
    "runtime": (dict, True),
    "external_delegate": (dict, False),
    "edgetpu_runtime": (str, False),  # the device's Edge TPU runtime version (libedgetpu), e.g. "14"
    "cpu_part": (str, False),  # what /proc/cpuinfo says of the CPU: its part number, e.g. "0xd08" (Cortex-A72)
    "cpu_features": (list, False),  # ... and its Features line, e.g. ["fp", "asimd", "evtstrm", "crc32", "cpuid"]
}
_EXTERNAL = {
    "library": (str, True),
    "options": (dict, False),
}
_OS = {
    "name": (str, True),
    "debian_suite": (str, True),
    "python": (str, True),
    "glibc": (str, True),
}
_RUNTIME = {
    "package": (str, True),
    "version": (str, True),
    "numpy": (str, True),
    "why": (str, False),
}
RUNTIME_PACKAGES = ("ai-edge-litert", "tflite-runtime")
# Architectures a profile may describe but no TFLite runtime wheel on PyPI serves.
NO_RUNTIME_WHEELS = {
    "armv7l": "32-bit ARM (armv7l, e.g. 32-bit Raspberry Pi OS) has no TFLite runtime wheel on PyPI: "
              "ai-edge-litert ships aarch64 and x86-64 only, and tflite-runtime never shipped armv7l "
              "wheels there",
}


@dataclasses.dataclass(frozen=True)
class Profile:
    """A validated device profile."""

    name: str
    human_name: str
    arch: str
    cpu: str
    cores: int
    memory_mb: int
    memory_budget_mb: int
    default_threads: int
    io_dtype: str
    delegates: tuple[str, ...]
    os: dict[str, str]
    runtime: dict[str, str]
    source: str
    external_delegate: dict | None = None
    edgetpu_runtime: str | None = None
    cpu_part: str | None = None
    cpu_features: tuple[str, ...] | None = None

    @property
    def fp16_arithmetic(self) -> bool | None:
        """Whether the CPU computes in half precision (Armv8.2's FP16 extension: ``fphp`` and ``asimdhp``
        among its features, as on the Cortex-A76; the A72 and A53 convert float16 but compute in float32).
        None when the profile does not give its CPU's features."""
        if self.cpu_features is None:
            return None
        return {"fphp", "asimdhp"} <= set(self.cpu_features)

    def to_dict(self) -> dict[str, Any]:
        """The whole profile as plain JSON-able data (for the manifest)."""
        data = dataclasses.asdict(self)
        data["delegates"] = list(self.delegates)
        if self.cpu_features is not None:
            data["cpu_features"] = list(self.cpu_features)
        for key in ("external_delegate", "edgetpu_runtime", "cpu_part", "cpu_features"):
            if data[key] is None:  # optional: absent, as in the profile file
                del data[key]
        return data


def _check_table(table: dict, schema: dict, where: str, source: str) -> None:
    for key, (kind, required) in schema.items():
        if key not in table:
            if required:
                raise UserError(
                    f"device profile {source}: missing key '{where}{key}'",
                    "see devices/rpi4.toml for a complete profile",
                )
            continue
        value = table[key]
        # bool is an int in Python; a profile saying `cores = true` is wrong.
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise UserError(
                f"device profile {source}: '{where}{key}' must be a {kind.__name__}, "
                f"found {type(value).__name__} {value!r}",
                "fix the value in the profile file",
            )
    unknown = sorted(set(table) - set(schema))
    if unknown:
        raise UserError(
            f"device profile {source}: unknown key(s) {', '.join(where + k for k in unknown)}",
            f"allowed here: {', '.join(schema)}",
        )


def _check_choice(value: Any, choices: tuple, key: str, source: str) -> None:
    if value not in choices:
        raise UserError(
            f"device profile {source}: '{key}' must be one of {', '.join(choices)}, found {value!r}",
            "fix the value in the profile file",
        )


def parse_profile(data: dict, source: str) -> Profile:
    """Validate a profile's parsed TOML and build the Profile."""
    _check_table(data, _TOP, "", source)
    _check_table(data["os"], _OS, "os.", source)
    _check_table(data["runtime"], _RUNTIME, "runtime.", source)
    _check_choice(data["arch"], ARCHES, "arch", source)
    _check_choice(data["io_dtype"], IO_DTYPES, "io_dtype", source)
    _check_choice(data["runtime"]["package"], RUNTIME_PACKAGES, "runtime.package", source)
    for delegate in data["delegates"]:
        _check_choice(delegate, DELEGATES, "delegates", source)
    external = data.get("external_delegate")
    if external is not None:
        _check_table(external, _EXTERNAL, "external_delegate.", source)
        if not external["library"].startswith("/"):
            raise UserError(f"device profile {source}: 'external_delegate.library' must be an absolute path on "
                            f"the device, found {external['library']!r}", "e.g. /usr/lib/libvx_delegate.so")
        for key, value in external.get("options", {}).items():
            if not isinstance(value, str):
                raise UserError(f"device profile {source}: external_delegate.options.{key} must be a string, "
                                f"found {value!r}", 'quote it: key = "value"')
    if ("external" in data["delegates"]) != (external is not None):
        raise UserError(f"device profile {source}: 'delegates' lists \"external\" exactly when an "
                        "[external_delegate] table names the library", "add the table, or drop \"external\"")
    _check_cpu_info(data, source)
    data = {**data, "memory_budget_mb": data.get("memory_budget_mb", data["memory_mb"] // 2)}
    for key in ("cores", "memory_mb", "memory_budget_mb", "default_threads"):
        if data[key] < 1:
            raise UserError(f"device profile {source}: '{key}' must be at least 1, found {data[key]}")
    python = data["os"]["python"].split(".")
    if len(python) != 2 or not all(p.isdigit() for p in python):
        raise UserError(
            f"device profile {source}: 'os.python' must be MAJOR.MINOR like \"3.11\", "
            f"found {data['os']['python']!r}"
        )
    if data["memory_budget_mb"] > data["memory_mb"]:
        raise UserError(f"device profile {source}: 'memory_budget_mb' ({data['memory_budget_mb']}) exceeds "
                        f"'memory_mb' ({data['memory_mb']})", "the budget is the part of the memory the model may use")
    fields = {k: data.get(k) for k in _TOP}
    fields["delegates"] = tuple(data["delegates"])
    if "cpu_features" in data:
        fields["cpu_features"] = tuple(data["cpu_features"])
    return Profile(**fields, source=source)


def _check_cpu_info(data: dict, source: str) -> None:
    """cpu_part and cpu_features: both or neither, as /proc/cpuinfo spells them."""
    hint = ("give them as the device's /proc/cpuinfo says them (devices/rpi4.toml has a Cortex-A72's, "
            "devices/rpi5.toml a Cortex-A76's)")
    if ("cpu_part" in data) != ("cpu_features" in data):
        raise UserError(f"device profile {source}: 'cpu_part' and 'cpu_features' go together, found only "
                        f"'{'cpu_part' if 'cpu_part' in data else 'cpu_features'}'", hint)
    if "cpu_part" not in data:
        return
    if not re.fullmatch(r"0x[0-9a-f]{3}", data["cpu_part"]):
        raise UserError(f"device profile {source}: 'cpu_part' must be the CPU's part number like \"0xd08\", "
                        f"found {data['cpu_part']!r}", hint)
    features = data["cpu_features"]
    bad = [f for f in features if not isinstance(f, str) or not re.fullmatch(r"[a-z0-9_]+", f)]
    if not features or bad or len(set(features)) != len(features):
        problem = f"{bad[0]!r} is no feature name" if bad else "it is empty" if not features else "it repeats a name"
        raise UserError(f"device profile {source}: 'cpu_features' must list the CPU's features like "
                        f"[\"fp\", \"asimd\"]: {problem}", hint)


def profile_names() -> list[str]:
    """Names of the profiles shipped in devices/."""
    return sorted(p.stem for p in DEVICES_DIR.glob("*.toml"))


def load_profile(target: str) -> Profile:
    """Load a profile by name (devices/NAME.toml) or from a file path."""
    path = Path(target)
    if target.endswith(".toml") or path.is_file():
        if not path.is_file():
            raise UserError(f"device profile file {target} does not exist", "check the path")
    else:
        path = DEVICES_DIR / f"{target}.toml"
        if not path.is_file():
            raise UserError(
                f"unknown target '{target}'",
                f"known targets: {', '.join(profile_names())} (edgepack targets), "
                "or pass the path to a profile .toml file",
            )
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"device profile {path} is not valid TOML: {exc}", "fix the file") from None
    return parse_profile(data, str(path))


def bundle_profile(manifest: dict, where: str) -> Profile:
    """The profile a bundle was built for, as its manifest records it (validated again)."""
    return parse_profile({k: v for k, v in manifest["target"].items() if k != "source"}, f"{where} manifest")


def all_profiles() -> list[Profile]:
    """Every profile in devices/, validated."""
    return [load_profile(name) for name in profile_names()]
