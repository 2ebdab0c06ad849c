"""A run killed (kill -9 of its whole process tree) and started again with the same command finishes the work,
decoding only what was not finished, and writes exactly what an uninterrupted run writes; incremental runs add
only new sources."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from avcurate.faults import ENV as FAULTS
from avcurate.sample import SampleSet
from runs import DEMO_CONFIG, assert_same_outputs, digests, run_cli

pytestmark = pytest.mark.slow


def command(inputs: Path, output: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "avcurate.cli", "run", "--config", str(DEMO_CONFIG), "--input", str(inputs),
            "--output", str(output), "--workers", "2", "--json", *extra]  # fmt: skip


def finished(output: Path) -> list[str]:
    done = output / "_staging" / "_done"
    return sorted(p.name for p in done.glob("*.json")) if done.is_dir() else []


def living(pgid: int) -> list[int]:
    """Processes of the group that still run (a killed child nobody reaped yet is a zombie: it runs nothing)."""
    alive = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            alive.append(int(stat.parent.name))
    return alive


def assert_whole_tree_gone(pgid: int) -> None:
    deadline = time.monotonic() + 10
    while living(pgid) and time.monotonic() < deadline:  # SIGKILL is delivered, not necessarily acted on yet
        time.sleep(0.05)
    assert living(pgid) == []  # no process of the run survived: the decoders went with it


def resume(inputs: Path, output: Path) -> dict:
    done = subprocess.run(command(inputs, output), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "resuming the unfinished run" in done.stderr
    return json.loads(done.stdout)


def test_a_run_killed_from_outside_mid_run_resumes_to_the_same_bytes(
    sample_set: SampleSet, demo_run: tuple[Path, dict], tmp_path: Path
) -> None:
    output = tmp_path / "out"
    run = subprocess.Popen(command(sample_set.folder, output), start_new_session=True, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.monotonic() + 300
    while len(finished(output)) < 4:  # some sources done, others on the decoders
        assert run.poll() is None and time.monotonic() < deadline, "the run ended before it could be killed"
        time.sleep(0.02)
    os.killpg(run.pid, signal.SIGKILL)
    run.wait()
    assert_whole_tree_gone(run.pid)
    done_before = finished(output)
    assert 4 <= len(done_before) < len(sample_set.files) and not (output / "index.parquet").exists()

    summary = resume(sample_set.folder, output)
    # Sources finished before the kill were loaded, not decoded again.
    assert summary["counters"]["resumed"] == len(done_before)
    assert summary["counters"]["inputs"] == len(sample_set.files)
    assert_same_outputs(demo_run[0], output)


@pytest.mark.parametrize(
    "point, after",
    [("decode", 60), ("shard", 1)],  # mid-source, in a decoder; mid-shard, after its first clip is in the tar
    ids=["mid-source", "mid-shard"],
)
def test_a_run_killed_at_a_chosen_point_resumes_to_the_same_bytes(
    sample_set: SampleSet, demo_run: tuple[Path, dict], tmp_path: Path, point: str, after: int
) -> None:
    output = tmp_path / "out"
    env = {**os.environ, FAULTS: json.dumps([{"at": point, "do": "kill-run", "after": after, "once": str(tmp_path / "fired")}])}
    killed = subprocess.run(command(sample_set.folder, output), env=env, start_new_session=True, capture_output=True,
                            text=True, timeout=600)  # fmt: skip
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert (tmp_path / "fired").exists()
    done_before = finished(output)
    if point == "shard":  # every source was finished; a shard was half-written under a temporary name
        assert len(done_before) == len(sample_set.files)
        assert [p.name for p in (output / "shards").iterdir() if ".tmp-" in p.name]
    else:
        assert len(done_before) < len(sample_set.files)

    summary = resume(sample_set.folder, output)
    assert summary["counters"].get("resumed", 0) == len(done_before)  # finished sources were not decoded again
    assert summary["counters"]["inputs"] == len(sample_set.files)
    assert_same_outputs(demo_run[0], output)


def test_a_run_killed_while_it_cleans_up_is_finished(
    sample_set: SampleSet, demo_run: tuple[Path, dict], tmp_path: Path
) -> None:
    """Killed after every output was written, while deleting its staging area: the run is finished (the same
    command is told so); the leftovers go with the next run into that folder."""
    output = tmp_path / "out"
    env = {**os.environ, FAULTS: json.dumps([{"at": "finished", "do": "kill-run"}])}
    killed = subprocess.run(command(sample_set.folder, output), env=env, start_new_session=True, capture_output=True,
                            timeout=600)  # fmt: skip
    assert killed.returncode == -signal.SIGKILL
    assert (output / "_staging" / "_done").is_dir()  # killed before the staging area went
    again = run_cli("run", "--config", str(DEMO_CONFIG), "--input", str(sample_set.folder), "--output", str(output))
    assert again.returncode == 2 and "already holds a run" in again.stderr
    done = subprocess.run(command(sample_set.folder, output, "--incremental"), capture_output=True, text=True,
                          timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout)["counters"].get("inputs", 0) == 0  # nothing new, nothing decoded
    assert_same_outputs(demo_run[0], output)  # the staging area's leftovers are gone


def test_an_unfinished_run_is_not_resumed_with_another_config(sample_set: SampleSet, tmp_path: Path) -> None:
    output = tmp_path / "out"
    env = {**os.environ, FAULTS: json.dumps([{"at": "shard", "do": "kill-run"}])}
    killed = subprocess.run(command(sample_set.folder, output), env=env, start_new_session=True, capture_output=True,
                            timeout=600)  # fmt: skip
    assert killed.returncode == -signal.SIGKILL
    other = tmp_path / "other.yaml"
    other.write_text(DEMO_CONFIG.read_text() + "\nclips: {min_s: 3.0}\n", encoding="utf-8")
    done = run_cli("run", "--config", str(other), "--input", str(sample_set.folder), "--output", str(output))
    assert done.returncode == 2
    assert "unfinished run of another command" in done.stderr and "--overwrite" in done.stderr


def test_an_incremental_run_adds_only_new_sources_after_the_existing_shards(
    sample_set: SampleSet, demo_run: tuple[Path, dict], tmp_path: Path
) -> None:
    everything = sample_set.folder
    first_half = tmp_path / "first"
    first_half.mkdir()
    names = sorted(p.name for p in everything.iterdir())
    for name in names[: len(names) // 2]:
        (first_half / name).symlink_to(everything / name)  # links: the set has a named pipe (a hanging input)
    output = tmp_path / "out"
    assert subprocess.run(command(first_half, output), capture_output=True, timeout=600).returncode == 0
    base = digests(output)
    base_shards = sorted(p.name for p in (output / "shards").glob("*.tar"))
    base_index = pd.read_parquet(output / "index.parquet")

    # The grown set: the first half's files (same paths) and the rest, as a second input.
    rest = tmp_path / "rest"
    rest.mkdir()
    for name in names[len(names) // 2 :]:
        (rest / name).symlink_to(everything / name)
    grown = [*command(first_half, output, "--incremental"), "--input", str(rest)]
    done = subprocess.run(grown, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout)
    assert summary["counters"]["inputs"] == len(names) - len(names) // 2  # only the new ones were curated

    after = digests(output)
    for name in base_shards:  # the base's shards are untouched...
        assert after[f"shards/{name}"] == base[f"shards/{name}"]
    new_shards = sorted(p.name for p in (output / "shards").glob("*.tar") if p.name not in base_shards)
    assert new_shards  # ...and the new clips are in new shards, numbered after them
    numbers = [int(name.split("-")[-1].split(".")[0]) for name in base_shards + new_shards]
    assert numbers == list(range(len(numbers)))
    ledger = pd.read_parquet(output / "ledger.parquet")
    assert len(ledger) == len(names) and ledger["source_id"].is_unique
    index = pd.read_parquet(output / "index.parquet")
    assert index["key"].is_unique
    kept_before = base_index.set_index("key")
    assert index.set_index("key").loc[kept_before.index].equals(kept_before)  # the base's rows, unchanged
    new_rows = index[~index["key"].isin(base_index["key"])]
    assert set(new_rows[new_rows["status"] == "kept"]["shard"]) == set(new_shards)
    assert not (output / "_staging").exists()

    # Again with the same inputs: nothing is new, nothing changes.
    again = subprocess.run(grown, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert json.loads(again.stdout)["counters"].get("inputs", 0) == 0
    assert digests(output) == after

    # Another config cannot be added to this dataset.
    other = tmp_path / "other.yaml"
    other.write_text(DEMO_CONFIG.read_text() + "\nclips: {min_s: 3.0}\n", encoding="utf-8")
    refused = run_cli("run", "--config", str(other), "--input", str(rest), "--output", str(output), "--incremental")
    assert refused.returncode == 2 and "another config" in refused.stderr
