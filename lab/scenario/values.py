"""TOML values as the file has them: equality that keeps TOML's types apart, and spelling for messages."""

from __future__ import annotations

import json
from typing import Any


def same(a: Any, b: Any) -> bool:
    """Equal and of the same type: in Python True == 1, in TOML they differ."""
    return type(a) is type(b) and a == b


def scalar(value: Any) -> str:
    return ("true" if value else "false") if isinstance(value, bool) else str(value)


def toml(value: Any) -> str:
    """A value as TOML spells it (true, "ext4", [1, 2]) for messages."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + ", ".join(toml(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {toml(v)}" for k, v in value.items()) + " }"
    if isinstance(value, str):
        return json.dumps(value)
    return str(value)
