"""Scenario files: TOML in scenarios/, validated completely before any machine boots.

A scenario names a workload kind (lab/workloads/catalog.py), the machine
shape, a matrix of filesystem and workload options, a crash strategy (for
kinds that cut the power), the oracles, and the verdict each matrix cell is
expected to reach. `lab.cases.expand` turns it into cases.

[workload] and the workload keys of [matrix] are the fields of the kind's
`params` model: each field is checked with its annotation (type and
constraints) where it is written, and each matrix cell's full set of values
with the model itself (so its cross-field validators judge combinations).

Every problem is reported at once, one line each:
``{path}:{line}: field '{dotted.path}': {what is wrong / what is allowed}``.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, TypeVar, Union

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, create_model
from pydantic.fields import FieldInfo

from lab.crash.point import CrashPoint
from lab.errors import ConfigError
from lab.guest.pmem import DaxMode, Filesystem
from lab.image.cache import DEFAULT_REF
from lab.verdict import Verdict
from lab.vm.boot import MachineShape
from lab.vm.spec import MIB
from lab.workloads import catalog
from lab.workloads.base import WorkloadKind

VERDICTS = tuple(v.value for v in Verdict)
XFS_MIN_NVDIMM_MIB = 512  # mkfs.xfs refuses filesystems under 300 MB
CELL_KEYS = ("fs", "dax")  # matrix keys of every kind; the others are the kind's params fields
_DEFAULT_SHAPE = MachineShape()


# -- field checks (ValueError text becomes the message after "field '...': ") -------------

def _name(value: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9._-]+", value):
        raise ValueError(f"{json.dumps(value)} is not a valid name; use letters, digits, '.', '_' and '-'")
    return value


def _image_ref(value: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", value):
        raise ValueError(f"{json.dumps(value)} is not an image ref; use letters, digits, '.', '_' and '-'")
    return value


def _one_line(value: str) -> str:
    if "\n" in value or "\r" in value:
        raise ValueError("must be one line")
    return value


def _verdict(value: str) -> str:
    if value not in VERDICTS:
        raise ValueError(f"unknown verdict {json.dumps(value)}; allowed: {', '.join(VERDICTS)}")
    return value


def _workload(value: str) -> str:
    known = catalog.kinds()
    if value not in known:
        raise ValueError(f"unknown workload {json.dumps(value)}; known: {', '.join(known) or '(none)'}")
    return value


def _distinct(values: list[Any]) -> list[Any]:
    seen: list[Any] = []
    for value in values:
        if any(_same(value, other) for other in seen):
            raise ValueError(f"lists {_toml(value)} twice")
        seen.append(value)
    return values


Name = Annotated[str, AfterValidator(_name)]
FsName = Literal["ext4", "xfs"]  # Filesystem values (a test keeps them in step)
DaxName = Literal["always", "inode", "never"]  # DaxMode values


def _distinct_axis(values: list[Any] | None) -> list[Any] | None:
    return None if values is None else _distinct(values)


T = TypeVar("T")
# A matrix key: a non-empty list of distinct values (a repeated value would repeat its cells).
Axis = Annotated[list[T] | None, Field(min_length=1), AfterValidator(_distinct_axis)]


# -- the file's sections ----------------------------------------------------------------------

class _Strict(BaseModel):
    # strict: TOML has real types, so "100" for an int or 1 for a bool is a mistake, not a shortcut
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class ScenarioSection(_Strict):
    name: Name
    description: Annotated[str, AfterValidator(_one_line)]
    workload: Annotated[str, AfterValidator(_workload)]  # a kind in lab.workloads.catalog
    repeat: int = Field(default=1, ge=1)
    seed: int = Field(default=0, ge=0)
    # Every case gets exactly this seed instead of one derived from `seed` (an exported case keeps its own).
    case_seed: int | None = Field(default=None, ge=0)
    image: Annotated[str, AfterValidator(_image_ref)] = DEFAULT_REF


class MachineSection(_Strict):
    cpus: int = Field(default=_DEFAULT_SHAPE.cpus, ge=1, le=64)
    memory_mib: int = Field(default=_DEFAULT_SHAPE.memory_mib, ge=128)
    # NVDIMMs are 2 MiB aligned (fsdax namespace alignment)
    nvdimm_size_mib: int = Field(default=_DEFAULT_SHAPE.nvdimm_size // MIB, ge=64, multiple_of=2)
    # Boot every machine from cold instead of restoring a ready snapshot (for comparison, and for
    # hosts where restore fails); verdicts must not depend on it.
    cold_boot: bool = False


SeedFor = Callable[[int], int]  # crash point index -> the case seed


def _acks_only(acks: int) -> str:
    return f"the workload acknowledges {f'0..{acks - 1}' if acks else 'nothing'}"


class _Strategy(_Strict):
    needs_acks: ClassVar[bool] = True  # its crash points are ACK indices (the kind must have ack_count)
    # How many of a cell's crash points one workload run may serve (freeze, capture, cont, go on to
    # the next); None: all of them. 1 gives every crash point its own workload run.
    cuts_per_run: int | None = Field(default=None, ge=1)

    def points(self, acks: int, seed_for: SeedFor) -> list[CrashPoint]:
        """The crash points of one case group; `acks`: how many ACKs the workload emits (0 without ack_count)."""
        raise NotImplementedError

    def impossible(self, acks: int) -> list[tuple[str, str]]:
        """(field, message) for crash points the workload never reaches with `acks` ACKs."""
        return []


class AfterAck(_Strategy):
    """Cut once, right after the host reads ACK `ack`."""

    strategy: Literal["after_ack"]
    ack: int = Field(ge=0)
    seed: int | None = Field(default=None, ge=0)  # provenance of a random draw (exported random_ack cases)

    def points(self, acks: int, seed_for: SeedFor) -> list[CrashPoint]:
        return [CrashPoint(after_ack=self.ack, seed=self.seed)]

    def impossible(self, acks: int) -> list[tuple[str, str]]:
        return [("ack", f"ack {self.ack} is never reached ({_acks_only(acks)})")] if self.ack >= acks else []


class AckList(_Strategy):
    """One crash point per listed ACK."""

    strategy: Literal["ack_list"]
    acks: Annotated[list[Annotated[int, Field(ge=0)]], Field(min_length=1), AfterValidator(_distinct)]

    def points(self, acks: int, seed_for: SeedFor) -> list[CrashPoint]:
        return [CrashPoint(after_ack=ack) for ack in self.acks]

    def impossible(self, acks: int) -> list[tuple[str, str]]:
        late = [str(ack) for ack in self.acks if ack >= acks]
        if not late:
            return []
        what = f"ack {late[0]} is" if len(late) == 1 else f"acks {', '.join(late)} are"
        return [("acks", f"{what} never reached ({_acks_only(acks)})")]


class RandomAck(_Strategy):
    """`count` ACK indices drawn from each case's seed."""

    strategy: Literal["random_ack"]
    count: int = Field(ge=1)

    def points(self, acks: int, seed_for: SeedFor) -> list[CrashPoint]:
        return [CrashPoint.random_ack(acks, seed_for(index)) for index in range(self.count)]

    def impossible(self, acks: int) -> list[tuple[str, str]]:
        return [] if acks else [("count", f"there is no ACK to draw from ({_acks_only(acks)})")]


class EveryNthAck(_Strategy):
    """A crash point after every `every`-th ACK: ACK every-1, 2*every-1, ... below the ACK count."""

    strategy: Literal["every_nth_ack"]
    every: int = Field(ge=1)

    def points(self, acks: int, seed_for: SeedFor) -> list[CrashPoint]:
        return [CrashPoint(after_ack=ack) for ack in range(self.every - 1, acks, self.every)]

    def impossible(self, acks: int) -> list[tuple[str, str]]:
        if self.every <= acks:
            return []
        return [("every", f"every = {self.every} gives no crash point (the first would be ack {self.every - 1}; "
                          f"{_acks_only(acks)})")]


class TimeOffsets(_Strategy):
    """One crash point per offset, in seconds after the workload started (mapsync: after its mmap succeeded)."""

    needs_acks: ClassVar[bool] = False
    strategy: Literal["time_offsets"]
    seconds: Annotated[list[Annotated[float, Field(ge=0, allow_inf_nan=False)]], Field(min_length=1),
                       AfterValidator(_distinct)]

    def points(self, acks: int, seed_for: SeedFor) -> list[CrashPoint]:
        return [CrashPoint(after_seconds=seconds) for seconds in self.seconds]


CrashModel = Union[AfterAck, AckList, RandomAck, EveryNthAck, TimeOffsets]
CrashStrategy = Annotated[CrashModel, Field(discriminator="strategy")]
STRATEGIES: dict[str, type[_Strategy]] = {"after_ack": AfterAck, "ack_list": AckList, "random_ack": RandomAck,
                                          "every_nth_ack": EveryNthAck, "time_offsets": TimeOffsets}


class OraclesSection(_Strict):
    persistence: bool = True
    fsck: bool = True
    kernel_log: bool = True


class ExpectRule(_Strict):
    """`verdict` for every cell whose matrix values match all of `where` (no `where`: every cell)."""

    where: dict[str, Any] | None = None
    verdict: Annotated[str, AfterValidator(_verdict)]

    def matches(self, cell: dict[str, Any]) -> bool:
        return all(key in cell and _same(cell[key], value) for key, value in (self.where or {}).items())


class ScenarioFile(_Strict):
    """The whole file. workload, matrix and crash depend on the kind: `_layout` fills them in."""

    scenario: ScenarioSection
    machine: MachineSection = MachineSection()
    workload: Any = None  # the kind's params fields, each checked with its annotation alone
    matrix: Any = None  # fs, dax and the kind's params fields, each a non-empty list of distinct values
    crash: Any = None  # a CrashStrategy for kinds that cut the power, refused for the others
    oracles: OraclesSection = OraclesSection()
    expect: list[ExpectRule] = Field(min_length=1)


_STATIC_SECTIONS: dict[str, type[BaseModel]] = {"scenario": ScenarioSection, "machine": MachineSection,
                                                "oracles": OraclesSection, "expect": ExpectRule}


# -- the sections of one workload kind ----------------------------------------------------------

def _annotation(info: FieldInfo) -> Any:
    """A params field's type with its constraints and validators (Annotated metadata)."""
    assert info.annotation is not None
    return Annotated[(info.annotation, *info.metadata)] if info.metadata else info.annotation


def _default(info: FieldInfo) -> Any:
    if info.default_factory is not None:
        return Field(default_factory=info.default_factory)
    return info.default  # PydanticUndefined: required


def matrix_keys(kind: WorkloadKind) -> tuple[str, ...]:
    """What a scenario of this kind may put in [matrix]: fs, dax, then the params fields."""
    return (*CELL_KEYS, *kind.params.model_fields)


class _AnyExtra(_Strict):
    model_config = ConfigDict(extra="allow")


@dataclass(frozen=True)
class _Layout:
    """The file model for one kind (None: the workload is unknown, check what can be checked)."""

    file: type[ScenarioFile]
    sections: dict[str, type[BaseModel]]  # section name -> model, for "unknown key; allowed: ..." hints
    top_keys: tuple[str, ...]


def _refuse_crash(kind: str) -> Callable[[Any], Any]:
    def refuse(value: Any) -> Any:
        raise ValueError(f"the {kind} workload cuts no power, so its scenarios take no [crash] section; "
                         "remove it")
    return refuse


@lru_cache(maxsize=64)
def _layout(kind: WorkloadKind | None) -> _Layout:
    axes: dict[str, Any] = {"fs": (Axis[FsName], None), "dax": (Axis[DaxName], None)}  # type: ignore[misc]
    if kind is None:
        workload: Any = dict[str, Any]
        matrix = create_model("AnyMatrix", __base__=_AnyExtra, **axes)
        crash: tuple[Any, Any] = (CrashStrategy | None, None)
    else:
        params = kind.params
        clash = [key for key in CELL_KEYS if key in params.model_fields]
        if clash:
            raise ConfigError(f"workload kind {kind.name}: params field {clash[0]!r} is a matrix key of every "
                              "scenario; rename it")
        # Fields alone: [workload] may hold half of a combination that the matrix completes.
        workload = create_model(f"{params.__name__}Workload", __base__=_Strict,  # type: ignore[call-overload]
                                **{name: (_annotation(info), _default(info))
                                   for name, info in params.model_fields.items()})
        matrix = create_model(f"{params.__name__}Matrix", __base__=_Strict,  # type: ignore[call-overload]
                              **axes, **{name: (Axis[_annotation(info)], None)  # type: ignore[misc, valid-type]
                                         for name, info in params.model_fields.items()})
        crash = (CrashStrategy, ...) if kind.uses_crash else (Annotated[Any, AfterValidator(_refuse_crash(kind.name))],
                                                              None)
    file = create_model(f"ScenarioFile_{kind.name if kind else 'unknown'}", __base__=ScenarioFile,
                        workload=(workload, Field(default_factory=workload)), matrix=(matrix, matrix()), crash=crash)
    sections = {**_STATIC_SECTIONS, "matrix": matrix}
    if kind is not None:
        sections["workload"] = workload
    top = tuple(key for key in ScenarioFile.model_fields if key != "crash" or kind is None or kind.uses_crash)
    return _Layout(file, sections, top)


def _kind_named(data: dict[str, Any]) -> WorkloadKind | None:
    section = data.get("scenario")
    name = section.get("workload") if isinstance(section, dict) else None
    return catalog.kinds().get(name) if isinstance(name, str) else None


# -- the validated scenario -------------------------------------------------------------------

@dataclass(frozen=True)
class Scenario:
    """A validated scenario file, with its text and content hash (case ids derive from the hash)."""

    spec: ScenarioFile
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
    def crash(self) -> CrashModel | None:
        """The crash strategy; None for kinds that cut no power."""
        crash: CrashModel | None = self.spec.crash
        return crash

    @property
    def cold_boot(self) -> bool:
        return self.spec.machine.cold_boot

    @property
    def cuts_per_run(self) -> int | None:
        """How many crash points one workload run may serve (None: all of a cell's repeat)."""
        return self.crash.cuts_per_run if self.crash is not None else None

    @property
    def shape(self) -> MachineShape:
        machine = self.spec.machine
        return MachineShape(cpus=machine.cpus, memory_mib=machine.memory_mib,
                            nvdimm_size=machine.nvdimm_size_mib * MIB)

    @property
    def oracles(self) -> dict[str, bool]:
        return self.spec.oracles.model_dump()

    def cells(self) -> list[dict[str, Any]]:
        """Every combination of matrix values, the first key varying slowest."""
        keys = list(self.matrix)
        return [dict(zip(keys, values)) for values in itertools.product(*self.matrix.values())]

    def fs(self, cell: dict[str, Any]) -> Filesystem:
        return Filesystem(cell.get("fs", Filesystem.EXT4.value))

    def dax(self, cell: dict[str, Any]) -> DaxMode:
        return DaxMode(cell.get("dax", DaxMode.ALWAYS.value))

    def params(self, cell: dict[str, Any]) -> BaseModel:
        """The kind's params model for this cell: [workload] with the cell's values over it."""
        try:
            return _cell_params(self, cell)
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, loc))}: {message}"
                                 for loc, message in _params_problems(exc, self.matrix))
            raise ConfigError(f"{self.path}: cell {describe_cell(cell)}: {problems}") from None

    def ack_count(self, params: BaseModel) -> int:
        """How many ACKs the workload emits with these params (0 for kinds that emit none)."""
        return self.kind.ack_count(params) if self.kind.ack_count is not None else 0

    def expected(self, cell: dict[str, Any]) -> Verdict:
        for rule in self.spec.expect:
            if rule.matches(cell):
                return Verdict(rule.verdict)
        raise ConfigError(f"{self.path}: field 'expect': no rule matches cell {describe_cell(cell)}")


def _cell_params(scenario: Scenario, cell: dict[str, Any]) -> BaseModel:
    values = scenario.spec.workload.model_dump()
    values.update((key, value) for key, value in cell.items() if key in values)
    return scenario.kind.params.model_validate(values)


def cell_key(cell: dict[str, Any]) -> str:
    """'fs=ext4 map_sync=false': how a cell is named in seeds, reports and messages."""
    return " ".join(f"{key}={_scalar(value)}" for key, value in cell.items())


def describe_cell(cell: dict[str, Any]) -> str:
    return cell_key(cell) or "(the only cell: no matrix)"


def load_scenario(path: Path) -> Scenario:
    """Read, parse and validate a scenario file; ConfigError lists every problem."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read scenario: {exc.strerror}") from None
    return parse_scenario(raw, path)


def parse_scenario(raw: bytes, path: Path) -> Scenario:
    """Validate scenario bytes; `path` only names the source in messages."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[:exc.start].count(b"\n") + 1
        raise ConfigError(f"{path}:{line}: not UTF-8 text (byte offset {exc.start})") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(_toml_error(path, exc)) from None
    lines = _line_index(text)
    kind = _kind_named(data)
    layout = _layout(kind)
    try:
        spec = layout.file.model_validate(data)
    except ValidationError as exc:
        raise _report(path, lines, _pydantic_problems(exc, layout)) from None
    assert kind is not None  # an unknown or missing workload fails validation above
    matrix = {key: tuple(getattr(spec.matrix, key)) for key in data.get("matrix", {})}  # file order
    scenario = Scenario(spec, matrix, path, text, hashlib.sha256(raw).hexdigest(), kind)
    problems = _semantic_problems(scenario)
    if problems:
        raise _report(path, lines, problems)
    return scenario


# -- cross-field checks -----------------------------------------------------------------------

Loc = tuple[str | int, ...]


def _semantic_problems(scenario: Scenario) -> list[tuple[Loc, str]]:
    spec, matrix = scenario.spec, scenario.matrix
    problems: list[tuple[Loc, str]] = []
    for key in matrix:
        if key in spec.workload.model_fields_set:
            problems.append((("matrix", key), f"'{key}' is set in both [workload] and [matrix]; keep it in one"))
    problems += _expect_problems(scenario)
    if "xfs" in matrix.get("fs", ()) and spec.machine.nvdimm_size_mib < XFS_MIN_NVDIMM_MIB:
        problems.append((("machine", "nvdimm_size_mib"),
                         f"{spec.machine.nvdimm_size_mib} MiB is too small for xfs (in the matrix): "
                         f"mkfs.xfs needs >= 300 MB, so use at least {XFS_MIN_NVDIMM_MIB}"))
    problems += _cell_problems(scenario)
    return problems


def _expect_problems(scenario: Scenario) -> list[tuple[Loc, str]]:
    rules, matrix = scenario.spec.expect, scenario.matrix
    problems: list[tuple[Loc, str]] = []
    for index, rule in enumerate(rules):
        if not rule.where and index < len(rules) - 1:
            problems.append((("expect", index, "where"), "only the last rule may omit 'where': this rule "
                             "matches every cell, so the rules after it would never apply"))
        for key, value in (rule.where or {}).items():
            if key not in matrix:
                problems.append((("expect", index, "where", key), f"'{key}' is not a matrix key; matrix keys: "
                                 f"{', '.join(matrix) or '(none: there is no [matrix])'}"))
            elif not any(_same(value, option) for option in matrix[key]):
                problems.append((("expect", index, "where", key), f"{_toml(value)} is not among the matrix "
                                 f"values of '{key}': {_toml(list(matrix[key]))}"))
    if problems:
        return problems  # unmatched cells would only repeat these
    unmatched = [cell for cell in scenario.cells() if not any(rule.matches(cell) for rule in rules)]
    if unmatched:
        problems.append((("expect",), f"no rule matches cell {describe_cell(unmatched[0])}"
                         f"{_more_cells(len(unmatched) - 1)}; add a rule "
                         "for it, or end with a rule without 'where'"))
    return problems


def _cell_problems(scenario: Scenario) -> list[tuple[Loc, str]]:
    """Per-cell impossibilities (the kind's cross-field rules, unreachable crash points), each reported once
    with the first cell it hits."""
    kind, crash = scenario.kind, scenario.crash
    problems: list[tuple[Loc, str]] = []
    check_acks = crash is not None and crash.needs_acks
    if crash is not None and crash.needs_acks and kind.ack_count is None:
        problems.append((("crash", "strategy"), f"{json.dumps(crash.strategy)} cuts after an ACK, and the "
                         f"{kind.name} workload sends none; use \"time_offsets\""))
        check_acks = False
    hits: dict[tuple[Loc, str], list[dict[str, Any]]] = {}
    for cell in scenario.cells():
        try:
            params = _cell_params(scenario, cell)
        except ValidationError as exc:
            for loc, message in _params_problems(exc, scenario.matrix):
                hits.setdefault((loc, message), []).append(cell)
            continue
        if check_acks and crash is not None:
            for field, message in crash.impossible(scenario.ack_count(params)):
                hits.setdefault((("crash", field), message), []).append(cell)
    for (loc, message), cells in hits.items():
        problems.append((loc, f"{message}, in cell {describe_cell(cells[0])}{_more_cells(len(cells) - 1)}"))
    return problems


def _params_problems(err: ValidationError, matrix: dict[str, tuple[Any, ...]]) -> list[tuple[Loc, str]]:
    """A cell's params-model errors, placed at the matrix key or the [workload] field they name."""
    problems: list[tuple[Loc, str]] = []
    for problem in err.errors():
        loc: Loc = tuple(problem["loc"])
        if loc and loc[0] in matrix:
            where: Loc = ("matrix", loc[0])
        else:
            where = ("workload", *loc)
        problems.append((where, _message(problem)))
    return problems


# -- messages ---------------------------------------------------------------------------------

def _more_cells(count: int) -> str:
    return f" (and {count} more cell{'s' if count > 1 else ''})" if count else ""


def _report(path: Path, lines: dict[Loc, int], problems: list[tuple[Loc, str]]) -> ConfigError:
    """One line per problem, in file order (problems whose line is unknown last)."""
    located = [(_line_of(lines, loc), loc, message) for loc, message in problems]
    located.sort(key=lambda item: item[0] if item[0] is not None else 1 << 30)
    return ConfigError("\n".join(_format(path, line, loc, message) for line, loc, message in located))


_HINTS = {"crash.strategy": "allowed: " + ", ".join(STRATEGIES), "expect.verdict": "allowed: " + ", ".join(VERDICTS)}


def _pydantic_problems(err: ValidationError, layout: _Layout) -> list[tuple[Loc, str]]:
    problems: list[tuple[Loc, str]] = []
    for problem in err.errors():
        loc: Loc = tuple(problem["loc"])
        kind = problem["type"]
        if kind == "extra_forbidden":
            allowed = _allowed_keys(layout, loc[:-1])
            message = "unknown key" + (f"; allowed: {', '.join(allowed)}" if allowed else "")
        elif kind in ("union_tag_invalid", "union_tag_not_found"):
            loc = loc + ("strategy",)
            tag = problem.get("ctx", {}).get("tag")
            message = f"unknown strategy {json.dumps(tag)}" if kind == "union_tag_invalid" else "missing (required)"
        else:
            message = _message(problem)
        loc = _strip_tag(loc)
        hint = _HINTS.get(".".join(str(p) for p in loc if not isinstance(p, int)))
        if hint and hint not in message:
            message += f"; {hint}"
        problems.append((loc, message))
    return problems


def _message(problem: Any) -> str:
    kind, value = problem["type"], problem.get("input")
    if kind == "missing":
        return "missing (required)"
    if kind == "too_short":
        return "must not be empty"
    if kind == "value_error":
        return str(problem["ctx"]["error"])
    return f"{problem['msg'][0].lower()}{problem['msg'][1:]}, got {_toml(value)}"


def _strip_tag(loc: Loc) -> Loc:
    """pydantic puts the union tag into the path (crash.after_ack.ack); the file has crash.ack."""
    if len(loc) > 1 and loc[0] == "crash" and loc[1] in STRATEGIES:
        return loc[:1] + loc[2:]
    return loc


def _allowed_keys(layout: _Layout, parent: Loc) -> list[str]:
    if not parent:
        return list(layout.top_keys)
    model: type[BaseModel] | None
    if parent[0] == "crash":
        model = STRATEGIES.get(str(parent[1])) if len(parent) > 1 else None
    else:
        named = [p for p in parent if not isinstance(p, int)]
        model = layout.sections.get(str(parent[0])) if len(named) == 1 else None
    return list(model.model_fields) if model else []


def _format(path: Path, line: int | None, loc: Loc, message: str) -> str:
    where = f"{path}:{line}" if line is not None else f"{path}"
    return f"{where}: field '{'.'.join(str(p) for p in loc)}': {message}"


def _toml_error(path: Path, exc: tomllib.TOMLDecodeError) -> str:
    found = re.fullmatch(r"(.*) \(at line (\d+), column (\d+)\)", str(exc), re.S)
    if found:
        return f"{path}:{found[2]}:{found[3]}: not valid TOML: {found[1]}"
    return f"{path}: not valid TOML: {exc}"


def _scalar(value: Any) -> str:
    return ("true" if value else "false") if isinstance(value, bool) else str(value)


def _toml(value: Any) -> str:
    """A value as TOML spells it (true, "ext4", [1, 2]) for messages."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items()) + " }"
    if isinstance(value, str):
        return json.dumps(value)
    return str(value)


def _same(a: Any, b: Any) -> bool:
    """Equal and of the same type: in Python True == 1, in TOML they differ."""
    return type(a) is type(b) and a == b


# -- where a field sits in the text ------------------------------------------------------------

_HEADER = re.compile(r"\s*(\[\[?)\s*([^\[\]]+?)\s*\]\]?\s*(#.*)?")
_KEY = re.compile(r"""\s*((?:[A-Za-z0-9_-]+|"[^"]*"|'[^']*')(?:\s*\.\s*(?:[A-Za-z0-9_-]+|"[^"]*"|'[^']*'))*)\s*=""")
_PART = re.compile(r"""[A-Za-z0-9_-]+|"[^"]*"|'[^']*'""")
_STRING = re.compile(r""""(?:[^"\\]|\\.)*"|'[^']*'""")


def _key_parts(text: str) -> tuple[str, ...]:
    return tuple(part.strip("\"'") for part in _PART.findall(text))


def _line_index(text: str) -> dict[Loc, int]:
    """First line of every table header and key, by path; [[array]] entries get their index."""
    index: dict[Loc, int] = {}
    table: Loc = ()
    arrays: dict[Loc, int] = {}
    depth = 0  # open brackets of a value that spans lines
    for number, line in enumerate(text.splitlines(), 1):
        code = _STRING.sub('""', line).split("#", 1)[0]
        if depth > 0:
            depth += code.count("[") + code.count("{") - code.count("]") - code.count("}")
            continue
        header = _HEADER.fullmatch(line)
        if header:
            names = _key_parts(header[2])
            if header[1] == "[[":
                arrays[names] = arrays.get(names, -1) + 1
                table = names + (arrays[names],)
                index.setdefault(names, number)
            else:
                table = _in_array(names, arrays)
            index.setdefault(table, number)
            continue
        key = _KEY.match(line)
        if key:
            index.setdefault(table + _key_parts(key[1]), number)
            value = code.split("=", 1)[1] if "=" in code else ""
            depth = value.count("[") + value.count("{") - value.count("]") - value.count("}")
    return index


def _in_array(names: tuple[str, ...], arrays: dict[Loc, int]) -> Loc:
    """[expect.where] after [[expect]] belongs to the latest expect entry."""
    for cut in range(len(names) - 1, 0, -1):
        if names[:cut] in arrays:
            return names[:cut] + (arrays[names[:cut]],) + names[cut:]
    return names


def _line_of(lines: dict[Loc, int], loc: Loc) -> int | None:
    """The line of the field, else of the nearest enclosing table or key that is in the text."""
    for end in range(len(loc), 0, -1):
        if loc[:end] in lines:
            return lines[loc[:end]]
    return None
