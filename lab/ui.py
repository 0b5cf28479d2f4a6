"""One object for terminal output (rich): messages, tables, JSON, aborts.

Commands stay thin: they call the core and hand results to this object.
Errors go to stderr; --json output goes to stdout alone.
"""

from __future__ import annotations

import json
import sys
from typing import Any, NoReturn

from rich.console import Console
from rich.table import Table


class UI:
    def __init__(self, json_mode: bool = False) -> None:
        self.json_mode = json_mode
        self.out = Console(highlight=False, soft_wrap=True)
        self.err = Console(stderr=True, highlight=False, soft_wrap=True)

    def info(self, message: str) -> None:
        # In JSON mode progress goes to stderr, so stdout stays parseable.
        (self.err if self.json_mode else self.out).print(message)

    def warn(self, message: str) -> None:
        self.err.print(f"[yellow]warning:[/yellow] {message}")

    def emit_json(self, data: Any) -> None:
        sys.stdout.write(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")
        sys.stdout.flush()

    def table(self, title: str, columns: list[str], rows: list[list[str]]) -> None:
        table = Table(title=title, title_justify="left")
        for column in columns:
            table.add_column(column)
        for row in rows:
            table.add_row(*row)
        self.out.print(table)

    def abort(self, message: str, code: int = 1) -> NoReturn:
        self.err.print(f"[red]error:[/red] {message}", markup=True, highlight=False)
        raise SystemExit(code)
