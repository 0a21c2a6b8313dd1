"""tests/run_suite.py: a pass that collects no tests fails the suite (issue 12, item 15).

An empty PostgreSQL pass used to be green: pytest's exit code 5 ("no tests collected")
counted as success.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from tests import run_suite

HERE = Path(__file__)


def test_a_real_pytest_pass_that_collects_nothing_is_a_failure(
    capsys: pytest.CaptureFixture[str],
) -> None:
    args = ["-q", "-p", "no:cacheprovider", "-m", "no_such_marker", str(HERE)]
    code = run_suite.run("empty pass", args, dict(os.environ))
    assert code == run_suite.NO_TESTS != 0
    assert "FAILED empty pass: pytest collected no tests" in capsys.readouterr().out


@pytest.mark.parametrize(("empty", "engine"), [("SQLite", "sqlite"), ("PostgreSQL", "postgres")])
def test_the_suite_fails_when_either_pass_is_empty(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], empty: str, engine: str
) -> None:
    def pytest_pass(command: list[str], env: dict[str, str]) -> int:
        return run_suite.NO_TESTS if env["MAILGATE_TEST_DATABASE"] == engine else 0

    monkeypatch.setattr(run_suite.subprocess, "call", pytest_pass)
    monkeypatch.setattr(run_suite, "postgres_reachable", lambda url: None)
    monkeypatch.setattr(sys, "argv", ["run_suite.py"])
    assert run_suite.main() == 1
    out = capsys.readouterr().out
    assert f"FAILED {empty}:" in out and "collected no tests" in out
    assert out.rstrip().endswith("suite: FAILED")


def test_the_suite_passes_when_both_passes_ran_tests(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(run_suite.subprocess, "call", lambda command, env: 0)
    monkeypatch.setattr(run_suite, "postgres_reachable", lambda url: None)
    monkeypatch.setattr(sys, "argv", ["run_suite.py"])
    assert run_suite.main() == 0
