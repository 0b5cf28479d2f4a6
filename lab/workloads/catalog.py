"""The catalog of workload kinds: every module in lab/workloads/ that defines KIND.

Adding a kind is one module with a KIND = WorkloadKind(...) at its end; no
list to edit here (TuxRun-style registry).
"""

from __future__ import annotations

import importlib
import pkgutil
from functools import lru_cache

import lab.workloads
from lab.errors import ConfigError
from lab.workloads.base import WorkloadKind


@lru_cache(maxsize=1)
def kinds() -> dict[str, WorkloadKind]:
    found: dict[str, WorkloadKind] = {}
    for info in pkgutil.iter_modules(lab.workloads.__path__):
        module = importlib.import_module(f"lab.workloads.{info.name}")
        kind = getattr(module, "KIND", None)
        if isinstance(kind, WorkloadKind):
            if kind.name in found:
                raise RuntimeError(f"two workload kinds named {kind.name!r}")
            found[kind.name] = kind
    return dict(sorted(found.items()))


def get_kind(name: str) -> WorkloadKind:
    known = kinds()
    if name not in known:
        raise ConfigError(f"unknown workload {name!r}; known: {', '.join(known)}")
    return known[name]
