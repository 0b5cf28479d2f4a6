"""Reading a small TOML settings file into a pydantic model: the one place that turns an unreadable
file, bad TOML or a failed field into a one-line ConfigError naming the file and the field."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel, ValidationError

from lab.errors import ConfigError

M = TypeVar("M", bound=BaseModel)


def field_path(loc: tuple[object, ...]) -> str:
    """pydantic's error location as a reader writes it: kernel[1].name; the whole file: (top level)."""
    return ".".join(f"[{p}]" if isinstance(p, int) else str(p) for p in loc).replace(".[", "[") or "(top level)"


def load_model(path: Path, model: type[M], what: str) -> M:
    """`path` parsed and validated as `model`; `what` names the file in the error ("the plan")."""
    try:
        data = tomllib.loads(path.read_text())
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read {what}: {exc.strerror or exc}") from exc
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        msg = str(err["msg"]).removeprefix("Value error, ")
        raise ConfigError(f"{path}: {field_path(tuple(err['loc']))}: {msg}") from exc
