"""The wheel: every module of the package and the output schemas, usable without the source checkout."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Build the wheel from the tracked files only (a copy, so the checkout gets no build/ or egg-info)."""
    tracked = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    tree = tmp_path_factory.mktemp("tree")
    for name in tracked:
        if (REPO / name).is_file():
            (tree / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, tree / name)
    dist = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [sys.executable, "-c", f"from setuptools import build_meta; build_meta.build_wheel({str(dist)!r})"],
        cwd=tree, check=True, capture_output=True,
    )
    (built,) = dist.glob("avcurate-*.whl")
    return built


def test_the_wheel_holds_every_module_and_the_schemas(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    tracked = subprocess.run(["git", "ls-files", "avcurate", "schemas"], cwd=REPO, capture_output=True, text=True,
                             check=True).stdout.split()
    expected = {n for n in tracked if n.endswith(".py")}
    expected |= {"avcurate/schema_files/" + Path(n).name for n in tracked if n.startswith("schemas/")}
    assert expected - names == set()


def test_an_installed_wheel_validates_outputs_against_its_own_schemas(wheel: Path, tmp_path: Path) -> None:
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)  # a pure-Python wheel installs by unpacking
    probe = (
        "import sys; sys.path.insert(0, sys.argv[1])\n"
        "from avcurate import schemas\n"
        "from avcurate.writers.tables import index_table, ledger_table\n"
        "print(schemas.SCHEMAS_DIR)\n"
        "schemas.validate_index(index_table([]))\n"
        "schemas.validate_ledger(ledger_table([]))\n"
        "schemas._sample_validator(schemas.SAMPLE_METADATA_VERSION)\n"
    )
    out = subprocess.run([sys.executable, "-c", probe, str(site)], cwd=tmp_path, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert Path(out.stdout.strip()) == site / "avcurate" / "schema_files"
