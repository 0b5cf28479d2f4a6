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
    [[kernel]]
    name = "next"
    git = "/srv/linux"                    # a git tree: a new commit on `branch` -> built, then imaged
    branch = "master"                     # default: HEAD
    build = "make olddefconfig && make -j$(nproc)"   # optional (lab/watch/gitkernel.py says what it gets)
    config_fragment = "pmem.config"       # optional, relative to the plan (default: lab/watch/pmem.config)

    [compare]
    reruns = 2                            # re-runs of each failing case before a regression is called

    [report]
    mail_to = ["lab@example.org"]         # the plain-text summary, mailed (a failure to send is reported)
    mail_from = "pmemlab@example.org"     # default: pmemlab@<this host>
    sendmail = "/usr/sbin/sendmail"       # or smtp_host/smtp_port (default: sendmail when it exists)
    smtp_host = "localhost"
    smtp_port = 25
    junit = true                          # also REPORT_DIR/<campaign>.junit.xml (the comparison's regressions
                                          # as failures) and REPORT_DIR/<campaign>.html

Each scenario runs on the image its own `image` ref names: a source's new kernel is built under
that ref (a directory source's scenarios should name a ref of their own).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, model_validator

from lab.errors import ConfigError
from lab.tomlfile import load_model

_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$"


class _Kernel(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    name: str = Field(pattern=_NAME)
    debian_package: str | None = None
    directory: str | None = None
    git: str | None = None
    branch: str = Field(default="HEAD", min_length=1)
    build: str | None = Field(default=None, min_length=1)
    config_fragment: str | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> _Kernel:
        if sum(x is not None for x in (self.debian_package, self.directory, self.git)) != 1:
            raise ValueError("give exactly one of debian_package, directory or git")
        if self.git is None and (self.build is not None or self.config_fragment is not None
                                 or "branch" in self.model_fields_set):
            raise ValueError("branch, build and config_fragment belong to a git source")
        return self


class _Compare(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    reruns: int = Field(default=2, ge=0, le=20)


class _Report(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    mail_to: list[str] = Field(default_factory=list)
    mail_from: str | None = None
    sendmail: str | None = None
    smtp_host: str | None = None
    smtp_port: int = Field(default=25, ge=1, le=65535)
    junit: bool = False

    @model_validator(mode="after")
    def _one_way(self) -> _Report:
        if self.sendmail is not None and self.smtp_host is not None:
            raise ValueError("give sendmail or smtp_host, not both")
        if any("@" not in a for a in self.mail_to):
            raise ValueError(f"mail_to: expected mail addresses, got {self.mail_to}")
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
    compare: _Compare = Field(default_factory=_Compare)
    report: _Report = Field(default_factory=_Report)


@dataclass(frozen=True)
class GitKernel:
    tree: Path
    branch: str = "HEAD"
    build: str | None = None  # None: lab/watch/gitkernel.py's DEFAULT_BUILD
    config_fragment: Path | None = None  # None: the shipped lab/watch/pmem.config


@dataclass(frozen=True)
class KernelSource:
    name: str
    debian_package: str | None = None
    directory: Path | None = None
    git: GitKernel | None = None


@dataclass(frozen=True)
class ReportSettings:
    mail_to: tuple[str, ...] = ()
    mail_from: str | None = None
    sendmail: str | None = None
    smtp_host: str | None = None
    smtp_port: int = 25
    junit: bool = False


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
    reruns: int = 2
    report: ReportSettings = ReportSettings()


def _source(base: Path, k: _Kernel) -> KernelSource:
    git = None
    if k.git is not None:
        git = GitKernel((base / k.git).resolve(), k.branch, k.build,
                        (base / k.config_fragment).resolve() if k.config_fragment else None)
    return KernelSource(k.name, k.debian_package, Path(k.directory) if k.directory else None, git)


def load_plan(path: Path) -> Plan:
    """Parse and validate; a problem is a one-line ConfigError naming the file and the field."""
    model = load_model(path, _Plan, "the plan")
    names = [k.name for k in model.kernel]
    if len(set(names)) != len(names):
        raise ConfigError(f"{path}: kernel: names must be distinct, got {names}")
    base = path.resolve().parent
    r = model.report
    for i, k in enumerate(model.kernel):
        if k.config_fragment is not None and not (base / k.config_fragment).is_file():
            raise ConfigError(f"{path}: kernel[{i}].config_fragment: no such file {base / k.config_fragment}")
    scenarios = tuple((base / s).resolve() for s in model.scenarios)
    for i, scenario in enumerate(scenarios):
        if not scenario.is_file():
            raise ConfigError(f"{path}: scenarios[{i}]: no such file {scenario}")
    return Plan(path=path, name=model.name, scenarios=scenarios, jobs=model.jobs, db=model.db,
                known_issues=base / model.known_issues if model.known_issues else None,
                report_dir=base / model.report_dir if model.report_dir else None,
                kernels=tuple(_source(base, k) for k in model.kernel), reruns=model.compare.reruns,
                report=ReportSettings(tuple(r.mail_to), r.mail_from, r.sendmail, r.smtp_host, r.smtp_port,
                                      r.junit))
