"""Field types of the scenario file: names, one-line text, verdicts, workload kinds, matrix axes.

A check's ValueError text becomes the message after "field '...': ".
"""

from __future__ import annotations

import json
import re
from typing import Annotated, Any, Literal, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from lab.scenario.values import same, toml
from lab.verdict import Verdict
from lab.workloads import catalog

VERDICTS = tuple(v.value for v in Verdict)


class Strict(BaseModel):
    # strict: TOML has real types, so "100" for an int or 1 for a bool is a mistake, not a shortcut
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


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


def distinct(values: list[Any]) -> list[Any]:
    seen: list[Any] = []
    for value in values:
        if any(same(value, other) for other in seen):
            raise ValueError(f"lists {toml(value)} twice")
        seen.append(value)
    return values


Name = Annotated[str, AfterValidator(_name)]
ImageRef = Annotated[str, AfterValidator(_image_ref)]
OneLine = Annotated[str, AfterValidator(_one_line)]
VerdictName = Annotated[str, AfterValidator(_verdict)]
WorkloadName = Annotated[str, AfterValidator(_workload)]  # a kind in lab.workloads.catalog
FsName = Literal["ext4", "xfs"]  # Filesystem values (a test keeps them in step)
DaxName = Literal["always", "inode", "never"]  # DaxMode values
PersistenceName = Literal["eadr", "adr"]  # Persistence values: what a power cut keeps


def _distinct_axis(values: list[Any] | None) -> list[Any] | None:
    return None if values is None else distinct(values)


T = TypeVar("T")
# A matrix key: a non-empty list of distinct values (a repeated value would repeat its cells).
Axis = Annotated[list[T] | None, Field(min_length=1), AfterValidator(_distinct_axis)]
