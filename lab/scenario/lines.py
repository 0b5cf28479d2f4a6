"""Where a field sits in the TOML text: the line of every table header and key, by dotted path.

tomllib gives values without positions; messages name the line, so this
indexes the text itself (table headers, [[array]] entries, keys, values that
span lines).
"""

from __future__ import annotations

import re

Loc = tuple[str | int, ...]  # a field's path: ("expect", 0, "where", "fs")

_HEADER = re.compile(r"\s*(\[\[?)\s*([^\[\]]+?)\s*\]\]?\s*(#.*)?")
_KEY = re.compile(r"""\s*((?:[A-Za-z0-9_-]+|"[^"]*"|'[^']*')(?:\s*\.\s*(?:[A-Za-z0-9_-]+|"[^"]*"|'[^']*'))*)\s*=""")
_PART = re.compile(r"""[A-Za-z0-9_-]+|"[^"]*"|'[^']*'""")
_STRING = re.compile(r""""(?:[^"\\]|\\.)*"|'[^']*'""")


def _key_parts(text: str) -> tuple[str, ...]:
    return tuple(part.strip("\"'") for part in _PART.findall(text))


def line_index(text: str) -> dict[Loc, int]:
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


def line_of(lines: dict[Loc, int], loc: Loc) -> int | None:
    """The line of the field, else of the nearest enclosing table or key that is in the text."""
    for end in range(len(loc), 0, -1):
        if loc[:end] in lines:
            return lines[loc[:end]]
    return None
