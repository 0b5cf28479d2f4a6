"""Problems as messages: one line each, ``{path}:{line}: field '{dotted.path}': {what is wrong}``,
in file order; pydantic's errors translated into the file's words."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from lab.errors import ConfigError
from lab.scenario.crash import STRATEGIES
from lab.scenario.fields import VERDICTS
from lab.scenario.layout import Layout
from lab.scenario.lines import Loc, line_of
from lab.scenario.values import toml

Problem = tuple[Loc, str]


def more_cells(count: int) -> str:
    return f" (and {count} more cell{'s' if count > 1 else ''})" if count else ""


def report(path: Path, lines: dict[Loc, int], problems: list[Problem]) -> ConfigError:
    """One line per problem, in file order (problems whose line is unknown last)."""
    located = [(line_of(lines, loc), loc, message) for loc, message in problems]
    located.sort(key=lambda item: item[0] if item[0] is not None else 1 << 30)
    return ConfigError("\n".join(_format(path, line, loc, message) for line, loc, message in located))


_HINTS = {"crash.strategy": "allowed: " + ", ".join(STRATEGIES), "expect.verdict": "allowed: " + ", ".join(VERDICTS)}


def pydantic_problems(err: ValidationError, layout: Layout) -> list[Problem]:
    problems: list[Problem] = []
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


def params_problems(err: ValidationError, matrix: dict[str, tuple[Any, ...]]) -> list[Problem]:
    """A cell's params-model errors, placed at the matrix key or the [workload] field they name."""
    problems: list[Problem] = []
    for problem in err.errors():
        loc: Loc = tuple(problem["loc"])
        if loc and loc[0] in matrix:
            where: Loc = ("matrix", loc[0])
        else:
            where = ("workload", *loc)
        problems.append((where, _message(problem)))
    return problems


def _message(problem: Any) -> str:
    kind, value = problem["type"], problem.get("input")
    if kind == "missing":
        return "missing (required)"
    if kind == "too_short":
        return "must not be empty"
    if kind == "value_error":
        return str(problem["ctx"]["error"])
    return f"{problem['msg'][0].lower()}{problem['msg'][1:]}, got {toml(value)}"


def _strip_tag(loc: Loc) -> Loc:
    """pydantic puts the union tag into the path (crash.after_ack.ack); the file has crash.ack."""
    if len(loc) > 1 and loc[0] == "crash" and loc[1] in STRATEGIES:
        return loc[:1] + loc[2:]
    return loc


def _allowed_keys(layout: Layout, parent: Loc) -> list[str]:
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


def toml_error(path: Path, exc: tomllib.TOMLDecodeError) -> str:
    found = re.fullmatch(r"(.*) \(at line (\d+), column (\d+)\)", str(exc), re.S)
    if found:
        return f"{path}:{found[2]}:{found[3]}: not valid TOML: {found[1]}"
    return f"{path}: not valid TOML: {exc}"
