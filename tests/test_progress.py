"""Watching a run: the live display on a terminal, plain lines in a log, nothing with --quiet."""

from __future__ import annotations

import json
import os
import pty
import re
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from avcurate.sample import SampleSet
from avcurate.synth import write_event_video
from runs import DEMO_CONFIG, run_cli

ANSI = re.compile(r"\x1b\[[0-9;?]*[a-zA-Z]")


def _run_on_terminal(args: list[str], timeout: float = 300) -> str:
    """The CLI with stdout and stderr on a pseudo-terminal, as in tmux; everything it drew, escapes removed."""
    main, child = pty.openpty()
    env = {**os.environ, "COLUMNS": "200", "TERM": "xterm-256color"}
    process = subprocess.Popen([sys.executable, "-m", "avcurate.cli", *args], stdin=child, stdout=child,
                               stderr=child, env=env)  # fmt: skip
    os.close(child)
    drawn = bytearray()
    while True:
        try:
            data = os.read(main, 65536)
        except OSError:  # EIO: every holder of the terminal's other end has closed it
            break
        if not data:
            break
        drawn += data
    os.close(main)
    assert process.wait(timeout=timeout) == 0, drawn.decode(errors="replace")[-3000:]
    return ANSI.sub("", drawn.decode(errors="replace"))


def test_live_display_on_a_terminal_counts_as_the_run_goes(sample_set: SampleSet, tmp_path: Path) -> None:
    out = tmp_path / "out"
    drawn = _run_on_terminal(["run", "--config", str(DEMO_CONFIG), "--input", str(sample_set.folder),
                              "--output", str(out), "--workers", "2"])  # fmt: skip
    total = len(sample_set.files)
    frames = [line for line in re.split(r"[\r\n]", drawn) if line.startswith("curating")]
    done = {int(m.group(1)) for line in frames if (m := re.search(rf"(\d+)/{total}\b", line))}
    # Redrawn while sources finish, not only once at the end.
    assert len(done) >= 3 and max(done) == total, frames[-5:]
    ledger = pq.read_table(out / "ledger.parquet").to_pylist()
    failed = sum(row["status"] == "failed" for row in ledger)
    index = pq.read_table(out / "index.parquet", columns=["status"]).column("status").to_pylist()
    last = frames[-1]
    assert f"kept {index.count('kept')}" in last and f"rejected {index.count('rejected')}" in last
    assert f"failed {failed}" in last and "real time" in last and "media" in last
    assert last.rstrip().endswith("done"), last
    assert any(re.search(r"about \d+ s left", line) for line in frames), frames  # the estimate while it ran


def _two_videos(folder: Path) -> Path:
    folder.mkdir()
    for seed in (1, 2):
        write_event_video(folder / f"events_{seed}.mp4", duration_s=4.0, seed=seed, size=(480, 272))
    return folder


def test_log_lines_when_not_on_a_terminal_and_none_when_quiet(tmp_path: Path) -> None:
    inputs = _two_videos(tmp_path / "in")
    logged = run_cli("run", "--input", str(inputs), "--output", str(tmp_path / "out"), "--progress-every", "0.2",
                     "--json")  # fmt: skip
    assert logged.returncode == 0, logged.stderr[-3000:]
    lines = [line for line in logged.stderr.splitlines() if "avcurate progress:" in line]
    assert len(lines) >= 2 and not ANSI.search(logged.stderr), logged.stderr
    summary = json.loads(logged.stdout)
    assert "2/2 sources" in lines[-1] and f"kept {summary['clips_kept']}" in lines[-1], lines[-1]
    assert "failed 0" in lines[-1] and "real time" in lines[-1]
    quiet = run_cli("run", "--input", str(inputs), "--output", str(tmp_path / "quiet"), "--progress-every", "0.2",
                    "--quiet")  # fmt: skip
    assert quiet.returncode == 0, quiet.stderr[-3000:]
    assert "avcurate progress" not in quiet.stderr and "curating" not in quiet.stderr


@pytest.mark.parametrize("runner", ["dask"])
def test_other_runners_count_the_same_numbers_as_beam_metrics(tmp_path: Path, runner: str) -> None:
    """No live display off the local runner: the counters come back through Beam's metrics instead."""
    inputs = _two_videos(tmp_path / "in")
    done = run_cli("run", "--input", str(inputs), "--output", str(tmp_path / "out"), "--runner", runner,
                   "--workers", "1", "--json", "--progress-every", "0.2")  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert "avcurate progress:" not in done.stderr
    summary = json.loads(done.stdout)
    counters = summary["counters"]
    assert counters["inputs"] == 2 and counters["clips_kept"] == summary["clips_kept"]
    assert counters["media_ms"] == pytest.approx(summary["media_seconds"] * 1000, abs=20)
    assert counters["stage_cpu_us:decode"] > 0 and counters["stage_wall_us:encode"] > 0
