"""CLI plumbing shared by the ``mailgate`` command modules: the lazily built adapters
(:class:`App`), the one-line error, JSON and table output.

Kept apart from ``mailgate/cli.py`` so that command modules (``cli_questions``,
``cli_stats``) can import it without importing the CLI root (which imports them).
"""

from __future__ import annotations

import getpass
import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from mailgate.settings import Settings


class CLIError(click.ClickException):
    """A one-line error for the terminal (exit code 1), worded like every other error."""

    def show(self, file: Any = None) -> None:
        click.echo(f"error: {self.format_message()}", err=True)


@dataclass
class App:
    """Lazily built adapters shared by the commands of one invocation."""

    _settings: Settings | None = None
    _factory: Any = None

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            from mailgate.settings import load_settings

            self._settings = load_settings()
        return self._settings

    @property
    def factory(self) -> Any:
        if self._factory is None:
            from mailgate.db import make_engine, make_sessionmaker

            self._factory = make_sessionmaker(make_engine(self.settings.database_url))
        return self._factory

    @contextmanager
    def session(self) -> Iterator[Session]:
        from mailgate.db import unit_of_work

        with unit_of_work(self.factory) as session:
            yield session


pass_app: Any = click.make_pass_decorator(App, ensure=True)


def actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except Exception:  # noqa: BLE001 - no passwd entry inside some containers
        return "cli:unknown"


def emit_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=True, default=str, ensure_ascii=False))


def print_table(title: str, columns: list[str], rows: list[list[Any]]) -> None:
    """The one table printer. On a terminal: a rich table whose cells wrap rather than
    being cut. Otherwise (a pipe, a file, a test): tab-separated values with a header row
    and every value whole, so ``mailgate ... | grep`` or ``cut -f`` see exactly what is
    stored (issue 17: piped tables were cut to 80 columns, "unknown-sen…"). The title
    comes first as a ``# `` comment line (it can carry facts, e.g. a date)."""
    cells = [["" if v is None else str(v) for v in row] for row in rows]
    if not sys.stdout.isatty():
        click.echo(f"# {' '.join(title.split())}")
        for line in [columns, *cells]:
            click.echo("\t".join(tsv_cell(c) for c in line))
        return
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    table = Table(title=title, show_lines=False)
    for column in columns:
        table.add_column(column, overflow="fold")
    for row in cells:
        # Text, not str: a subject like "[eng] plan" is not rich markup.
        table.add_row(*(Text(c) for c in row))
    Console().print(table)


def tsv_cell(value: str) -> str:
    """One TSV cell on one line: tab, newline and backslash escaped as ``\\t`` ``\\n`` ``\\\\``."""
    return (
        value.replace("\\", "\\\\").replace("\t", "\\t").replace("\r", "\\r").replace("\n", "\\n")
    )


json_option: Any = click.option(
    "--json", "as_json", is_flag=True, help="Print JSON instead of a table."
)
