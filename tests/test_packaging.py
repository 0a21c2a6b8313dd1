"""The install is quiet (issue 17): ``make run`` printed ~320 lines of setuptools
warnings because pyproject.toml gave ``project.license`` as a table (deprecated) and
left the template folders out of ``packages``. Both are checked here without a build,
and, where a setuptools new enough to warn is installed, by building the wheel."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())


def test_license_is_an_spdx_string() -> None:
    assert isinstance(PYPROJECT["project"]["license"], str)
    requires = PYPROJECT["build-system"]["requires"]
    assert "setuptools>=77" in requires  # the first to read an SPDX license string


def test_every_folder_with_package_files_is_a_declared_package() -> None:
    declared = set(PYPROJECT["tool"]["setuptools"]["packages"])
    roots = {p.split(".")[0] for p in declared}
    folders = {
        ".".join(path.parent.relative_to(REPO).parts)
        for root in roots
        for path in (REPO / root).rglob("*")
        if path.is_file()
        and path.suffix in {".py", ".txt", ".html", ".ini", ".mako"}
        and "__pycache__" not in path.parts
    }
    assert folders - declared == set()


def test_building_prints_no_setuptools_warning(tmp_path: Path) -> None:
    setuptools = pytest.importorskip("setuptools")
    if int(setuptools.__version__.split(".")[0]) < 77:
        pytest.skip(f"setuptools {setuptools.__version__} is too old to warn about these")
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(tmp_path), str(REPO)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "Warning" not in result.stdout + result.stderr
