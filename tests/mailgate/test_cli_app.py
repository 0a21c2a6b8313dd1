"""The one table printer (``mailgate.cli_app.print_table``), issue 17: piped output was
cut to 80 columns ("unknown-sen…"). Not on a terminal, every command's table is TSV with
a header row and whole values; on a terminal cells wrap instead of being cut."""

from __future__ import annotations

import io
import re

from mailgate.cli_app import print_table
from tests.conftest import DOMAIN

LONG = "A description much longer than eighty columns, " * 3 + "ending here"


def test_piped_tables_are_tsv_with_whole_values(run_cli, gateway) -> None:  # type: ignore[no-untyped-def]
    assert run_cli("lists", "create", "eng", "--description", LONG).exit_code == 0
    shown = run_cli("lists", "show", "eng")
    assert shown.exit_code == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert lines[0] == "# List eng"
    assert lines[1] == "field\tvalue"
    assert f"description\t{LONG.strip()}" in lines
    assert "…" not in shown.stdout

    # A refused mail's reason, whole: the report's "unknown-sen…".
    stranger = "someone.with.a.rather.long.address@elsewhere-entirely.example"
    gateway.submit(
        b"From: " + stranger.encode() + b"\r\nSubject: hi\r\n\r\nhello\r\n",
        f"eng@{DOMAIN}",
        stranger,
    )
    listed = run_cli("inbound", "list", "--status", "received")
    rows = [line.split("\t") for line in listed.stdout.splitlines()[1:]]
    header, (row,) = rows[0], rows[1:]
    assert row[header.index("mail_from")] == stranger


def test_cells_escape_tabs_and_newlines(capsys) -> None:  # type: ignore[no-untyped-def]
    print_table("t", ["a", "b"], [["x\ty", "line 1\nline 2"], [None, "back\\slash"]])
    out = capsys.readouterr().out
    assert out == "# t\na\tb\nx\\ty\tline 1\\nline 2\n\tback\\\\slash\n"


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_terminal_tables_wrap_rather_than_cut(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    terminal = Terminal()
    monkeypatch.setattr("sys.stdout", terminal)
    monkeypatch.setenv("COLUMNS", "40")
    print_table(
        "Inbound",
        ["id", "reason"],
        [[7, "unknown-sender-with-a-long-tail " * 3], [8, "[bold]literal[/bold]"]],
    )
    out = terminal.getvalue()
    assert "…" not in out
    assert "│" in out  # a rich table, not TSV
    letters = re.sub(r"[\s│┃┏┓┗┛┡┩└┘┌┐─━╇╈┳┻┼╋]", "", out)
    assert ("unknown-sender-with-a-long-tail" * 3) in letters
    assert "[bold]literal[/bold]" in letters  # a value is never rich markup
