"""The demo set: every file is there and really has the property it is meant to exercise."""

from __future__ import annotations

import json
import os
import stat
import subprocess
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest

from avcurate.model import FAILED, KEPT, REJECTED
from avcurate.sample import LATE_AUDIO_S, ODD_NAME, SampleSet, main

SHOTS = {"talk": 3, "street": 3, "nature_vp9": 3, "odd_name": 3, "late_audio": 2, "rotated": 2, "vfr": 3}
CUT_DISTANCE = 0.4  # the pipeline's default shot threshold


def ffprobe(path: Path, *entries: str) -> dict[str, Any]:
    done = subprocess.run(
        ["ffprobe", "-v", "error", "-of", "json", *entries, str(path)], capture_output=True, text=True, check=True
    )
    return json.loads(done.stdout)


def streams(path: Path) -> dict[str, dict[str, Any]]:
    found = ffprobe(path, "-show_streams")["streams"]
    return {s["codec_type"]: s for s in found}


def yuv_frames(path: Path) -> list[list[np.ndarray]]:
    """The Y, U and V planes of each frame as decoded (no conversion: all the sample videos are 4:2:0)."""
    with av.open(str(path)) as container:
        return [
            [np.frombuffer(p, np.uint8).reshape(p.height, p.line_size)[:, : p.width] for p in f.planes]
            for f in container.decode(video=0)
        ]


def audio_samples(path: Path) -> np.ndarray:
    with av.open(str(path)) as container:
        return np.concatenate([f.to_ndarray().reshape(-1) for f in container.decode(audio=0)])


def hist_distance(a: list[np.ndarray], b: list[np.ndarray]) -> float:
    """Half the L1 distance of the normalised Y, U and V histograms, averaged over planes: 0..1."""
    total = 0.0
    for plane_a, plane_b in zip(a, b):
        ha = np.bincount((plane_a >> 3).ravel(), minlength=32)
        hb = np.bincount((plane_b >> 3).ravel(), minlength=32)
        total += 0.5 * np.abs(ha - hb).sum() / plane_a.size
    return total / len(a)


def test_every_file_exists_with_an_expectation(sample_set: SampleSet) -> None:
    keys = [f.key for f in sample_set.files]
    assert len(keys) == len(set(keys))
    for f in sample_set.files:
        assert os.path.lexists(f.path), f.key
        assert f.path.parent == sample_set.folder
        assert f.expect in (KEPT, REJECTED, FAILED)
        assert (f.error_type is not None) == (f.expect == FAILED), f.key
    assert len(sample_set.good) >= 7 and sample_set.rejected and len(sample_set.broken) == 7
    assert sample_set["odd_name"].name == ODD_NAME
    assert sample_set["event_shift"].expect == KEPT


def test_good_and_rejected_files_have_both_streams_and_their_length(sample_set: SampleSet) -> None:
    for f in sample_set.good + sample_set.rejected:
        found = streams(f.path)
        assert set(found) == {"video", "audio"}, f.key
        duration = float(ffprobe(f.path, "-show_format")["format"]["duration"])
        assert abs(duration - f.duration_s) < 0.1, f.key
        assert 8.0 <= duration <= 25.0


def test_multi_shot_videos_have_their_cuts_and_flashes_are_not_cuts(sample_set: SampleSet) -> None:
    for key, shots in SHOTS.items():
        frames = yuv_frames(sample_set[key].path)
        cuts = sum(hist_distance(a, b) > CUT_DISTANCE for a, b in zip(frames, frames[1:]))
        assert cuts == shots - 1, key


def test_codecs_rates_and_layouts_vary(sample_set: SampleSet) -> None:
    talk = streams(sample_set["talk"].path)
    assert (talk["video"]["codec_name"], talk["audio"]["codec_name"]) == ("h264", "aac")
    assert (talk["audio"]["sample_rate"], talk["audio"]["channels"]) == ("44100", 1)
    street = streams(sample_set["street"].path)
    assert street["video"]["r_frame_rate"] == "30/1"
    assert (street["video"]["width"], street["video"]["height"]) == (480, 270)
    assert (street["audio"]["sample_rate"], street["audio"]["channels"]) == ("48000", 2)
    nature = sample_set["nature_vp9"].path
    assert nature.suffix == ".mkv"
    assert {s["codec_name"] for s in streams(nature).values()} == {"vp9", "opus"}


def test_late_audio_starts_a_second_after_the_video(sample_set: SampleSet) -> None:
    found = streams(sample_set["late_audio"].path)
    assert float(found["video"]["start_time"]) == 0.0
    # AAC's 1024 priming samples (23 ms at 44.1 kHz) sit just before the first real sample.
    assert LATE_AUDIO_S - 0.03 <= float(found["audio"]["start_time"]) <= LATE_AUDIO_S + 0.01


def test_rotated_video_carries_a_portrait_display_matrix(sample_set: SampleSet) -> None:
    path = sample_set["rotated"].path
    video = streams(path)["video"]
    assert (video["width"], video["height"]) == (480, 270)
    rotations = [sd.get("rotation") for sd in video.get("side_data_list", [])]
    assert rotations == [-90]
    with av.open(str(path)) as container:
        assert next(container.decode(video=0)).rotation == -90


def test_vfr_video_has_varying_frame_durations(sample_set: SampleSet) -> None:
    path = sample_set["vfr"].path
    packets = ffprobe(path, "-select_streams", "v", "-show_entries", "packet=pts_time")["packets"]
    pts = np.sort([float(p["pts_time"]) for p in packets])
    durations = set(np.round(np.diff(pts), 4))
    assert {0.0333, 0.0667, 0.0417} <= durations
    video = streams(path)["video"]
    assert video["avg_frame_rate"] != video["r_frame_rate"]


def test_black_silent_video_is_black_and_quiet(sample_set: SampleSet) -> None:
    path = sample_set["black_silent"].path
    with av.open(str(path)) as container:
        luma = [f.to_ndarray(format="gray").mean() / 255.0 for f in container.decode(video=0)]
    assert max(luma) < 0.07
    rms = float(np.sqrt(np.mean(np.square(audio_samples(path)))))
    assert 20 * np.log10(rms) < -60.0


def test_unreadable_files_fail_to_open(sample_set: SampleSet) -> None:
    for key in ("empty", "truncated", "random_bytes"):
        path = sample_set[key].path
        with pytest.raises(av.error.FFmpegError):
            av.open(str(path)).close()
        assert subprocess.run(["ffprobe", "-v", "error", str(path)], capture_output=True).returncode != 0, key
    assert sample_set["empty"].path.stat().st_size == 0


def test_single_stream_files_lack_the_other_stream(sample_set: SampleSet) -> None:
    with av.open(str(sample_set["audio_only"].path)) as container:
        assert (len(container.streams.video), len(container.streams.audio)) == (0, 1)
    with av.open(str(sample_set["video_only"].path)) as container:
        assert (len(container.streams.video), len(container.streams.audio)) == (1, 0)


def test_unsupported_codec_has_no_decoder(sample_set: SampleSet) -> None:
    path = sample_set["unsupported_codec"].path
    video = streams(path)["video"]
    assert video.get("codec_name", "unknown") == "unknown"  # ffprobe leaves the name out when it has none
    assert video["codec_tag_string"] == "ZZZZ"
    with av.open(str(path)) as container:
        assert container.streams.video[0].codec_context is None
        with pytest.raises(av.error.FFmpegError):
            next(container.decode(video=0))


def test_hang_is_a_fifo(sample_set: SampleSet) -> None:
    # Never opened here: with no writer, opening it for reading would block for ever.
    assert stat.S_ISFIFO(os.lstat(sample_set["hang"].path).st_mode)


def test_generation_is_deterministic_and_main_reports_every_file(
    sample_set: SampleSet, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    main([str(tmp_path), "--seed", "0"])
    printed = capsys.readouterr().out
    differing = set()
    for f in sample_set.files:
        assert repr(f.name) in printed
        again = tmp_path / f.name
        if f.key != "hang" and again.read_bytes() != f.path.read_bytes():
            differing.add(f.key)
    assert not differing
