"""One object for terminal output (rich): messages, tables, JSON, aborts.

Commands stay thin: they call the core and hand results to this object.
Errors go to stderr; --json output goes to stdout alone.

Tables survive a pipe: on a terminal a cell too long for its column folds onto
the next line (never "…"); when stdout is not a terminal a table is plain
text, one row per line, columns padded with spaces and nothing cut, so
``pmemlab results list | grep ID`` finds whole ids.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from rich.console import Console
from rich.table import Table
from rich.text import Text

GAP = "  "  # between the columns of a plain table


def plain_table(columns: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """Lines of a text table: a header, then one line per row, every column as wide as its widest cell."""
    widths = [max([len(c), *(len(r[i]) for r in rows)]) for i, c in enumerate(columns)]

    def line(cells: Sequence[str]) -> str:
        return GAP.join(v.ljust(w) for v, w in zip(cells, widths)).rstrip()

    return [line(columns)] + [line(r) for r in rows]


class UI:
    def __init__(self, json_mode: bool = False, out: Console | None = None, err: Console | None = None) -> None:
        self.json_mode = json_mode
        self.out = out or Console(highlight=False, soft_wrap=True)
        self.err = err or Console(stderr=True, highlight=False, soft_wrap=True)

    def info(self, message: str, *, literal: bool = False) -> None:
        """literal: the message is text (ids, paths, cell keys), not rich markup."""
        # In JSON mode progress goes to stderr, so stdout stays parseable.
        (self.err if self.json_mode else self.out).print(message, markup=not literal, emoji=not literal)

    def warn(self, message: str) -> None:
        self.err.print(Text.assemble(("warning:", "yellow"), " ", message))

    def emit_json(self, data: Any) -> None:
        sys.stdout.write(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")
        sys.stdout.flush()

    def table(self, title: str, columns: list[str], rows: list[list[str]], *, literal: bool = False) -> None:
        """Cells are rich markup (escape what came from outside) unless literal."""
        if not self.out.is_terminal:
            self._plain(title, columns, rows, literal)
            return
        table = Table(title=title if not literal else Text(title), title_justify="left")
        for column in columns:
            table.add_column(column, overflow="fold")
        for row in rows:
            table.add_row(*(Text(cell) if literal else cell for cell in row))
        self.out.print(table)

    def _plain(self, title: str, columns: list[str], rows: list[list[str]], literal: bool) -> None:
        def text(cell: str) -> str:
            return cell if literal else Text.from_markup(cell, emoji=False).plain

        cells = [[text(c) for c in row] for row in rows]
        for line in [text(title), *plain_table(columns, cells)]:
            self.out.print(line, markup=False, emoji=False, highlight=False, soft_wrap=True)

    def abort(self, message: str, code: int = 1) -> NoReturn:
        # The message is text: a "[machine]" in it is a scenario section, not markup to swallow.
        self.err.print(Text.assemble(("error:", "red"), " ", message))
        raise SystemExit(code)
