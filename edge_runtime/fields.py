"""Checking a JSON document field by field: the checks the manifest's pieces are made of.

Each check raises Malformed naming the field (``inputs[0].shape[2]``), what it
must be and what it holds, so a malformed manifest is refused with the
field's name, never a traceback.
"""

from __future__ import annotations

import json
import re

MAX_DIM = 2 ** 31 - 1
MAX_NAME = 256
INT64_MIN, INT64_MAX = -(2 ** 63), 2 ** 63 - 1  # JSON integers have no bound
CONTROL = re.compile(r"[\x00-\x1f\x7f]")  # would forge lines in `edge-run info`, the log or /metrics
MISSING = object()
# Numbers from others are ASCII digits only: str.isdigit() and int() also take '²' (which int() then refuses,
# a crash), '١٢' (12 in Arabic-Indic digits), '１' (fullwidth), '1_0' and surrounding spaces.
WHOLE = re.compile(r"[0-9]+")
SIGNED = re.compile(r"-?[0-9]+")


class Malformed(Exception):
    """A field that is not what edgepack build writes: where it is, what it must be, what it holds."""

    def __init__(self, path: str, expected: str, value):
        super().__init__(path)
        self.path, self.expected, self.value = path, expected, value

    def found(self) -> str:
        return "nothing (the field is missing)" if self.value is MISSING else show(self.value)


def show(value, depth: int = 2) -> str:
    """A found value as short JSON on one line (a whole section would drown the field's name)."""
    if isinstance(value, dict):
        parts = [f"{json.dumps(str(k))}: {show(v, depth - 1)}" for k, v in list(value.items())[:3]] if depth else []
        return "{" + ", ".join(parts + ["..."] * (len(value) > len(parts))) + "}"
    if isinstance(value, list):
        parts = [show(v, depth - 1) for v in value[:4]] if depth else []
        return "[" + ", ".join(parts + ["..."] * (len(value) > len(parts))) + "]"
    if isinstance(value, str) and len(value) > 60:
        return json.dumps(value[:60])[:-1] + '..."'
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10 ** 30:
        return f"a {value.bit_length()}-bit integer"
    try:
        return json.dumps(value)
    except (TypeError, ValueError):  # not JSON at all
        return type(value).__name__


def ascii_int(text: str, most_digits: int = 19, signed: bool = False) -> int | None:
    """The integer ``text`` writes in ASCII digits (a leading '-' if ``signed``), else None."""
    if len(text) > most_digits + signed or not (SIGNED if signed else WHOLE).fullmatch(text):
        return None
    return int(text)


def need(ok, path: str, expected: str, value) -> None:
    if not ok:
        raise Malformed(path, expected, value)


def is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def required(section: dict, key: str, path: str = ""):
    """A required field's value (Malformed naming it when missing)."""
    value = section.get(key, MISSING)
    need(value is not MISSING, f"{path}.{key}" if path else key, "present", value)
    return value


def object_field(manifest: dict, key: str) -> dict:
    value = required(manifest, key)
    need(isinstance(value, dict), key, "an object", value)
    return value


def check_list(value, path: str, most: int) -> list:
    need(isinstance(value, list) and len(value) <= most, path, f"a list of at most {most:,} items", value)
    return value


def check_text(value, path: str, optional: bool = False) -> None:
    if optional and value is None:
        return
    need(isinstance(value, str) and not CONTROL.search(value), path, "a string without control characters", value)


def check_name(value, path: str) -> None:
    need(isinstance(value, str) and 0 < len(value) <= MAX_NAME and not CONTROL.search(value), path,
          f"a name of 1 to {MAX_NAME} characters without control characters", value)


def check_integer(value, path: str, low: int, high: int) -> None:
    expected = "a positive integer" if (low, high) == (1, MAX_DIM) else (
        "a non-negative integer" if (low, high) == (0, INT64_MAX) else f"an integer from {low:,} to {high:,}")
    need(is_int(value) and low <= value <= high, path, expected, value)
