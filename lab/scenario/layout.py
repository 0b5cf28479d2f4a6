"""The file model of one workload kind: [workload] and [matrix] built from the kind's params model,
[crash] required or refused.

[workload] and the workload keys of [matrix] are the fields of the kind's
`params` model: each field is checked with its annotation (type and
constraints) where it is written; each matrix cell's full set of values is
checked with the model itself later (lab/scenario/checks.py).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, create_model
from pydantic.fields import FieldInfo

from lab.errors import ConfigError
from lab.scenario.crash import CrashStrategy
from lab.scenario.fields import Axis, DaxName, FsName, PersistenceName, Strict
from lab.scenario.sections import STATIC_SECTIONS, ScenarioFile
from lab.workloads import catalog
from lab.workloads.base import WorkloadKind

CELL_KEYS = ("fs", "dax", "persistence")  # matrix keys of every kind; the others are the kind's params fields


def _annotation(info: FieldInfo) -> Any:
    """A params field's type with its constraints and validators (Annotated metadata)."""
    assert info.annotation is not None
    return Annotated[(info.annotation, *info.metadata)] if info.metadata else info.annotation


def _default(info: FieldInfo) -> Any:
    if info.default_factory is not None:
        return Field(default_factory=info.default_factory)
    return info.default  # PydanticUndefined: required


def matrix_keys(kind: WorkloadKind) -> tuple[str, ...]:
    """What a scenario of this kind may put in [matrix]: fs, dax, persistence, then the params fields."""
    return (*CELL_KEYS, *kind.params.model_fields)


class _AnyExtra(Strict):
    model_config = ConfigDict(extra="allow")


@dataclass(frozen=True)
class Layout:
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
def layout(kind: WorkloadKind | None) -> Layout:
    axes: dict[str, Any] = {"fs": (Axis[FsName], None), "dax": (Axis[DaxName], None),  # type: ignore[misc]
                            "persistence": (Axis[PersistenceName], None)}  # type: ignore[misc]
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
        workload = create_model(f"{params.__name__}Workload", __base__=Strict,  # type: ignore[call-overload]
                                **{name: (_annotation(info), _default(info))
                                   for name, info in params.model_fields.items()})
        matrix = create_model(f"{params.__name__}Matrix", __base__=Strict,  # type: ignore[call-overload]
                              **axes, **{name: (Axis[_annotation(info)], None)  # type: ignore[misc, valid-type]
                                         for name, info in params.model_fields.items()})
        crash = (CrashStrategy, ...) if kind.uses_crash else (Annotated[Any, AfterValidator(_refuse_crash(kind.name))],
                                                              None)
    file = create_model(f"ScenarioFile_{kind.name if kind else 'unknown'}", __base__=ScenarioFile,
                        workload=(workload, Field(default_factory=workload)), matrix=(matrix, matrix()), crash=crash)
    sections = {**STATIC_SECTIONS, "matrix": matrix}
    if kind is not None:
        sections["workload"] = workload
    top = tuple(key for key in ScenarioFile.model_fields if key != "crash" or kind is None or kind.uses_crash)
    return Layout(file, sections, top)


def kind_named(data: dict[str, Any]) -> WorkloadKind | None:
    """The kind the raw file's [scenario] workload names, if it is known."""
    section = data.get("scenario")
    name = section.get("workload") if isinstance(section, dict) else None
    return catalog.kinds().get(name) if isinstance(name, str) else None
