"""Run directories: one per run, holding every artifact and result.json."""

from __future__ import annotations

import json
import os
import secrets
import time
from pathlib import Path
from typing import Any

from lab.paths import runs_dir


def new_run_dir(kind: str, base: Path | None = None) -> Path:
    base = base or runs_dir()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = base / f"{stamp}-{kind}-{secrets.token_hex(3)}"
    path.mkdir(parents=True)
    return path


def write_json(path: Path, data: Any) -> None:
    """Write atomically: a reader never sees half a result."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    try:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")
        tmp.rename(path)
    except BaseException:
        tmp.unlink(missing_ok=True)  # a full disk leaves no half-written temporary behind
        raise
