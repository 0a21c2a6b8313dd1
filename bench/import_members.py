"""Benchmark: ``mailgate members import`` of 10,000 rows on SQLite.

Prints the time through the real CLI (a fresh process, as an admin runs it) next to a
baseline measured in the same run: the same rows inserted with one bare ``executemany``
into a plain SQLite table with the same durability pragmas — the floor any importer
sits on. The issue's bar is under 10 seconds for the import.

Run: ``.venv/bin/python bench/import_members.py [ROWS]``
"""

from __future__ import annotations

import csv
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ZONES = ["Europe/Berlin", "America/New_York", "Asia/Tokyo", "UTC", "Australia/Sydney"]
DEPARTMENTS = ["Engineering", "Sales", "Support", "Finance", "People"]


def write_csv(path: Path, rows: int) -> None:
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["email", "name", "timezone", "department"])
        for i in range(rows):
            writer.writerow(
                [f"person{i}@corp.example", f"Person {i}", ZONES[i % 5], DEPARTMENTS[i % 5]]
            )


def baseline(path: Path, rows: int) -> float:
    db = sqlite3.connect(path)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute("CREATE TABLE t (email TEXT UNIQUE, name TEXT, tz TEXT, dept TEXT)")
    data = [(f"person{i}@corp.example", f"Person {i}", ZONES[i % 5], "x") for i in range(rows)]
    start = time.perf_counter()
    with db:
        db.executemany("INSERT INTO t VALUES (?, ?, ?, ?)", data)
    elapsed = time.perf_counter() - start
    db.close()
    return elapsed


def mailgate(env: dict[str, str], *args: str) -> float:
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "mailgate.cli", *args],
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return time.perf_counter() - start


def main() -> None:
    rows = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        env = {**os.environ, "MAILGATE_VAR_DIR": str(work / "var"), "MAILGATE_DATABASE_URL": ""}
        env.pop("MAILGATE_DATABASE_URL")
        csv_path = work / "people.csv"
        write_csv(csv_path, rows)
        mailgate(env, "db", "upgrade")
        mailgate(env, "lists", "create", "all")
        startup = mailgate(env, "lists", "list", "--json")
        first = mailgate(env, "members", "import", "all", str(csv_path), "--json")
        again = mailgate(env, "members", "import", "all", str(csv_path), "--json")
        floor = baseline(work / "baseline.db", rows)
    print(f"members import, {rows:,} rows on SQLite (WAL, synchronous=FULL)")
    print(f"  first import (CLI process) : {first:6.2f} s  ({rows / first:,.0f} rows/s)")
    print(f"  re-import, all unchanged   : {again:6.2f} s")
    print(f"  CLI start-up (lists list)  : {startup:6.2f} s")
    print(f"  baseline bare executemany  : {floor:6.2f} s")
    print(f"  ratio import / baseline    : {first / floor:6.1f}x")
    print(f"  bar (< 10 s)               : {'met' if first < 10 else 'MISSED'}")


if __name__ == "__main__":
    main()
