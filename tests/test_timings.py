"""Where a run's time goes: stages timed as they run, summed by Beam counters, kept in run.json."""

from __future__ import annotations

import json
import resource
import time
from pathlib import Path

import jsonschema

from avcurate import timings
from avcurate.config import Config
from avcurate.process import probe_source
from avcurate.sandbox import Sandbox
from avcurate.synth import write_event_video
from runs import DEMO_CONFIG, REPO, run_cli


def _busy(seconds: float) -> None:
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass


def test_a_nested_stage_pauses_the_one_around_it() -> None:
    timings.start_call()
    with timings.stage("decode"):
        _busy(0.15)
        with timings.stage("cut"):
            _busy(0.3)
        _busy(0.15)
    spent = timings.call_totals()
    assert abs(spent["decode"][0] - 0.3) < 0.08 and abs(spent["cut"][0] - 0.3) < 0.08, spent
    assert spent["cut"][1] >= spent["cut"][0] * 0.9  # wall seconds too


def test_a_sandboxed_call_reports_its_stages(tmp_path: Path) -> None:
    video = write_event_video(tmp_path / "v.mp4", duration_s=2.0)
    sandbox = Sandbox(2048)
    try:
        assert sandbox.call(probe_source, str(video), deadline=30)["has_video"]
    finally:
        sandbox.close()
    assert sandbox.last_times["probe"][0] > 0 and sandbox.last_times["probe"][1] > 0


def test_run_json_keeps_the_config_counters_and_stage_times(tmp_path: Path) -> None:
    inputs = tmp_path / "in"
    inputs.mkdir()
    for seed in (1, 2):
        write_event_video(inputs / f"events_{seed}.mp4", duration_s=15.0, seed=seed, size=(480, 272))
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    done = run_cli("run", "--config", str(DEMO_CONFIG), "--input", str(inputs), "--output", str(tmp_path / "out"),
                   "--json", "--quiet")  # fmt: skip
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    assert done.returncode == 0, done.stderr[-3000:]
    record = json.loads((tmp_path / "out" / "run.json").read_text())
    jsonschema.validate(record, json.loads((REPO / "schemas" / "run.v1.json").read_text()))
    cfg = Config.load(DEMO_CONFIG)
    assert record["config"] == json.loads(json.dumps(cfg.to_dict())) and record["config_hash"] == cfg.hash
    assert Config.from_dict(record["config"]).hash == cfg.hash  # the record gives the run's config back
    summary = json.loads(done.stdout)
    assert record["counters"]["inputs"] == 2 and record["counters"]["clips_kept"] == summary["clips_kept"]
    stages = {row["stage"]: row for row in record["stages"]}
    for name in ("probe", "decode", "cut", "encode", "score:sharpness", "score:sync/envelope-xcorr", "filter", "stage",
                 "write:shards", "write:index", "write:ledger"):  # fmt: skip
        assert name in stages, sorted(stages)
    assert [row["stage"] for row in record["stages"]].index("decode") < [r["stage"] for r in record["stages"]].index("write:shards")
    assert stages["decode"]["cpu_s"] > 0.05 and stages["encode"]["cpu_s"] > 0.05
    # The stages account for a real share of the CPU the run used, and never for more than it used (the rest is
    # starting Python and Beam, listing, and the runner's own work).
    used = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    timed = sum(row["cpu_s"] for row in record["stages"])
    assert 0.25 * used < timed <= used, (timed, used)
