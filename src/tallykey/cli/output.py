"""The bottom of the command line: how every command prints, fails and exits.

Errors are one clear line on stderr and a non-zero exit code, never a traceback.
"""

from __future__ import annotations

import json
import sys
from typing import Annotated, Any, NoReturn

import typer
from pydantic import BaseModel
from rich.console import Console
from rich.markup import escape
from rich.table import Table


class _Output(Console):
    """A console that breaks no line of its own when it writes to a pipe or a file
    (`tallykey … | cat`, `> file`): every value arrives whole, on its own line; at a
    terminal it wraps to the window as usual."""

    @property
    def soft_wrap(self) -> bool:
        return self._soft_wrap or not self.is_terminal

    @soft_wrap.setter
    def soft_wrap(self, value: bool) -> None:
        self._soft_wrap = value


out: Console = _Output()
err: Console = _Output(stderr=True)

JsonOption = Annotated[bool, typer.Option("--json", metavar="", help="Print JSON.")]
AccountOption = Annotated[str, typer.Option("--account", "-a", help="Account slug or id.")]

EXIT_ERROR = 1
#: The store could not be reached: try again later (sysexits' EX_TEMPFAIL).
EXIT_UNAVAILABLE = 75
#: A setting is unknown or has a value that cannot be used (sysexits' EX_CONFIG).
EXIT_CONFIG = 78
EXIT_NOT_FOUND = 3
EXIT_FORBIDDEN = 4


def fail(message: str, hint: str = "", code: int = EXIT_ERROR) -> NoReturn:
    said = escape(message + (f" {hint}" if hint else ""))  # brackets are text, not style
    err.print(f"[bold red]error:[/] {said}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def print_table(headers: list[str], rows: list[list[str]], *,
                keep: tuple[str, ...] = ("prefix", "id")) -> None:
    """Rows for a person at a terminal (aligned; the `keep` columns, ids and prefixes,
    are never cut), or, in a pipe or file, tab-separated with every value in full."""
    if not out.is_terminal:
        for row in [headers, *rows]:
            sys.stdout.write("\t".join(cell.replace("\t", " ") for cell in row) + "\n")
        return
    table = Table()
    for number, header in enumerate(headers):
        widest = max([len(header), *(len(row[number]) for row in rows)])
        table.add_column(header, no_wrap=header in keep,
                         min_width=widest if header in keep else None)
    for row in rows:
        table.add_row(*row)
    out.print(table)


def emit_json(value: Any) -> None:
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json")
    elif isinstance(value, list):
        value = [v.model_dump(mode="json") if isinstance(v, BaseModel) else v for v in value]
    sys.stdout.write(json.dumps(value, indent=2, default=str) + "\n")
