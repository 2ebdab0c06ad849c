"""Cutting and encoding through `process_source`: shot cuts, the maximum length, short pieces, the MP4s."""

from __future__ import annotations

import dataclasses
import subprocess
from pathlib import Path

import av
import numpy as np
import pytest

import skimage.data

from avcurate.clips import END, MAX_LENGTH
from avcurate.shots import SHOT
from avcurate.config import SHOT_DETECTORS, Config, ShotConfig
from avcurate.model import KEPT, Source
from avcurate.process import process_source

KEEP_ALL = Config.from_dict({"filters": [], "clips": {"min_s": 1.0, "max_s": 5.0}})


@pytest.fixture(scope="module")
def two_scenes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """7 s of testsrc2, then a hard cut to 4 s of cellular automaton, then 0.6 s of smptebars, with a tone."""
    path = tmp_path_factory.mktemp("media") / "scenes.mp4"
    subprocess.run(
        ["ffmpeg", "-v", "error", "-y",
         "-f", "lavfi", "-i", "testsrc2=s=320x240:r=25:d=7",
         "-t", "4", "-f", "lavfi", "-i", "cellauto=s=320x240:r=25:rule=110:seed=7,format=yuv420p",
         "-f", "lavfi", "-i", "smptebars=s=320x240:r=25:d=0.6",
         "-f", "lavfi", "-i", "sine=f=300:d=11.6:sample_rate=48000",
         "-filter_complex", "[0:v][1:v][2:v]concat=n=3:v=1:a=0[v]", "-map", "[v]", "-map", "3:a",
         "-c:v", "libx264", "-preset", "ultrafast", "-c:a", "aac", str(path)],
        check=True,
    )
    return path


@pytest.fixture(scope="module")
def photo_shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """7 s of testsrc2, a hard cut to 4 s of a steady pan over a real photograph, then 0.6 s of smptebars."""
    path = tmp_path_factory.mktemp("media") / "photo_shots.mp4"
    pan = "scale=640:480,fps=25,crop=320:240:x='t*50':y='t*25'"
    subprocess.run(
        ["ffmpeg", "-v", "error", "-y",
         "-f", "lavfi", "-i", "testsrc2=s=320x240:r=25:d=7",
         "-loop", "1", "-t", "4", "-i", str(Path(skimage.data.__file__).parent / "astronaut.png"),
         "-f", "lavfi", "-i", "smptebars=s=320x240:r=25:d=0.6",
         "-f", "lavfi", "-i", "sine=f=300:d=11.6:sample_rate=48000",
         "-filter_complex", f"[1:v]{pan},format=yuv420p,setsar=1[p];[0:v][p][2:v]concat=n=3:v=1:a=0[v]",
         "-map", "[v]", "-map", "3:a", "-c:v", "libx264", "-preset", "ultrafast", "-c:a", "aac", str(path)],
        check=True,
    )
    return path


@pytest.mark.parametrize("detector", SHOT_DETECTORS)
def test_cuts_at_shots_and_max_length_and_drops_short_pieces(photo_shots: Path, tmp_path: Path, detector: str) -> None:
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    cfg = dataclasses.replace(KEEP_ALL, shots=ShotConfig(detector=detector))
    result = process_source(Source.from_uri(str(photo_shots)), cfg, str(tmp_path / "staging"), str(scratch))
    spans = [(c.start_s, c.end_s, c.end_reason) for c in result.clips]
    assert spans == [(0.0, 5.0, MAX_LENGTH), (5.0, 7.0, SHOT), (7.0, 11.0, SHOT)]
    assert result.note is not None and "1 piece(s) shorter than 1 s dropped" in result.note  # the 0.6 s of bars
    assert all(c.status == KEPT and c.staged_path for c in result.clips)
    # Keys are the source id and the start frame: stable, unique, tar-safe.
    assert [c.key.split("-")[1] for c in result.clips] == ["00000", "00125", "00175"]
    # The index says what the detector scored at each cut, and nothing where no cut closed the clip.
    assert result.clips[0].cut_score is None
    assert all(c.cut_score is not None and c.cut_score > 0 for c in result.clips[1:])


def test_each_clip_is_an_mp4_at_the_targets_starting_at_zero(photo_shots: Path, tmp_path: Path) -> None:
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    result = process_source(Source.from_uri(str(photo_shots)), KEEP_ALL, str(tmp_path / "staging"), str(scratch))
    clip = result.clips[1]
    with av.open(clip.staged_path) as c:
        video, audio = c.streams.video[0], c.streams.audio[0]
        assert (video.codec_context.name, audio.codec_context.name) == ("h264", "aac")
        assert (video.codec_context.width, video.codec_context.height) == (320, 240)  # never upscaled
        assert (audio.rate, audio.channels) == (16000, 1)
        frames = list(c.decode(video=0))
    assert len(frames) == clip.n_frames == 50
    assert frames[0].time == pytest.approx(0.0, abs=1e-3)
    assert list(scratch.iterdir()) == [scratch / "audio.f32"]  # per-clip video encodes are cleaned up
    # Deterministic: the same source gives the same bytes.
    scratch2 = tmp_path / "scratch2"
    scratch2.mkdir()
    again = process_source(Source.from_uri(str(photo_shots)), KEEP_ALL, str(tmp_path / "staging2"), str(scratch2))
    assert Path(again.clips[1].staged_path).read_bytes() == Path(clip.staged_path).read_bytes()


def test_scores_describe_the_signal(photo_shots: Path, tmp_path: Path) -> None:
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    result = process_source(Source.from_uri(str(photo_shots)), KEEP_ALL, str(tmp_path / "staging"), str(scratch))
    scores = result.clips[0].scores
    assert -25 < scores.loudness_dbfs < -15  # lavfi's sine is 1/8 full scale: -21 dBFS RMS
    assert scores.silence_ratio == 0.0 and scores.clipping_ratio == 0.0
    assert scores.motion_score > 0.002 and scores.black_ratio == 0.0
    assert np.isfinite(scores.av_offset_ms) and 0.0 <= scores.sync_confidence <= 1.0
    assert END not in {c.end_reason for c in result.clips}  # the source ended in the dropped piece


def test_a_damaged_source_gives_what_decodes_and_says_so(two_scenes: Path, tmp_path: Path) -> None:
    damaged = tmp_path / "damaged.mp4"
    data = bytearray(two_scenes.read_bytes())
    # This pattern (on the seeded fixture) makes H.264 fail with EPERM as well as AVERROR_INVALIDDATA.
    rng = np.random.default_rng(0)
    for at in rng.integers(len(data) // 5, len(data) - 4096, size=25):
        data[at : at + 2000] = rng.integers(0, 256, size=2000, dtype=np.uint8).tobytes()
    damaged.write_bytes(bytes(data))
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    result = process_source(Source.from_uri(str(damaged)), KEEP_ALL, str(tmp_path / "staging"), str(scratch))
    assert result.clips and "corrupt packet(s) skipped" in (result.note or "")
