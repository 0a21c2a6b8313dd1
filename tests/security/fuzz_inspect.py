"""Coverage-guided fuzzing of the inbound entry point with atheris (TEST-08).

Not collected by pytest (the name does not start with ``test_``); run it by hand or from
the nightly job, bounded in time::

    python tests/security/fuzz_inspect.py -max_total_time=60

Each input goes through what the gateway does at DATA (``check_shape``) and through
``mailgate inspect`` (parse → classify → sender → body), which is the worker's reading
path without the database. The property: neither ever raises, and a message the gateway
would accept is read within ``PER_INPUT_SECONDS`` (the stdlib parser has a history of
hangs and quadratic cases: bpo-37461, CPython #136063, #75630). A slow input is a crash
too, so libFuzzer keeps it.

Seeds are the mail fixtures and the crashers (so an unfixed crasher stops the run at
once), copied into a scratch corpus so libFuzzer's additions never
land in the repository. Crashing inputs are written to ``tests/fixtures/crashers/``,
where ``tests/security/test_hostile_input.py`` replays every file on each CI run: commit
the file together with the fix. Memory is capped with libFuzzer's ``-rss_limit_mb``.
"""

from __future__ import annotations

import logging
import shutil
import sys
import tempfile
import time
from pathlib import Path

import atheris

with atheris.instrument_imports():
    from mailgate.reading import inspect_message
    from mailgate.smtp import Limits, check_shape

# flufl.bounce logs (and then swallows) every exception its detectors raise on odd
# headers; at thousands of inputs a second that noise hides the real findings.
logging.getLogger("flufl.bounce").setLevel(logging.CRITICAL)
logging.getLogger("mailparser").setLevel(logging.CRITICAL)

HERE = Path(__file__).resolve().parent
FIXTURES = HERE.parent / "fixtures"
CRASHERS = FIXTURES / "crashers"
DOMAIN = "lists.corp.example"
LIMITS = Limits()
# Generous for one message even under atheris's instrumentation (typical mail takes well
# under 1 ms uninstrumented), yet far below a hang or a quadratic blow-up.
PER_INPUT_SECONDS = 1.0


class SlowInputError(AssertionError):
    """One input took longer than its budget; libFuzzer saves it as a crash."""


def fuzz_one_input(data: bytes) -> None:
    if check_shape(data, LIMITS) is not None:
        # Refused at DATA, so only ``mailgate inspect`` ever reads it: it must not raise.
        # Its time (a 1,000-level MIME bomb takes seconds) is left to libFuzzer's -timeout.
        inspect_message(data, domain=DOMAIN)
        return
    started = time.perf_counter()
    inspect_message(data, domain=DOMAIN)
    inspect_message(data, domain=DOMAIN, mail_from="alice@corp.example")
    elapsed = time.perf_counter() - started
    if elapsed > PER_INPUT_SECONDS:
        raise SlowInputError(f"{len(data)} bytes took {elapsed:.2f} s")


def seed_corpus() -> str:
    corpus = Path(tempfile.mkdtemp(prefix="mailgate-fuzz-"))
    for path in sorted((FIXTURES / "mail").glob("*.eml")):
        shutil.copyfile(path, corpus / path.name)
    for path in sorted(CRASHERS.glob("*")):
        if path.is_file() and path.name != "README.md":
            shutil.copyfile(path, corpus / f"crasher-{path.name}")
    return str(corpus)


def main(argv: list[str]) -> None:
    args = list(argv)
    flags = [a for a in args[1:] if a.startswith("-")]
    if not any(a.startswith("-artifact_prefix=") for a in flags):
        CRASHERS.mkdir(parents=True, exist_ok=True)
        args.append(f"-artifact_prefix={CRASHERS}/")
    if not any(a.startswith("-rss_limit_mb=") for a in flags):
        args.append("-rss_limit_mb=1024")
    if not any(a.startswith("-timeout=") for a in flags):
        args.append("-timeout=60")  # a real hang; the per-input budget above is tighter
    if not any(a.startswith("-max_len=") for a in flags):
        args.append("-max_len=65536")
    if not [a for a in argv[1:] if not a.startswith("-")]:  # no corpus directory given
        args.append(seed_corpus())
    atheris.Setup(args, fuzz_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)
