"""Scenario files: TOML in scenarios/, validated completely before any machine boots.

A scenario names a workload kind (lab/workloads/catalog.py), the machine
shape, a matrix of filesystem and workload options, a crash strategy (for
kinds that cut the power), the oracles, and the verdict each matrix cell is
expected to reach. `lab.cases.expand` turns it into cases.

[workload] and the workload keys of [matrix] are the fields of the kind's
`params` model: each field is checked with its annotation (type and
constraints) where it is written, and each matrix cell's full set of values
with the model itself (so its cross-field validators judge combinations).

[oracles] turns the shared oracles on (the default) or off: persistence
(acknowledged records intact after recovery), fsck (the recovered filesystem
is clean), kernel_log (no kernel problem on any console). Off: that oracle
is not run and its finding is not counted in the verdict.

Every problem is reported at once, one line each:
``{path}:{line}: field '{dotted.path}': {what is wrong / what is allowed}``.

One module per concern:
  values    TOML-typed equality and spelling      fields    field types and checks
  sections  [scenario] [machine] [oracles] [[expect]], the file model
  crash     [crash] strategies and their crash points
  layout    the file model of one kind ([workload], [matrix], [crash])
  model     the validated Scenario and its cells  checks    cross-field checks
  messages  problems as file:line messages        lines     where a field sits in the text
  load      load_scenario / parse_scenario
"""

from lab.scenario.checks import XFS_MIN_NVDIMM_MIB
from lab.scenario.crash import (STRATEGIES, AckList, AfterAck, CrashModel, CrashStrategy, EveryNthAck, RandomAck,
                                SeedFor, TimeOffsets)
from lab.scenario.fields import VERDICTS, Axis, DaxName, FsName, Name
from lab.scenario.layout import CELL_KEYS, matrix_keys
from lab.scenario.load import load_scenario, parse_scenario
from lab.scenario.model import Scenario, cell_key, describe_cell
from lab.scenario.sections import ExpectRule, MachineSection, OraclesSection, ScenarioFile, ScenarioSection

__all__ = [
    "CELL_KEYS", "STRATEGIES", "VERDICTS", "XFS_MIN_NVDIMM_MIB", "AckList", "AfterAck", "Axis", "CrashModel",
    "CrashStrategy", "DaxName", "EveryNthAck", "ExpectRule", "FsName", "MachineSection", "Name", "OraclesSection",
    "RandomAck", "Scenario", "ScenarioFile", "ScenarioSection", "SeedFor", "TimeOffsets", "cell_key",
    "describe_cell", "load_scenario", "matrix_keys", "parse_scenario",
]
