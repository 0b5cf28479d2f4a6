"""Guest image recipes: TOML files in images/, validated with pydantic."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from lab.errors import ConfigError


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class KernelSection(_Strict):
    debian_package: str = "linux-image-amd64"


class ModulesSection(_Strict):
    load: list[str] = Field(default_factory=list)


class UserlandSection(_Strict):
    binaries: list[str]
    files: list[str] = Field(default_factory=list)


class GuestSection(_Strict):
    init: str
    programs: dict[str, str] = Field(default_factory=dict)
    links: dict[str, str] = Field(default_factory=dict)


class InitramfsSection(_Strict):
    compression: Literal["gzip", "none"] = "gzip"


class Recipe(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    kernel: KernelSection = KernelSection()
    modules: ModulesSection = ModulesSection()
    userland: UserlandSection
    guest: GuestSection
    initramfs: InitramfsSection = InitramfsSection()


def format_validation_error(path: Path, err: ValidationError) -> str:
    """One line per problem: file, dotted field path, what is expected."""
    lines = []
    for problem in err.errors():
        where = ".".join(str(p) for p in problem["loc"]) or "(top level)"
        lines.append(f"{path}: field '{where}': {problem['msg']}")
    return "\n".join(lines)


def load_recipe(path: Path) -> tuple[Recipe, bytes]:
    """Parse and validate a recipe; also return its bytes (part of the image id)."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read recipe: {exc.strerror}") from None
    try:
        data = tomllib.loads(raw.decode())
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    try:
        recipe = Recipe.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(path, exc)) from None
    return recipe, raw
