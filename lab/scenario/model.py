"""The validated scenario: its sections, matrix and kind, and what a matrix cell gives (params, fs,
dax, expected verdict)."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from lab.errors import ConfigError
from lab.guest.pmem import DaxMode, Filesystem
from lab.scenario.crash import CrashModel
from lab.scenario.messages import params_problems
from lab.scenario.pin import ImagePin
from lab.scenario.sections import ScenarioFile
from lab.scenario.values import scalar
from lab.verdict import Verdict
from lab.vm.backend import BackendChoice
from lab.vm.boot import MachineShape
from lab.vm.spec import MIB, Persistence
from lab.workloads.base import WorkloadKind


@dataclass(frozen=True)
class Scenario:
    """A validated scenario file, with its text and content hash (case ids derive from the hash)."""

    spec: ScenarioFile  # the kind's file model (lab/scenario/layout.py)
    matrix: dict[str, tuple[Any, ...]]  # in file order: the order cells are expanded in
    path: Path
    text: str
    content_hash: str  # sha256 hex of the file's bytes
    kind: WorkloadKind

    @property
    def name(self) -> str:
        return self.spec.scenario.name

    @property
    def description(self) -> str:
        return self.spec.scenario.description

    @property
    def workload(self) -> str:
        return self.spec.scenario.workload

    @property
    def repeat(self) -> int:
        return self.spec.scenario.repeat

    @property
    def seed(self) -> int:
        return self.spec.scenario.seed

    @property
    def case_seed(self) -> int | None:
        return self.spec.scenario.case_seed

    @property
    def image(self) -> str:
        return self.spec.scenario.image

    @property
    def pin(self) -> ImagePin | None:
        """The exact image an exported scenario ran on; None when the file pins none."""
        section = self.spec.scenario
        if section.image_id is None:
            return None
        return ImagePin(section.image_id, section.kernel_version, section.qemu_version)

    @property
    def crash(self) -> CrashModel | None:
        """The crash strategy; None for kinds that cut no power."""
        crash: CrashModel | None = self.spec.crash
        return crash

    @property
    def cold_boot(self) -> bool:
        return self.spec.machine.cold_boot

    @property
    def machines(self) -> BackendChoice:
        """The [machine] backend (qemu unless the scenario says libvirt)."""
        section = self.spec.machine
        return BackendChoice.parse(section.backend, section.libvirt_uri, where="[machine] backend")

    @property
    def cuts_per_run(self) -> int | None:
        """How many crash points one workload run may serve (None: all of a cell's repeat)."""
        return self.crash.cuts_per_run if self.crash is not None else None

    @property
    def shape(self) -> MachineShape:
        machine = self.spec.machine
        return MachineShape(cpus=machine.cpus, memory_mib=machine.memory_mib,
                            nvdimm_size=machine.nvdimm_size_mib * MIB)

    def shape_for(self, cell: dict[str, Any]) -> MachineShape:
        """The machine of a cell: the [machine] shape with the cell's persistence model (eadr unless the
        matrix names one)."""
        return replace(self.shape, persistence=Persistence(cell.get("persistence", Persistence.EADR.value)))

    @property
    def adr_states(self) -> int:
        """ADR crash states judged at each cut beyond adr:drop-all ([crash] adr_states)."""
        return self.crash.adr_states if self.crash is not None else 0

    @property
    def oracles(self) -> dict[str, bool]:
        return self.spec.oracles.model_dump()

    def cells(self) -> list[dict[str, Any]]:
        """Every combination of matrix values, the first key varying slowest, less those [[exclude]] drops."""
        keys = list(self.matrix)
        cells = [dict(zip(keys, values)) for values in itertools.product(*self.matrix.values())]
        return [cell for cell in cells if not any(rule.matches(cell) for rule in self.spec.exclude)]

    def fs(self, cell: dict[str, Any]) -> Filesystem:
        return Filesystem(cell.get("fs", Filesystem.EXT4.value))

    def dax(self, cell: dict[str, Any]) -> DaxMode:
        return DaxMode(cell.get("dax", DaxMode.ALWAYS.value))

    def params(self, cell: dict[str, Any]) -> BaseModel:
        """The kind's params model for this cell: [workload] with the cell's values over it."""
        try:
            return cell_params(self, cell)
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, loc))}: {message}"
                                 for loc, message in params_problems(exc, self.matrix))
            raise ConfigError(f"{self.path}: cell {describe_cell(cell)}: {problems}") from None

    def ack_count(self, params: BaseModel) -> int:
        """How many ACKs the workload emits with these params (0 for kinds that emit none)."""
        return self.kind.ack_count(params) if self.kind.ack_count is not None else 0

    def expected(self, cell: dict[str, Any]) -> Verdict:
        for rule in self.spec.expect:
            if rule.matches(cell):
                return Verdict(rule.verdict)
        raise ConfigError(f"{self.path}: field 'expect': no rule matches cell {describe_cell(cell)}")


def cell_params(scenario: Scenario, cell: dict[str, Any]) -> BaseModel:
    values = scenario.spec.workload.model_dump()
    values.update((key, value) for key, value in cell.items() if key in values)
    # Paths in a kind's params (a reproducer's script) are relative to the scenario file.
    return scenario.kind.params.model_validate(values, context={"base_dir": scenario.path.parent})


def cell_key(cell: dict[str, Any]) -> str:
    """'fs=ext4 map_sync=false': how a cell is named in seeds, reports and messages."""
    return " ".join(f"{key}={scalar(value)}" for key, value in cell.items())


def describe_cell(cell: dict[str, Any]) -> str:
    return cell_key(cell) or "(the only cell: no matrix)"
