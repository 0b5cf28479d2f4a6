"""The check every kind's case carries: one fully specified run, as pure data.

`BaseCheck` holds what every kind needs (the cell's filesystem and dax mode,
the kind's params model, the machine shape, the seed) and round-trips through
JSON; a kind subclasses it, naming its KIND and PARAMS (and narrowing the
`params` field's type). Power-cut kinds extend it with a crash point
(lab/crash/cut_flow.py: CutCheck).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Self

from pydantic import BaseModel, ValidationError

from lab.errors import ConfigError
from lab.guest.pmem import DaxMode, Filesystem
from lab.vm.boot import MachineShape, shape_dict, shape_from_dict


@dataclass(frozen=True)
class BaseCheck:
    fs: Filesystem
    dax: DaxMode
    params: BaseModel
    shape: MachineShape = field(default=MachineShape(), kw_only=True)
    seed: int = field(default=0, kw_only=True)

    KIND: ClassVar[str]
    PARAMS: ClassVar[type[BaseModel]]

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.KIND, "fs": self.fs.value, "dax": self.dax.value, "params": self.params.model_dump(),
                **shape_dict(self.shape), "seed": self.seed}

    @classmethod
    def fields_from_dict(cls, data: dict[str, Any]) -> dict[str, Any]:
        """The BaseCheck fields of a stored check (shape keys missing from old records: defaults)."""
        if data.get("kind", cls.KIND) != cls.KIND:
            raise ConfigError(f"not a {cls.KIND} check: kind {data.get('kind')!r}")
        try:
            return {"fs": Filesystem(data["fs"]), "dax": DaxMode(data["dax"]),
                    "params": cls.PARAMS.model_validate(data.get("params") or {}),
                    "shape": shape_from_dict(data, defaults=MachineShape()), "seed": int(data.get("seed", 0))}
        except (KeyError, TypeError, ValueError, ValidationError) as exc:
            raise ConfigError(f"not a {cls.KIND} check: {exc}") from None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        """The inverse of to_dict."""
        return cls(**cls.fields_from_dict(data))
