"""The file's fixed sections: [scenario], [machine], [oracles], [[expect]], and the whole-file model.

[workload], [matrix] and [crash] depend on the workload kind: lab/scenario/layout.py
fills them in.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field, model_validator

from lab.image.cache import DEFAULT_REF
from lab.scenario.fields import ImageRef, Name, OneLine, Strict, VerdictName, WorkloadName
from lab.scenario.values import same
from lab.vm.boot import MachineShape
from lab.vm.spec import MIB

_DEFAULT_SHAPE = MachineShape()


class ScenarioSection(Strict):
    name: Name
    description: OneLine
    workload: WorkloadName  # a kind in lab.workloads.catalog
    repeat: int = Field(default=1, ge=1)
    seed: int = Field(default=0, ge=0)
    # Every case gets exactly this seed instead of one derived from `seed` (an exported case keeps its own).
    case_seed: int | None = Field(default=None, ge=0)
    image: ImageRef = DEFAULT_REF
    # What an export pins (lab/scenario/pin.py): the image id the case ran on, its kernel, its QEMU.
    image_id: ImageRef | None = None
    kernel_version: OneLine | None = None
    qemu_version: OneLine | None = None


class MachineSection(Strict):
    cpus: int = Field(default=_DEFAULT_SHAPE.cpus, ge=1, le=64)
    memory_mib: int = Field(default=_DEFAULT_SHAPE.memory_mib, ge=128)
    # NVDIMMs are 2 MiB aligned (fsdax namespace alignment)
    nvdimm_size_mib: int = Field(default=_DEFAULT_SHAPE.nvdimm_size // MIB, ge=64, multiple_of=2)
    # Boot every machine from cold instead of restoring a ready snapshot (for comparison, and for
    # hosts where restore fails); verdicts must not depend on it.
    cold_boot: bool = False
    # What runs the machines: the lab's own QEMU, or transient libvirt domains (cold boots only).
    backend: Literal["qemu", "libvirt"] = "qemu"
    libvirt_uri: OneLine | None = None

    @model_validator(mode="after")
    def _uri_needs_libvirt(self) -> "MachineSection":
        if self.libvirt_uri is not None and self.backend != "libvirt":
            raise ValueError("libvirt_uri needs backend = \"libvirt\"")
        return self


class OraclesSection(Strict):
    """Which of the shared oracles judge each case. Off: that oracle is not run, and its finding is
    neither made nor counted in the verdict. Turning off an oracle the kind never runs is refused
    (lab/scenario/checks.py), and so is expecting a verdict only a turned-off oracle gives."""

    # Every acknowledged record is intact after recovery (kinds that acknowledge records and cut the power).
    persistence: bool = True
    # fsck of the recovered filesystem is clean (kinds that cut the power).
    fsck: bool = True
    # No kernel problem (BUG, WARNING, Oops, KASAN, hung task, ...) on any console (every kind).
    kernel_log: bool = True


class ExpectRule(Strict):
    """`verdict` for every cell whose matrix values match all of `where` (no `where`: every cell)."""

    where: dict[str, Any] | None = None
    verdict: VerdictName

    def matches(self, cell: dict[str, Any]) -> bool:
        return all(key in cell and same(cell[key], value) for key, value in (self.where or {}).items())


class ExcludeRule(Strict):
    """Cells whose matrix values match all of `where` are not run (a matrix that is not a full product)."""

    where: dict[str, Any] = Field(min_length=1)

    def matches(self, cell: dict[str, Any]) -> bool:
        return all(key in cell and same(cell[key], value) for key, value in self.where.items())


class ScenarioFile(Strict):
    """The whole file. workload, matrix and crash depend on the kind: `layout` fills them in."""

    scenario: ScenarioSection
    machine: MachineSection = MachineSection()
    workload: Any = None  # the kind's params fields, each checked with its annotation alone
    matrix: Any = None  # fs, dax and the kind's params fields, each a non-empty list of distinct values
    crash: Any = None  # a CrashStrategy for kinds that cut the power, refused for the others
    oracles: OraclesSection = OraclesSection()
    exclude: list[ExcludeRule] = Field(default_factory=list)
    expect: list[ExpectRule] = Field(min_length=1)


STATIC_SECTIONS: dict[str, type[BaseModel]] = {"scenario": ScenarioSection, "machine": MachineSection,
                                               "oracles": OraclesSection, "expect": ExpectRule,
                                               "exclude": ExcludeRule}
