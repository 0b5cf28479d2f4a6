"""Cross-field checks of a parsed scenario: what no single field can say is wrong.

[workload] against [matrix], [[expect]] rules against the matrix, the NVDIMM
size against xfs, every cell's params against the kind's model and crash
points, and [oracles] against the kind and the expected verdicts.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import ValidationError

from lab.scenario.lines import Loc
from lab.scenario.messages import Problem, more_cells, params_problems
from lab.scenario.model import Scenario, cell_params, describe_cell
from lab.scenario.values import same, toml
from lab.verdict import Verdict

XFS_MIN_NVDIMM_MIB = 512  # mkfs.xfs refuses filesystems under 300 MB


def semantic_problems(scenario: Scenario) -> list[Problem]:
    spec, matrix = scenario.spec, scenario.matrix
    problems: list[Problem] = []
    for key in matrix:
        if key in spec.workload.model_fields_set:
            problems.append((("matrix", key), f"'{key}' is set in both [workload] and [matrix]; keep it in one"))
    problems += _expect_problems(scenario)
    if "xfs" in matrix.get("fs", ()) and spec.machine.nvdimm_size_mib < XFS_MIN_NVDIMM_MIB:
        problems.append((("machine", "nvdimm_size_mib"),
                         f"{spec.machine.nvdimm_size_mib} MiB is too small for xfs (in the matrix): "
                         f"mkfs.xfs needs >= 300 MB, so use at least {XFS_MIN_NVDIMM_MIB}"))
    problems += _oracle_problems(scenario)
    problems += _cell_problems(scenario)
    section = spec.scenario
    for key in ("kernel_version", "qemu_version"):
        if getattr(section, key) is not None and section.image_id is None:
            problems.append((("scenario", key), f"'{key}' describes a pinned image: give 'image_id' too"))
    return problems


def _where_problems(matrix: dict[str, tuple[Any, ...]], section: str, index: int,
                    where: dict[str, Any]) -> list[Problem]:
    problems: list[Problem] = []
    for key, value in where.items():
        if key not in matrix:
            problems.append(((section, index, "where", key), f"'{key}' is not a matrix key; matrix keys: "
                             f"{', '.join(matrix) or '(none: there is no [matrix])'}"))
        elif not any(same(value, option) for option in matrix[key]):
            problems.append(((section, index, "where", key), f"{toml(value)} is not among the matrix "
                             f"values of '{key}': {toml(list(matrix[key]))}"))
    return problems


def _expect_problems(scenario: Scenario) -> list[Problem]:
    rules, matrix = scenario.spec.expect, scenario.matrix
    problems: list[Problem] = []
    for index, exclude in enumerate(scenario.spec.exclude):
        problems += _where_problems(matrix, "exclude", index, exclude.where)
    if not problems and scenario.spec.exclude and not scenario.cells():
        problems.append((("exclude",), "[[exclude]] drops every cell of the matrix: nothing would run"))
    for index, rule in enumerate(rules):
        if not rule.where and index < len(rules) - 1:
            problems.append((("expect", index, "where"), "only the last rule may omit 'where': this rule "
                             "matches every cell, so the rules after it would never apply"))
        problems += _where_problems(matrix, "expect", index, rule.where or {})
    if problems:
        return problems  # unmatched cells would only repeat these
    unmatched = [cell for cell in scenario.cells() if not any(rule.matches(cell) for rule in rules)]
    if unmatched:
        problems.append((("expect",), f"no rule matches cell {describe_cell(unmatched[0])}"
                         f"{more_cells(len(unmatched) - 1)}; add a rule "
                         "for it, or end with a rule without 'where'"))
    return problems


def _oracle_problems(scenario: Scenario) -> list[Problem]:
    """[oracles] must change something: turning off an oracle the kind never runs is a mistake, and so
    is expecting a verdict that only a turned-off oracle can give."""
    oracles, kind = scenario.spec.oracles, scenario.kind
    problems: list[Problem] = []
    if not oracles.persistence and kind.ack_count is None:
        problems.append((("oracles", "persistence"), f"the {kind.name} workload acknowledges no records, so no "
                         "persistence oracle runs and there is nothing to turn off; remove the key"))
    if not oracles.fsck and not kind.uses_crash:
        problems.append((("oracles", "fsck"), f"the {kind.name} workload cuts no power, so no fsck oracle runs "
                         "and there is nothing to turn off; remove the key"))
    if not oracles.kernel_log:
        for index, rule in enumerate(scenario.spec.expect):
            if rule.verdict == Verdict.KERNEL_BUG.value:
                problems.append((("expect", index, "verdict"), "only the kernel_log oracle gives KERNEL-BUG, and "
                                 "[oracles] turns it off; turn it on or expect another verdict"))
    return problems


def _cell_problems(scenario: Scenario) -> list[Problem]:
    """Per-cell impossibilities (the kind's cross-field rules, unreachable crash points), each reported once
    with the first cell it hits."""
    kind, crash = scenario.kind, scenario.crash
    problems: list[Problem] = []
    check_acks = crash is not None and crash.needs_acks
    if crash is not None and crash.needs_acks and kind.ack_count is None:
        problems.append((("crash", "strategy"), f"{json.dumps(crash.strategy)} cuts after an ACK, and the "
                         f"{kind.name} workload sends none; use \"time_offsets\""))
        check_acks = False
    hits: dict[tuple[Loc, str], list[dict[str, Any]]] = {}
    for cell in scenario.cells():
        try:
            params = cell_params(scenario, cell)
        except ValidationError as exc:
            for loc, message in params_problems(exc, scenario.matrix):
                hits.setdefault((loc, message), []).append(cell)
            continue
        if check_acks and crash is not None:
            for field, message in crash.impossible(scenario.ack_count(params)):
                hits.setdefault((("crash", field), message), []).append(cell)
    for (loc, message), cells in hits.items():
        problems.append((loc, f"{message}, in cell {describe_cell(cells[0])}{more_cells(len(cells) - 1)}"))
    return problems
