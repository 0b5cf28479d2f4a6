"""Kernel module selection: names in, files out, dependencies from modules.dep.

No hand-kept dependency lists: the kernel's own modules.dep (made by depmod)
says what each module needs, and modules.builtin says what needs no file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from lab.errors import ImageError

_SUFFIXES = (".ko", ".ko.xz", ".ko.zst", ".ko.gz")


def module_name(path: str) -> str:
    """Module name of a module file path: basename, suffix off, '-' -> '_'."""
    base = path.rsplit("/", 1)[-1]
    for suffix in _SUFFIXES:
        if base.endswith(suffix):
            base = base[: -len(suffix)]
            break
    return base.replace("-", "_")


@dataclass
class ModuleIndex:
    """What modules.dep and modules.builtin of one kernel say."""

    deps: dict[str, list[str]] = field(default_factory=dict)  # path -> dependency paths
    by_name: dict[str, str] = field(default_factory=dict)  # name -> path
    builtin: set[str] = field(default_factory=set)  # names compiled into the kernel

    @classmethod
    def parse(cls, modules_dep: str, modules_builtin: str = "") -> "ModuleIndex":
        index = cls()
        for line_no, line in enumerate(modules_dep.splitlines(), 1):
            if not line.strip():
                continue
            if ":" not in line:
                raise ImageError(f"modules.dep line {line_no}: expected 'path: deps', got {line!r}")
            path, _, rest = line.partition(":")
            path = path.strip()
            index.deps[path] = rest.split()
            index.by_name[module_name(path)] = path
        index.builtin = {module_name(p) for p in modules_builtin.split() if p}
        return index

    @classmethod
    def load(cls, moddir: Path) -> "ModuleIndex":
        dep = moddir / "modules.dep"
        if not dep.is_file():
            raise ImageError(f"{dep} is missing: run depmod for this kernel first")
        builtin = moddir / "modules.builtin"
        return cls.parse(dep.read_text(), builtin.read_text() if builtin.is_file() else "")

    def resolve(self, names: list[str]) -> list[str]:
        """Module file paths for `names` and all they depend on, dependencies first.

        Built-in names resolve to nothing; an unknown name is an error.
        """
        ordered: list[str] = []
        seen: set[str] = set()

        def visit(path: str, chain: tuple[str, ...]) -> None:
            if path in seen:
                return
            if path in chain:
                raise ImageError(f"modules.dep has a dependency cycle: {' -> '.join(chain + (path,))}")
            for dep in self.deps.get(path, []):
                visit(dep, chain + (path,))
            seen.add(path)
            ordered.append(path)

        for raw in names:
            name = raw.replace("-", "_")
            if name in self.by_name:
                visit(self.by_name[name], ())
            elif name not in self.builtin:
                raise ImageError(
                    f"kernel module {raw!r} is neither in modules.dep nor built in; "
                    "check the name (modinfo) or the kernel's configuration")
        return ordered

    def load_order(self, names: list[str]) -> list[str]:
        """The names to modprobe at boot: those that are modules (not built in)."""
        return [n.replace("-", "_") for n in names if n.replace("-", "_") in self.by_name]
