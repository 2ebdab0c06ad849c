"""Running the CLI as a user does, and comparing what two runs wrote."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEMO_CONFIG = REPO / "pipelines" / "configs" / "demo.yaml"


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "avcurate.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env=env)  # fmt: skip


def curate_demo(inputs: Path, output: Path, *extra: str) -> dict:
    """The demo config over `inputs`, as `make demo` runs it; the JSON summary."""
    done = run_cli("run", "--config", str(DEMO_CONFIG), "--input", str(inputs), "--output", str(output),
                   "--workers", "2", "--json", *extra)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


# The run's record and the report page hold timings and dates; the report's previews (report_files/) are compared.
NOT_REPRODUCIBLE = ("run.json", "report.html")


def digests(folder: Path) -> dict[str, str]:
    """Every file under `folder` (hidden ones included) but NOT_REPRODUCIBLE -> its SHA-256."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and str(p.relative_to(folder)) not in NOT_REPRODUCIBLE}  # fmt: skip


def assert_same_outputs(expected: Path, actual: Path, log: str = "") -> None:
    """The same files, byte for byte, and nothing else (no staging area, no temporary file). `log`: what the runs
    that made them printed, shown if they differ."""
    want, got = digests(expected), digests(actual)
    differ = {"missing": sorted(want.keys() - got.keys()), "extra": sorted(got.keys() - want.keys()),
              "other bytes": sorted(name for name in want.keys() & got.keys() if want[name] != got[name])}  # fmt: skip
    assert not any(differ.values()), "\n".join(
        [f"outputs differ: {differ}", f"expected's previews: {_problems(expected)}",
         f"actual's previews: {_problems(actual)}", f"log: {log[-4000:]}"]
    )  # fmt: skip


def _problems(output: Path) -> list[str]:
    """What the report says went wrong with its previews (a missing preview's cause)."""
    page = output / "report.html"
    return re.findall(r"No preview: [^<]*", page.read_text(encoding="utf-8")) if page.exists() else []
