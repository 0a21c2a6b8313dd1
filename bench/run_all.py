"""Run every benchmark in bench/ in turn (``make bench``)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

# Sizes for ``make bench`` where a script's default is the full, hours-long shape: the
# soak's 20,000 messages into 200 members is 4 million copies (run it by hand).
ARGS = {"soak.py": ["--messages", "2000", "--members", "200"]}

if __name__ == "__main__":
    here = Path(__file__).parent
    failed = 0
    for script in sorted(here.glob("*.py")):
        if script.name == "run_all.py":
            continue
        print(f"\n### {script.name}", flush=True)
        command = [sys.executable, str(script), *ARGS.get(script.name, [])]
        failed += subprocess.call(command) != 0
    sys.exit(1 if failed else 0)
