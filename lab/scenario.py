"""Scenario files: TOML in scenarios/, validated completely before any machine boots.

A scenario names the workload, the machine shape, a matrix of filesystem and
workload options, a crash strategy, the oracles, and the verdict each matrix
cell is expected to reach. `lab.cases.expand` turns it into cases.

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
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar, Union

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

from lab.crash.point import CrashPoint
from lab.errors import ConfigError
from lab.guest.pmem import DaxMode, Filesystem
from lab.image.cache import DEFAULT_REF
from lab.verdict import Verdict
from lab.vm.boot import MachineShape
from lab.vm.spec import MIB
from lab.workloads.mapsync import PAGE, MapsyncParams

VERDICTS = tuple(v.value for v in Verdict)
XFS_MIN_NVDIMM_MIB = 512  # mkfs.xfs refuses filesystems under 300 MB
MIN_RECORD_SIZE = 64  # the record header and checksum need 40 bytes; the helper wants >= 64
_DEFAULT_SHAPE = MachineShape()
_DEFAULT_PARAMS = MapsyncParams()


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


def _distinct(values: list[Any]) -> list[Any]:
    seen: list[Any] = []
    for value in values:
        if any(_same(value, other) for other in seen):
            raise ValueError(f"lists {_toml(value)} twice")
        seen.append(value)
    return values


Name = Annotated[str, AfterValidator(_name)]
Records = Annotated[int, Field(ge=1)]
RecordSize = Annotated[int, Field(ge=MIN_RECORD_SIZE, le=PAGE, multiple_of=8)]
PerPage = Annotated[int, Field(ge=1, le=PAGE // MIN_RECORD_SIZE)]
DelayUs = Annotated[int, Field(ge=0)]
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
    workload: Literal["mapsync"]
    repeat: int = Field(default=1, ge=1)
    seed: int = Field(default=0, ge=0)
    image: Annotated[str, AfterValidator(_image_ref)] = DEFAULT_REF


class MachineSection(_Strict):
    cpus: int = Field(default=_DEFAULT_SHAPE.cpus, ge=1, le=64)
    memory_mib: int = Field(default=_DEFAULT_SHAPE.memory_mib, ge=128)
    # NVDIMMs are 2 MiB aligned (fsdax namespace alignment)
    nvdimm_size_mib: int = Field(default=_DEFAULT_SHAPE.nvdimm_size // MIB, ge=64, multiple_of=2)


class WorkloadSection(_Strict):
    """Fixed MapsyncParams fields; which ones the file set is in model_fields_set."""

    records: Records = _DEFAULT_PARAMS.records
    record_size: RecordSize = _DEFAULT_PARAMS.record_size
    records_per_page: PerPage = _DEFAULT_PARAMS.records_per_page
    prealloc: bool = _DEFAULT_PARAMS.prealloc
    map_sync: bool = _DEFAULT_PARAMS.map_sync
    delay_us: DelayUs = _DEFAULT_PARAMS.delay_us


class MatrixSection(_Strict):
    fs: Axis[FsName] = None
    dax: Axis[DaxName] = None
    records: Axis[Records] = None
    record_size: Axis[RecordSize] = None
    records_per_page: Axis[PerPage] = None
    prealloc: Axis[bool] = None
    map_sync: Axis[bool] = None
    delay_us: Axis[DelayUs] = None


WORKLOAD_KEYS = tuple(WorkloadSection.model_fields)
MATRIX_KEYS = tuple(MatrixSection.model_fields)

SeedFor = Callable[[int], int]  # crash point index -> the case seed


def _acks_only(records: int) -> str:
    return f"records = {records} (the workload acknowledges 0..{records - 1})"


class AfterAck(_Strict):
    """Cut once, right after the host reads ACK `ack`."""

    strategy: Literal["after_ack"]
    ack: int = Field(ge=0)
    seed: int | None = Field(default=None, ge=0)  # provenance of a random draw (exported random_ack cases)

    def points(self, records: int, seed_for: SeedFor) -> list[CrashPoint]:
        return [CrashPoint(after_ack=self.ack, seed=self.seed)]

    def impossible(self, records: int) -> list[tuple[str, str]]:
        return [("ack", f"ack {self.ack} is never reached with {_acks_only(records)}")] if self.ack >= records else []


class AckList(_Strict):
    """One crash point per listed ACK."""

    strategy: Literal["ack_list"]
    acks: Annotated[list[Annotated[int, Field(ge=0)]], Field(min_length=1), AfterValidator(_distinct)]

    def points(self, records: int, seed_for: SeedFor) -> list[CrashPoint]:
        return [CrashPoint(after_ack=ack) for ack in self.acks]

    def impossible(self, records: int) -> list[tuple[str, str]]:
        late = [str(ack) for ack in self.acks if ack >= records]
        if not late:
            return []
        what = f"ack {late[0]} is" if len(late) == 1 else f"acks {', '.join(late)} are"
        return [("acks", f"{what} never reached with {_acks_only(records)}")]


class RandomAck(_Strict):
    """`count` ACK indices drawn from each case's seed."""

    strategy: Literal["random_ack"]
    count: int = Field(ge=1)

    def points(self, records: int, seed_for: SeedFor) -> list[CrashPoint]:
        return [CrashPoint.random_ack(records, seed_for(index)) for index in range(self.count)]

    def impossible(self, records: int) -> list[tuple[str, str]]:
        return []


class EveryNthAck(_Strict):
    """A crash point after every `every`-th record: ACK every-1, 2*every-1, ... below records."""

    strategy: Literal["every_nth_ack"]
    every: int = Field(ge=1)

    def points(self, records: int, seed_for: SeedFor) -> list[CrashPoint]:
        return [CrashPoint(after_ack=ack) for ack in range(self.every - 1, records, self.every)]

    def impossible(self, records: int) -> list[tuple[str, str]]:
        if self.every <= records:
            return []
        return [("every", f"every = {self.every} gives no crash point (the first would be ack {self.every - 1}) "
                          f"with {_acks_only(records)}")]


class TimeOffsets(_Strict):
    """One crash point per offset, in seconds after the workload's mmap succeeded."""

    strategy: Literal["time_offsets"]
    seconds: Annotated[list[Annotated[float, Field(ge=0, allow_inf_nan=False)]], Field(min_length=1),
                       AfterValidator(_distinct)]

    def points(self, records: int, seed_for: SeedFor) -> list[CrashPoint]:
        return [CrashPoint(after_seconds=seconds) for seconds in self.seconds]

    def impossible(self, records: int) -> list[tuple[str, str]]:
        return []


CrashStrategy = Annotated[Union[AfterAck, AckList, RandomAck, EveryNthAck, TimeOffsets],
                          Field(discriminator="strategy")]
STRATEGIES: dict[str, type[BaseModel]] = {"after_ack": AfterAck, "ack_list": AckList, "random_ack": RandomAck,
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
    scenario: ScenarioSection
    machine: MachineSection = MachineSection()
    workload: WorkloadSection = WorkloadSection()
    matrix: MatrixSection = MatrixSection()
    crash: CrashStrategy
    oracles: OraclesSection = OraclesSection()
    expect: list[ExpectRule] = Field(min_length=1)


_SECTIONS: dict[str, type[BaseModel]] = {"scenario": ScenarioSection, "machine": MachineSection,
                                         "workload": WorkloadSection, "matrix": MatrixSection,
                                         "oracles": OraclesSection, "expect": ExpectRule}


# -- the validated scenario -------------------------------------------------------------------

@dataclass(frozen=True)
class Scenario:
    """A validated scenario file, with its text and content hash (case ids derive from the hash)."""

    spec: ScenarioFile
    matrix: dict[str, tuple[Any, ...]]  # in file order: the order cells are expanded in
    path: Path
    text: str
    content_hash: str  # sha256 hex of the file's bytes

    @property
    def name(self) -> str:
        return self.spec.scenario.name

    @property
    def description(self) -> str:
        return self.spec.scenario.description

    @property
    def repeat(self) -> int:
        return self.spec.scenario.repeat

    @property
    def seed(self) -> int:
        return self.spec.scenario.seed

    @property
    def image(self) -> str:
        return self.spec.scenario.image

    @property
    def crash(self) -> AfterAck | AckList | RandomAck | EveryNthAck | TimeOffsets:
        return self.spec.crash

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

    def params(self, cell: dict[str, Any]) -> MapsyncParams:
        fixed = self.spec.workload.model_dump()
        return MapsyncParams(**{key: cell.get(key, fixed[key]) for key in WORKLOAD_KEYS})

    def expected(self, cell: dict[str, Any]) -> Verdict:
        for rule in self.spec.expect:
            if rule.matches(cell):
                return Verdict(rule.verdict)
        raise ConfigError(f"{self.path}: field 'expect': no rule matches cell {describe_cell(cell)}")


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
    try:
        spec = ScenarioFile.model_validate(data)
    except ValidationError as exc:
        raise _report(path, lines, _pydantic_problems(exc)) from None
    matrix = {key: tuple(getattr(spec.matrix, key)) for key in data.get("matrix", {})}  # file order
    scenario = Scenario(spec, matrix, path, text, hashlib.sha256(raw).hexdigest())
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
    """Per-cell impossibilities, each reported once with the first cell it hits."""
    spec, matrix = scenario.spec, scenario.matrix
    hits: dict[tuple[Loc, str], list[dict[str, Any]]] = {}
    fixed = spec.workload.model_dump()
    for cell in scenario.cells():
        values = {key: cell.get(key, fixed[key]) for key in WORKLOAD_KEYS}
        per_page, size = values["records_per_page"], values["record_size"]
        if per_page * size > PAGE:
            where = "matrix" if "records_per_page" in matrix else "workload"
            hits.setdefault(((where, "records_per_page"), f"records_per_page = {per_page} x record_size = {size} "
                             f"is {per_page * size} bytes, more than a {PAGE}-byte page"), []).append(cell)
            continue
        try:
            scenario.params(cell)
        except ConfigError as exc:  # a MapsyncParams rule the field checks above do not mirror
            hits.setdefault((("workload",), str(exc)), []).append(cell)
            continue
        for field, message in spec.crash.impossible(values["records"]):
            hits.setdefault((("crash", field), message), []).append(cell)
    problems: list[tuple[Loc, str]] = []
    for (loc, message), cells in hits.items():
        problems.append((loc, f"{message}, in cell {describe_cell(cells[0])}{_more_cells(len(cells) - 1)}"))
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


def _pydantic_problems(err: ValidationError) -> list[tuple[Loc, str]]:
    problems: list[tuple[Loc, str]] = []
    for problem in err.errors():
        loc: Loc = tuple(problem["loc"])
        kind, value = problem["type"], problem.get("input")
        if kind == "extra_forbidden":
            allowed = _allowed_keys(loc[:-1])
            message = "unknown key" + (f"; allowed: {', '.join(allowed)}" if allowed else "")
        elif kind in ("union_tag_invalid", "union_tag_not_found"):
            loc = loc + ("strategy",)
            tag = problem.get("ctx", {}).get("tag")
            message = f"unknown strategy {json.dumps(tag)}" if kind == "union_tag_invalid" else "missing (required)"
        elif kind == "missing":
            message = "missing (required)"
        elif kind == "too_short":
            message = "must not be empty"
        elif kind == "value_error":
            message = str(problem["ctx"]["error"])
        else:
            message = f"{problem['msg'][0].lower()}{problem['msg'][1:]}, got {_toml(value)}"
        loc = _strip_tag(loc)
        hint = _HINTS.get(".".join(str(p) for p in loc if not isinstance(p, int)))
        if hint and hint not in message:
            message += f"; {hint}"
        problems.append((loc, message))
    return problems


def _strip_tag(loc: Loc) -> Loc:
    """pydantic puts the union tag into the path (crash.after_ack.ack); the file has crash.ack."""
    if len(loc) > 1 and loc[0] == "crash" and loc[1] in STRATEGIES:
        return loc[:1] + loc[2:]
    return loc


def _allowed_keys(parent: Loc) -> list[str]:
    if not parent:
        return list(ScenarioFile.model_fields)
    if parent[0] == "crash":
        model = STRATEGIES.get(str(parent[1])) if len(parent) > 1 else None
    else:
        model = _SECTIONS.get(str(parent[0])) if len([p for p in parent if not isinstance(p, int)]) == 1 else None
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
