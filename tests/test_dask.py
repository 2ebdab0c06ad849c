"""The whole curation pipeline on a Dask cluster (a scheduler and worker processes this test starts), through
Beam's DaskRunner with our translations (avcurate/beam/dask.py): the same bytes as the local runner, also when
a task fails and a worker process dies mid-run."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterator

import pandas as pd
import pytest
from distributed import LocalCluster

from avcurate.faults import ENV as FAULTS
from avcurate.sample import SampleSet
from avcurate.timings import is_time_counter
from runs import DEMO_CONFIG, assert_same_outputs, run_cli

pytestmark = pytest.mark.slow


@pytest.fixture
def cluster(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalCluster]:
    """Three worker processes of one thread each; the test's faults (if any) in their environment."""
    faults = getattr(request, "param", None)
    if faults:
        monkeypatch.setenv(FAULTS, json.dumps(faults))  # worker processes start with this environment
    with LocalCluster(n_workers=3, threads_per_worker=1, processes=True, dashboard_address=":0") as started:
        yield started


def curate_on(cluster: LocalCluster, sample_set: SampleSet, output: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k != FAULTS}  # the launcher itself runs cleanly
    done = run_cli("run", "--config", str(DEMO_CONFIG), "--input", str(sample_set.folder), "--output", str(output),
                   "--runner", "dask", "--dask-address", cluster.scheduler_address, "--json", env=env)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


def test_a_dask_cluster_writes_the_local_runners_bytes(
    cluster: LocalCluster, sample_set: SampleSet, demo_run: tuple[Path, dict], tmp_path: Path
) -> None:
    summary = curate_on(cluster, sample_set, tmp_path / "out")
    assert_same_outputs(demo_run[0], tmp_path / "out")
    # Beam's counters come back from the workers, once per bundle that succeeded.
    # Stage times differ run to run; each stage was still timed on the workers.
    def counts(counters: dict[str, int]) -> dict[str, int]:
        return {name: value for name, value in counters.items() if not is_time_counter(name)}

    local = demo_run[1]["counters"]
    assert counts(summary["counters"]) == counts(local)
    for stage in ("probe", "decode", "encode", "write:shards"):
        assert summary["counters"][f"stage_cpu_us:{stage}"] > 0, stage


FIRED = Path("/tmp") / f"avcurate-dask-faults-{os.getpid()}"


@pytest.mark.parametrize(
    "cluster",
    [[
        # A task fails on its first attempt: the second source a worker takes raises; Dask retries the task.
        {"at": "curate", "do": "raise", "after": 2, "once": str(FIRED) + "-raise"},
        # A worker process dies mid-run: the third source a worker takes kills it; Dask reruns its tasks.
        {"at": "curate", "do": "exit", "after": 3, "once": str(FIRED) + "-exit"},
        # A worker process dies mid-shard, with a half-written tar under a temporary name.
        {"at": "shard", "do": "exit", "after": 1, "once": str(FIRED) + "-shard"},
    ]],
    indirect=True,
)
def test_failed_tasks_and_lost_workers_leave_no_duplicate_partial_or_lost_output(
    cluster: LocalCluster, sample_set: SampleSet, demo_run: tuple[Path, dict], tmp_path: Path
) -> None:
    for kind in ("raise", "exit", "shard"):
        Path(f"{FIRED}-{kind}").unlink(missing_ok=True)
    try:
        summary = curate_on(cluster, sample_set, tmp_path / "out")
        for kind in ("raise", "exit", "shard"):
            assert Path(f"{FIRED}-{kind}").exists(), f"the {kind} fault did not fire"
    finally:
        for kind in ("raise", "exit", "shard"):
            Path(f"{FIRED}-{kind}").unlink(missing_ok=True)
    output = tmp_path / "out"
    ledger = pd.read_parquet(output / "ledger.parquet")
    index = pd.read_parquet(output / "index.parquet")
    assert len(ledger) == len(sample_set.files) and ledger["source_id"].is_unique  # no input lost or doubled
    assert index["key"].is_unique  # no clip twice
    assert_same_outputs(demo_run[0], output)  # and no partial shard: the same files, byte for byte
    assert summary["counters"]["inputs"] == len(sample_set.files)  # a retried bundle counts once
