"""A bounded coverage-guided fuzz run of ``mailgate inspect``'s reading path on each CI run.

``tests/security/fuzz_inspect.py`` (the nightly harness) runs as a subprocess under
atheris/libFuzzer, capped in executions, time and memory, seeded with every mail fixture
and every crasher. Both are copied into a scratch corpus, and libFuzzer's artifacts go
to a scratch directory, so a run never changes the repository (the harness's own
default would write finds into ``tests/fixtures/crashers/``). The property is the
harness's: reading never raises, and a message the gateway would accept is read within
its per-input budget. Exit code 0 means no crash, no timeout and no out-of-memory.

Skipped when atheris is not installed, unless ``MAILGATE_REQUIRE_ATHERIS=1`` (CI), which
turns the skip into a failure.

Time: importing the stack under atheris's instrumentation takes ~20 s of CPU, and the
1,000-level MIME bomb among the crashers ~13 s more (it is refused at DATA, so only
``mailgate inspect`` ever reads it, and the harness leaves its time to ``-timeout``,
which therefore stays at the harness's 60 s). ``-max_total_time`` counts from
libFuzzer's start, after the imports: the whole run takes ~40 s on a quiet 2-core
machine, of which the mutations get the few seconds left after the seeds.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import FIXTURES

HARNESS = Path(__file__).with_name("fuzz_inspect.py")
CRASHERS = FIXTURES / "crashers"
FLAGS = (
    "-runs=3000",  # executions, seeds included
    "-max_total_time=20",
    "-rss_limit_mb=2048",
    "-timeout=60",  # per input: a real hang (accepted mail has the harness's 1 s budget)
    "-max_len=65536",
    "-print_final_stats=1",
)

pytestmark = [pytest.mark.timeout(300)]


def require_atheris() -> None:
    if importlib.util.find_spec("atheris") is not None:
        return
    if os.environ.get("MAILGATE_REQUIRE_ATHERIS") == "1":
        pytest.fail("atheris is not installed but MAILGATE_REQUIRE_ATHERIS=1", pytrace=False)
    pytest.skip("atheris not installed (pip install atheris); MAILGATE_REQUIRE_ATHERIS=1 fails")


def seed_corpus(folder: Path) -> int:
    """Copy the mail fixtures and the crashers into ``folder``; how many seeds."""
    folder.mkdir()
    for path in sorted((FIXTURES / "mail").glob("*.eml")):
        shutil.copyfile(path, folder / path.name)
    for path in sorted(CRASHERS.iterdir()):
        if path.is_file() and path.name != "README.md":
            shutil.copyfile(path, folder / f"crasher-{path.name}")
    return len(list(folder.iterdir()))


def findings(artifacts: Path) -> list[Path]:
    """Inputs libFuzzer kept as failures (crash-, timeout-, oom-…); ``slow-unit-`` files
    only report the slowest input (the MIME bomb among the seeds) and fail nothing."""
    return sorted(p for p in artifacts.iterdir() if not p.name.startswith("slow-unit-"))


def failure_report(code: int, output: str, artifacts: Path) -> str:
    written = [
        w for w in re.findall(r"Test unit written to (\S+)", output) if "slow-unit-" not in w
    ]
    found = [str(p) for p in findings(artifacts)]
    tail = "\n".join(output.splitlines()[-40:])
    return (
        f"the bounded fuzz run of mailgate inspect failed (exit code {code}: crash, timeout "
        f"or out of memory).\nlibFuzzer wrote the input to: {written or found or 'nowhere'}\n"
        "Reproduce it with: .venv/bin/python tests/security/fuzz_inspect.py <that file>\n"
        "Then copy it into tests/fixtures/crashers/ under a name that says what it "
        "exercises, add a line to that folder's README.md and commit it with the fix: "
        "crashers become fixtures that tests/security/test_hostile_input.py replays on "
        f"every CI run.\n--- last lines of the fuzzer's output ---\n{tail}"
    )


def test_bounded_fuzz_of_inspect_finds_no_crash(tmp_path: Path) -> None:
    require_atheris()
    seeds = seed_corpus(tmp_path / "corpus")
    artifacts = tmp_path / "artifacts"
    artifacts.mkdir()
    log = tmp_path / "fuzz.log"
    argv = [sys.executable, str(HARNESS), *FLAGS, f"-artifact_prefix={artifacts}/"]
    with log.open("wb") as out:
        code = subprocess.call(
            [*argv, str(tmp_path / "corpus")],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=HARNESS.parents[2],
            timeout=240,
        )
    output = log.read_text(errors="replace")
    assert code == 0, failure_report(code, output, artifacts)
    assert not findings(artifacts), failure_report(code, output, artifacts)
    done = re.search(r"Done (\d+) runs", output)
    assert done is not None, f"libFuzzer did not finish normally:\n{output[-2000:]}"
    # Every seed was read (libFuzzer adds one empty input), so every crasher was replayed.
    assert int(done.group(1)) > seeds
