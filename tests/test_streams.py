"""Real-world streams: audio that is missing for long stretches, timestamp resets, audio format and picture size
changes mid-stream. Each source is made with the ffmpeg CLI the way such files come about."""

from __future__ import annotations

import subprocess
from pathlib import Path

import av
import numpy as np
import pytest

from avcurate.config import Config, DecodeConfig
from avcurate.decode import AlignedDecoder, luma
from avcurate.model import REJECTED, Source
from avcurate.process import process_source

RATE = DecodeConfig().sample_rate
PER_FRAME = RATE // 25


def ffmpeg(*args: str | Path) -> None:
    subprocess.run(["ffmpeg", "-v", "error", "-y", *map(str, args)], check=True)


def decode(path: Path) -> tuple[AlignedDecoder, list[np.ndarray], np.ndarray, list[int]]:
    with av.open(str(path)) as container:
        decoder = AlignedDecoder(container, DecodeConfig())
        frames, audio, missing = [], [], []
        for frame in decoder:
            frames.append(luma(frame.video).copy())
            audio.append(frame.audio)
            missing.append(frame.audio_missing)
    return decoder, frames, np.concatenate(audio, axis=1), missing


def loud_seconds(audio: np.ndarray) -> str:
    """One character per second of audio: x where a tone plays, . where it is silent."""
    seconds = audio[0, : audio.shape[1] // RATE * RATE].reshape(-1, RATE)
    return "".join("x" if np.sqrt(np.mean(s**2)) > 0.05 else "." for s in seconds)


def dominant_hz(audio: np.ndarray) -> float:
    return float(np.argmax(np.abs(np.fft.rfft(audio))) * RATE / len(audio))


def video(path: Path, seconds: float, size: str = "160x120") -> Path:
    ffmpeg("-f", "lavfi", "-i", f"testsrc2=s={size}:r=25:d={seconds}", "-c:v", "libx264", "-preset", "ultrafast", path)
    return path


def tone(path: Path, seconds: float, hz: int = 440) -> Path:
    ffmpeg("-f", "lavfi", "-i", f"sine=f={hz}:d={seconds}:sample_rate=44100", "-c:a", "aac", path)
    return path


def audio_ends_early(tmp: Path) -> Path:  # a well-interleaved 45 s video whose audio stops at 5 s
    path = tmp / "ends.mp4"
    ffmpeg("-i", video(tmp / "v.mp4", 45), "-i", tone(tmp / "a.m4a", 5), "-c", "copy", path)
    return path


def audio_starts_late(tmp: Path) -> Path:  # audio from 35 s to 45 s: further behind than the interleave window
    path = tmp / "late.mp4"
    ffmpeg("-i", video(tmp / "v.mp4", 45), "-itsoffset", "35", "-i", tone(tmp / "a.m4a", 10), "-c", "copy", path)
    return path


def both_pause(tmp: Path) -> Path:  # 5 s, then nothing in either stream for 35 s, then 5 s more
    path = tmp / "pause.mkv"
    ffmpeg("-f", "lavfi", "-i", "testsrc2=s=160x120:r=25:d=10", "-f", "lavfi", "-i", "sine=f=440:d=10:sample_rate=44100",
           "-vf", "setpts='if(gte(T,5),PTS+35/TB,PTS)'", "-af", "asetpts='if(gte(T,5),PTS+35*SR,PTS)'",
           "-fps_mode", "passthrough", "-c:v", "libx264", "-preset", "ultrafast", "-c:a", "aac", path)
    return path


def video_starts_late(tmp: Path) -> Path:  # 80 s of audio, the video only from 70 s on
    path = tmp / "video_late.mp4"
    ffmpeg("-itsoffset", "70", "-i", video(tmp / "v.mp4", 10), "-i", tone(tmp / "a.m4a", 80), "-c", "copy", path)
    return path


@pytest.mark.parametrize(
    "make, n_frames, sound, missing_s",
    [
        (audio_ends_early, 1125, "x" * 5 + "." * 40, 40.0),
        (audio_starts_late, 1125, "." * 35 + "x" * 10, 35.0),
        (both_pause, 1125, "x" * 5 + "." * 35 + "x" * 5, 35.0),
        (video_starts_late, 250, "x" * 10, 0.0),
    ],
)
def test_missing_audio_becomes_silence_not_a_failure(tmp_path: Path, make, n_frames: int, sound: str, missing_s: float) -> None:
    decoder, frames, audio, missing = decode(make(tmp_path))
    assert len(frames) == n_frames and audio.shape[1] == n_frames * PER_FRAME
    assert loud_seconds(audio) == sound
    # Every frame says how much of its audio is silence standing in for the missing stream.
    assert sum(missing) == decoder.audio.missing
    assert abs(decoder.audio.missing / RATE - missing_s) < 0.1
    silent = np.array(missing) == PER_FRAME
    assert np.sum(silent != np.repeat([c == "." for c in sound], 25)) <= 2  # frames where the audio stops or starts


def test_audio_before_a_late_video_is_not_buffered_beyond_the_interleave_window(tmp_path: Path) -> None:
    with av.open(str(video_starts_late(tmp_path))) as container:
        decoder = AlignedDecoder(container, DecodeConfig())
        for _ in decoder:
            pass
    assert abs(decoder.audio_lead_s - 70.0) < 0.1


def test_audio_long_past_the_video_waits_on_disk_not_in_memory(tmp_path: Path) -> None:
    # 5 s of video, 150 s of sound: the audio after the video is never used, and memory must not hold it.
    path = tmp_path / "cover.mp4"
    ffmpeg("-i", video(tmp_path / "v.mp4", 5), "-i", tone(tmp_path / "a.m4a", 150), "-c", "copy", path)
    decoder, frames, audio, missing = decode(path)
    assert len(frames) == 125 and audio.shape[1] == 125 * PER_FRAME and sum(missing) == 0
    assert decoder.audio.peak_in_memory <= 61 * RATE  # the 60 s it keeps in memory (one more frame of slack)


def test_audio_spilled_during_a_long_video_pause_comes_back_in_order(tmp_path: Path) -> None:
    # Video 0-5 s and 95-100 s (a 90 s hole in the picture only), sound throughout: the held picture plays over
    # the sound of the hole, which waited on disk while no video came.
    path = tmp_path / "hole.mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc2=s=160x120:r=25:d=10", "-f", "lavfi", "-i",
           "sine=f=440:d=100:sample_rate=44100", "-vf", "setpts='if(gte(N,125),PTS+90/TB,PTS)'", "-fps_mode",
           "passthrough", "-c:v", "libx264", "-preset", "ultrafast", "-c:a", "aac", path)  # fmt: skip
    decoder, frames, audio, missing = decode(path)
    assert len(frames) == 2500 and sum(missing) == 0 and loud_seconds(audio) == "x" * 100
    assert 0 < decoder.audio.peak_in_memory <= 61 * RATE
    tone_per_second = [dominant_hz(audio[0, s * RATE : (s + 1) * RATE]) for s in range(100)]
    assert all(abs(hz - 440) < 2 for hz in tone_per_second)


def test_a_clip_without_audio_is_rejected_by_the_silence_rule_and_the_ledger_counts_the_gap(tmp_path: Path) -> None:
    source = audio_ends_early(tmp_path)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    result = process_source(Source.from_uri(str(source)), Config(), str(tmp_path / "staging"), str(scratch))
    assert result.error is None
    assert result.note is not None and "40.0 s of 45.0 s without audio (89%), filled with silence" in result.note
    first, *rest = sorted(result.clips, key=lambda c: c.start_s)
    assert first.scores.audio_missing == pytest.approx(0.5, abs=0.01)  # 5 s of sound in a 10 s clip
    for clip in rest:
        assert clip.scores.audio_missing == 1.0
        assert clip.status == REJECTED and any(r.startswith("silence_ratio:") for r in clip.reasons)


def ts_segment(path: Path, picture: str, hz: int, rate: int = 48000, channels: int = 1, *extra: str) -> Path:
    ffmpeg("-f", "lavfi", "-i", f"{picture}:r=25:d=4", "-f", "lavfi", "-i", f"sine=f={hz}:d=4:sample_rate={rate}",
           "-c:v", "libx264", "-preset", "ultrafast", "-c:a", "aac", "-ar", str(rate), "-ac", str(channels), *extra, path)
    return path


def joined(path: Path, *parts: Path) -> Path:
    path.write_bytes(b"".join(p.read_bytes() for p in parts))  # `cat a.ts b.ts`: the second one's clock restarts
    return path


def test_a_timestamp_reset_continues_the_timeline_with_sound_and_picture_together(tmp_path: Path) -> None:
    first = ts_segment(tmp_path / "a.ts", "color=c=white:s=160x120", 440)
    second = ts_segment(tmp_path / "b.ts", "color=c=black:s=160x120", 1000)
    decoder, frames, audio, missing = decode(joined(tmp_path / "joined.ts", first, second))
    assert len(frames) == 200  # as `ffmpeg -i joined.ts` decodes it
    assert decoder.discontinuities == 1
    brightness = [float(f.mean()) for f in frames]
    assert all(b > 200 for b in brightness[:100]) and all(b < 30 for b in brightness[100:])
    # The second file's tone starts with its picture (4 s), within a frame, and plays to the end.
    window = PER_FRAME
    hz = [dominant_hz(audio[0, i : i + window]) for i in range(0, audio.shape[1], window)]
    assert all(abs(h - 440) < 30 for h in hz[:99]) and all(abs(h - 1000) < 30 for h in hz[101:])
    assert loud_seconds(audio) == "x" * 8 and sum(missing) < PER_FRAME


def test_an_audio_format_change_rebuilds_the_resampler_and_loses_no_audio(tmp_path: Path) -> None:
    mono = ts_segment(tmp_path / "m.ts", "testsrc2=s=160x120", 440, 48000, 1)
    stereo = ts_segment(tmp_path / "s.ts", "testsrc2=s=160x120", 1000, 44100, 2, "-output_ts_offset", "4")
    decoder, frames, audio, missing = decode(joined(tmp_path / "format.ts", mono, stereo))
    assert decoder.audio_format_changes == 1 and decoder.discontinuities == 0
    assert len(frames) == 199  # as ffmpeg decodes it
    # Sound all through, no silence put in: the stereo part's timestamps are not taken at the mono part's rate.
    assert sum(missing) == 0
    level = np.sqrt(np.mean(audio[0, : audio.shape[1] // 320 * 320].reshape(-1, 320) ** 2, axis=1))
    assert level.min() > 0.03  # the tones' level is 0.09 (an inserted gap would read 0)
    assert abs(dominant_hz(audio[0, : 3 * RATE]) - 440) < 10 and abs(dominant_hz(audio[0, -3 * RATE :]) - 1000) < 10


def test_a_picture_size_change_is_letterboxed_not_squashed(tmp_path: Path) -> None:
    small = ts_segment(tmp_path / "small.ts", "color=c=white:s=320x240", 440)
    wide = ts_segment(tmp_path / "wide.ts", "color=c=white:s=640x360", 440, 48000, 1, "-output_ts_offset", "4")
    source = joined(tmp_path / "size.ts", small, wide)
    decoder, frames, _, _ = decode(source)
    assert all(f.shape == (240, 320) for f in frames)
    white_rows = [int((f.mean(axis=1) > 128).sum()) for f in frames]
    assert all(rows == 240 for rows in white_rows[:99])
    # 16:9 in a 320-wide frame: 180 rows of picture, 30 black above and below.
    assert all(rows == 180 for rows in white_rows[100:])
    assert all((f[:30] < 30).all() and (f[-30:] < 30).all() and (f[30:210, :] > 200).all() for f in frames[100:])
    assert decoder.size_changes == 1 and list(decoder.later_sizes) == [(640, 360)]


def test_the_ledger_note_says_what_was_repaired(tmp_path: Path) -> None:
    # A broadcast-like capture: the second part restarts its clock, with other audio parameters and picture size.
    first = ts_segment(tmp_path / "a.ts", "testsrc2=s=320x240", 440, 48000, 1)
    second = ts_segment(tmp_path / "b.ts", "testsrc2=s=640x360", 1000, 44100, 2)
    source = joined(tmp_path / "capture.ts", first, second)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    config = Config.from_dict({"filters": [], "clips": {"min_s": 1.0, "max_s": 4.0}})
    result = process_source(Source.from_uri(str(source)), config, str(tmp_path / "staging"), str(scratch))
    assert sum(c.n_frames for c in result.clips) >= 195  # both parts, not only the first
    assert result.note is not None
    assert "1 timestamp discontinuity(ies) re-anchored" in result.note
    assert "audio format changed 1 time(s) mid-stream" in result.note
    assert "picture size changed 1 time(s) (to 640x360); letterboxed into 320x240" in result.note
    assert "without audio" not in result.note
