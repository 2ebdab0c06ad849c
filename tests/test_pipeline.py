"""The whole Beam pipeline on the demo's sample set (good and broken files), run as a user runs it."""

from __future__ import annotations

import json
import resource
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch
import webdataset as wds

from avcurate.filters import reason_name
from avcurate.loader import AVClipDataset
from avcurate.model import FAILED, KEPT
from avcurate.sample import SampleSet
from avcurate.scorers.base import ClipSignals
from avcurate.scorers.sync import EnvelopeSyncScorer
from avcurate.schemas import validate_index, validate_ledger, validate_sample_metadata
from runs import DEMO_CONFIG as CONFIG
from runs import assert_same_outputs, curate_demo, run_cli



@pytest.fixture(scope="module")
def runs(sample_set: SampleSet, demo_run: tuple[Path, dict], tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, Path]:
    first, summary = demo_run
    second = tmp_path_factory.mktemp("run2") / "out"
    curate_demo(sample_set.folder, second)
    return first, summary, second


def test_every_input_is_accounted_for(sample_set: SampleSet, runs) -> None:
    output, summary, _ = runs
    ledger = pd.read_parquet(output / "ledger.parquet")
    assert len(ledger) == len(sample_set.files) == summary["inputs"]
    counts = Counter(ledger["status"])
    assert counts["kept"] + counts["rejected"] + counts["failed"] == len(sample_set.files)
    by_name = {Path(uri).name: row for uri, row in zip(ledger["uri"], ledger.to_dict("records"))}
    for sample in sample_set.files:
        row = by_name[sample.name]
        assert row["status"] == sample.expect, (sample.key, row["status"], row["error"], row["note"])
        if sample.expect == FAILED:
            assert row["error"], sample.key  # a clear message, not just a status
            assert row["error_type"] == sample.error_type, (sample.key, row["error_type"], row["error"])
            if sample.error_type == "timeout":  # the advice names the setting that stopped it
                assert "raise decode.probe_timeout_s" in row["error"] and "stall_timeout_s" not in row["error"], row["error"]
        else:
            assert pd.isna(row["error"]) and row["n_clips"] >= 1


def test_clips_kept_and_rejected_match_the_metrics(runs) -> None:
    output, summary, _ = runs
    index = pd.read_parquet(output / "index.parquet")
    counters = summary["counters"]
    assert counters["inputs"] == summary["inputs"]
    assert counters.get("clips_kept", 0) == (index["status"] == KEPT).sum() > 0
    assert counters.get("clips_rejected", 0) == (index["status"] != KEPT).sum() > 0
    reasons = Counter(reason_name(r) for rs in index["reasons"] for r in rs)
    assert {k: v for k, v in counters.items() if k.startswith("rejected_")} == {f"rejected_{k}": v for k, v in reasons.items()}
    rejected = index[index["status"] != KEPT]
    assert all(len(r) > 0 for r in rejected["reasons"])  # every rejected clip says why
    assert rejected["shard"].isna().all() and index[index["status"] == KEPT]["shard"].notna().all()


def test_shards_open_with_plain_webdataset_and_match_the_index(runs) -> None:
    output, _, _ = runs
    index = pd.read_parquet(output / "index.parquet")
    validate_index(pq.read_table(output / "index.parquet"))
    validate_ledger(pq.read_table(output / "ledger.parquet"))
    shards = sorted((output / "shards").glob("*.tar"))
    assert shards and not list((output / "shards").glob(".*"))  # no temporary files left behind
    assert not (output / "_staging").exists()
    seen = {}
    for shard in shards:
        for sample in wds.WebDataset(str(shard), shardshuffle=False):
            meta = json.loads(sample["json"])
            validate_sample_metadata(meta)
            assert sample["__key__"] == meta["key"] and meta["shard"] == shard.name
            assert sample["mp4"][4:8] == b"ftyp"
            seen[meta["key"]] = shard.name
    kept = index[index["status"] == KEPT]
    assert seen == dict(zip(kept["key"], kept["shard"]))


def test_rerun_is_byte_identical(runs) -> None:
    first, _, second = runs
    assert_same_outputs(first, second)


def _flash_frames(video: torch.Tensor) -> set[int]:
    """Frames where the sample set's flash box (the top-left ninth, see avcurate/sample.py) lights up."""
    _, _, h, w = video.shape
    box = video[:, :, h // 12 + 2 : h // 12 + h // 3 - 2, w // 12 + 2 : w // 12 + w // 3 - 2].float().mean(dim=(1, 2, 3))
    return set((np.flatnonzero(np.diff(box.numpy()) > 40) + 1).tolist())


def _beep_frames(audio: torch.Tensor, sample_rate: int, fps: float) -> set[int]:
    """Frames whose span of audio starts an 880 Hz beep (its level there, not the speech or the noise bed's)."""
    per_frame = round(sample_rate / fps)
    frames = audio.mean(dim=0).numpy()[: audio.shape[1] // per_frame * per_frame].reshape(-1, per_frame)
    tone = np.exp(-2j * np.pi * 880 * np.arange(per_frame) / sample_rate)
    loud = np.abs(frames @ tone) / per_frame > 0.1  # a beep gives 0.25, the rest stays under 0.02
    return set((np.flatnonzero(loud[1:] & ~loud[:-1]) + 1).tolist())


def _assert_flashes_meet_beeps(sample: dict) -> int:
    """Each flash has its beep within a frame and each beep its flash; returns the events paired. An event on a
    window's first or last frame is left out: its onset cannot be told there."""
    frames = sample["video"].shape[0]
    flashes, beeps = _flash_frames(sample["video"]), _beep_frames(sample["audio"], sample["sample_rate"], sample["fps"])
    inside = range(2, frames - 1)
    for flash in flashes & set(inside):
        assert {flash - 1, flash, flash + 1} & beeps, (sample["key"], sample["start_s"], sorted(flashes), sorted(beeps))
    for beep in beeps & set(inside):
        assert {beep - 1, beep, beep + 1} & flashes, (sample["key"], sample["start_s"], sorted(flashes), sorted(beeps))
    return len(flashes & set(inside))


def test_training_loader_reads_the_output_aligned(runs) -> None:
    """The good sample videos flash and beep at the same instants: in the loaded tensors they still coincide."""
    output, _, _ = runs
    shards = sorted(str(p) for p in (output / "shards").glob("*.tar"))
    samples = list(AVClipDataset(shards))
    index = pd.read_parquet(output / "index.parquet")
    assert len(samples) == (index["status"] == KEPT).sum()
    paired = 0
    for sample in samples:
        frames = sample["video"].shape[0]
        meta = sample["meta"]
        assert sample["video"].dtype == torch.uint8
        assert sample["video"].shape[1:] == (3, meta["height"], meta["width"]) and 256 in sample["video"].shape
        assert frames == sample["meta"]["n_frames"]
        assert sample["audio"].shape == (1, round(frames / 25 * 16000))
        paired += _assert_flashes_meet_beeps(sample)
    assert paired >= 50  # most clips carry several events
    dataset = AVClipDataset(shards, clip_seconds=1.0, seed=3)
    paired = 0
    for epoch in range(2):  # random windows, seeking into the clips
        dataset.set_epoch(epoch)
        for clip in dataset:
            assert clip["video"].shape[0] == 25 and clip["audio"].shape[1] == 16000
            paired += _assert_flashes_meet_beeps(clip)
    assert paired >= 20


def test_known_offset_source_is_corrected(sample_set: SampleSet, runs) -> None:
    shifted = [s for s in sample_set.files if s.key == "event_shift"]
    if not shifted:
        pytest.fail("the sample set must hold a source with a known audio offset")
    output, _, _ = runs
    ledger = pd.read_parquet(output / "ledger.parquet")
    row = ledger[ledger["uri"].map(lambda u: Path(u).name) == shifted[0].name].iloc[0]
    assert abs(row["sync_correction_ms"] - 120.0) <= 40.0  # one video frame
    index = pd.read_parquet(output / "index.parquet")
    clips = index[index["source_id"] == row["source_id"]]
    assert (clips["sync_correction_ms"] == row["sync_correction_ms"]).all()
    # The shard's clips really carry shifted audio: measured again, they are in sync.
    shards = sorted(str(p) for p in (output / "shards").glob("*.tar"))
    corrected = [s for s in AVClipDataset(shards, shuffle_shards=False) if s["key"] in set(clips["key"])]
    assert corrected
    for sample in corrected:
        gray = sample["video"].float().mean(dim=1).numpy() / 255.0
        signals = ClipSignals(audio=sample["audio"].numpy(), sample_rate=16000, gray=gray, fps=25.0)
        estimate = EnvelopeSyncScorer().estimate(signals)
        assert estimate.confidence > 0.5 and abs(estimate.offset_ms) <= 40.0, estimate


def test_inspect_summarises_an_output(runs) -> None:
    output, summary, _ = runs
    done = run_cli("inspect", str(output), "--json")
    assert done.returncode == 0, done.stderr
    again = json.loads(done.stdout)
    assert {k: again[k] for k in ("inputs", "clips_kept", "clips_rejected", "inputs_failed", "shards")} == {
        k: summary[k] for k in ("inputs", "clips_kept", "clips_rejected", "inputs_failed", "shards")
    }
    text = run_cli("inspect", str(output)).stdout
    assert "clips rejected" in text and "inputs failed" in text


def test_an_existing_output_is_not_overwritten_by_accident(sample_set: SampleSet, runs) -> None:
    output, _, _ = runs
    done = run_cli("run", "--input", str(sample_set.folder), "--output", str(output))
    assert done.returncode == 2 and "--overwrite" in done.stderr


def test_a_portable_runner_writes_the_same_bytes(sample_set: SampleSet, runs, tmp_path: Path) -> None:
    """The same pipeline through Beam's job API on Prism (a portable runner, as Flink, Spark and Dataflow are),
    with the SDK harness in this process: every output file equals the local runner's, byte for byte."""
    prism = Path(sys.executable).parent / "prism"
    assert prism.is_file(), f"no Prism runner at {prism}: run `bash scripts/setup.sh --prism` (needs Go)"
    first, _, _ = runs
    output = tmp_path / "prism"
    done = run_cli("run", "--config", str(CONFIG), "--input", str(sample_set.folder), "--output", str(output),
                   "--runner", "PrismRunner", f"--prism_location={prism}", "--environment_type=LOOPBACK", "--json")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "pipeline done" in done.stderr  # Prism itself ran the job
    assert_same_outputs(first, output)


def test_an_unwritable_output_is_one_clear_line_and_exit_2(sample_set: SampleSet, tmp_path: Path) -> None:
    (tmp_path / "a-file").write_bytes(b"")
    done = run_cli("run", "--input", str(sample_set.folder), "--output", str(tmp_path / "a-file" / "out"))
    assert done.returncode == 2, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines() == [done.stderr.strip()]  # one line
    assert f"cannot write to --output {tmp_path / 'a-file' / 'out'}" in done.stderr


def test_a_run_where_every_input_failed_exits_non_zero(sample_set: SampleSet, tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    broken.mkdir()
    for sample in sample_set.files:
        if sample.key in ("truncated", "random_bytes"):
            (broken / sample.name).write_bytes(sample.path.read_bytes())
    done = run_cli("run", "--input", str(broken), "--output", str(tmp_path / "out"))
    assert done.returncode == 1, done.stderr[-3000:]
    assert "every input failed (2 of 2)" in done.stderr
    assert "inputs failed:    2" in done.stdout


def test_a_full_scratch_disk_fails_the_run_not_the_inputs(sample_set: SampleSet, tmp_path: Path) -> None:
    """A file size limit (ulimit -f) makes every write past 64 KiB fail (EFBIG), as a full disk fails them: the
    run stops with a message naming the storage and the fix, instead of blaming each input as `internal`."""
    good = tmp_path / "good"
    good.mkdir()
    kept = next(s for s in sample_set.files if s.expect == KEPT)
    (good / kept.name).write_bytes(kept.path.read_bytes())
    limit = 64 * 1024

    def small_files() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    done = subprocess.run([sys.executable, "-m", "avcurate.cli", "run", "--input", str(good), "--output",
                           str(tmp_path / "out"), "--workers", "1"], capture_output=True, text=True, timeout=600,
                          preexec_fn=small_files)  # fmt: skip
    assert done.returncode == 1, done.stderr[-3000:]
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("avcurate: the run failed: writing failed: [Errno 27] File too large"), last
    assert "TMPDIR" in last and "--output" in last and "tried 3 times" in last
    assert not (tmp_path / "out" / "ledger.parquet").exists()
