"""``mailgate prompts show NAME`` prints the question bank, not only with --json (issue 17)."""

from __future__ import annotations


def test_prompts_show_prints_the_bank(run_cli, tmp_path) -> None:  # type: ignore[no-untyped-def]
    bank = tmp_path / "bank.txt"
    bank.write_text("What did you learn this week?\nWho helped you?\n", encoding="utf-8")
    created = run_cli("prompts", "create", "weekly", "--bank-file", str(bank))
    assert created.exit_code == 0, created.stderr
    shown = run_cli("prompts", "show", "weekly")
    assert shown.exit_code == 0, shown.stderr
    assert shown.stdout.splitlines()[1:] == [
        "question bank (2):",
        "  1. What did you learn this week?",
        "  2. Who helped you?",
        "asked so far: none yet",
    ]
