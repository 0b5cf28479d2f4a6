"""A lab plan (TOML): which kernels to watch, which scenarios to run on them, where results go.

    name = "nightly"                      # names the plan's lock and its remembered versions
    scenarios = ["../scenarios/mapsync.toml"]   # paths relative to the plan file
    jobs = 2                              # optional: campaign -j
    db = "postgresql+psycopg://lab@db/lab"      # optional: results store (default: SQLite in the data dir)
    known_issues = "known.toml"           # optional, relative to the plan file
    report_dir = "reports"                # optional: one text report per comparison (default: data dir)

    [[kernel]]
    name = "debian"
    debian_package = "linux-image-amd64"  # new candidate version -> the default recipe rebuilt
    [[kernel]]
    name = "mainline"
    directory = "/srv/kernel/out"         # bzImage (+ modules/, .config) a build drops; new hash -> rebuilt

Each scenario runs on the image its own `image` ref names: a source's new kernel is built under
that ref (a directory source's scenarios should name a ref of their own).
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from lab.errors import ConfigError

_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$"


class _Kernel(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    name: str = Field(pattern=_NAME)
    debian_package: str | None = None
    directory: str | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> _Kernel:
        if (self.debian_package is None) == (self.directory is None):
            raise ValueError("give exactly one of debian_package or directory")
        return self


class _Plan(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    name: str = Field(pattern=_NAME)
    scenarios: list[str] = Field(min_length=1)
    jobs: int | None = Field(default=None, ge=1, le=64)
    db: str | None = None
    known_issues: str | None = None
    report_dir: str | None = None
    kernel: list[_Kernel] = Field(min_length=1)


@dataclass(frozen=True)
class KernelSource:
    name: str
    debian_package: str | None = None
    directory: Path | None = None


@dataclass(frozen=True)
class Plan:
    path: Path
    name: str
    scenarios: tuple[Path, ...]
    kernels: tuple[KernelSource, ...]
    jobs: int | None = None
    db: str | None = None
    known_issues: Path | None = None
    report_dir: Path | None = None


def _where(loc: tuple[object, ...]) -> str:
    return ".".join(f"[{p}]" if isinstance(p, int) else str(p) for p in loc).replace(".[", "[") or "(top level)"


def load_plan(path: Path) -> Plan:
    """Parse and validate; a problem is a one-line ConfigError naming the file and the field."""
    try:
        data = tomllib.loads(path.read_text())
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the plan: {exc.strerror or exc}") from exc
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    try:
        model = _Plan.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        msg = str(err["msg"]).removeprefix("Value error, ")
        raise ConfigError(f"{path}: {_where(tuple(err['loc']))}: {msg}") from exc
    names = [k.name for k in model.kernel]
    if len(set(names)) != len(names):
        raise ConfigError(f"{path}: kernel: names must be distinct, got {names}")
    base = path.resolve().parent
    scenarios = tuple((base / s).resolve() for s in model.scenarios)
    for i, scenario in enumerate(scenarios):
        if not scenario.is_file():
            raise ConfigError(f"{path}: scenarios[{i}]: no such file {scenario}")
    return Plan(path=path, name=model.name, scenarios=scenarios, jobs=model.jobs, db=model.db,
                known_issues=base / model.known_issues if model.known_issues else None,
                report_dir=base / model.report_dir if model.report_dir else None,
                kernels=tuple(KernelSource(k.name, k.debian_package,
                                           Path(k.directory) if k.directory else None) for k in model.kernel))
