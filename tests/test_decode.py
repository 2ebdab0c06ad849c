"""The aligned decoder on real media: timelines, late audio, variable frame rate, rotation, sizes."""

from __future__ import annotations

import subprocess
from pathlib import Path

import av
import numpy as np
import pytest

from avcurate.config import DecodeConfig
from avcurate.decode import AlignedDecoder, luma, target_size
from avcurate.probe import ProbeError, check_decodable, open_container, probe_container

CFG = DecodeConfig()


def ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-v", "error", "-y", *args], check=True)


def decode(path: Path, cfg: DecodeConfig = CFG) -> tuple[AlignedDecoder, list[np.ndarray], np.ndarray]:
    with av.open(str(path)) as container:
        decoder = AlignedDecoder(container, cfg)
        frames, audio = [], []
        for frame in decoder:
            frames.append(luma(frame.video).copy())
            audio.append(frame.audio)
    return decoder, frames, np.concatenate(audio, axis=1)


def onset_sample(audio: np.ndarray, level: float = 0.05) -> int:
    return int(np.argmax(np.abs(audio[0]) > level))


def test_streams_share_one_timeline(tmp_path: Path) -> None:
    path = tmp_path / "plain.mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc2=s=640x480:r=30:d=3", "-f", "lavfi", "-i", "sine=f=440:d=3:sample_rate=44100",
           "-c:v", "libx264", "-preset", "ultrafast", "-c:a", "aac", "-shortest", str(path))
    decoder, frames, audio = decode(path)
    assert len(frames) == 75  # 3 s at 25 fps, whatever the source rate
    assert audio.shape == (1, 75 * 640)  # exactly one frame's worth of samples per frame
    assert frames[0].shape == (256, 342) and decoder.size == (342, 256)


def test_late_starting_audio_is_padded_not_shifted(tmp_path: Path) -> None:
    video = tmp_path / "v.mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc2=s=320x240:r=25:d=4", "-f", "lavfi", "-i", "sine=f=440:d=3:sample_rate=44100",
           "-c:v", "libx264", "-preset", "ultrafast", "-c:a", "aac", str(video))
    late = tmp_path / "late.mp4"  # the audio stream itself starts 1 s after the video
    ffmpeg("-i", str(video), "-itsoffset", "1.0", "-i", str(video), "-map", "0:v", "-map", "1:a", "-c", "copy", str(late))
    with av.open(str(late)) as c:
        assert float(c.streams.audio[0].start_time * c.streams.audio[0].time_base) > 0.9
    _, frames, audio = decode(late)
    assert len(frames) == 100
    # The tone starts at 1.0 s on the output timeline: within one video frame (640 samples).
    assert abs(onset_sample(audio) - 16000) <= 640
    assert np.abs(audio[0, :15000]).max() < 1e-3


def test_variable_frame_rate_maps_each_instant_to_the_frame_on_screen(tmp_path: Path) -> None:
    # 50 fps source whose brightness encodes the frame number, then irregular frames dropped (VFR timestamps).
    path = tmp_path / "vfr.mkv"
    ffmpeg("-f", "lavfi", "-i", "color=c=black:s=64x64:r=50:d=2,geq=lum='N*2+16':cb=128:cr=128",
           "-f", "lavfi", "-i", "anoisesrc=d=2:a=0.1:seed=1",
           "-vf", "select='not(eq(mod(n\\,5)\\,1)+eq(mod(n\\,7)\\,3))'", "-fps_mode", "vfr",
           "-c:v", "libx264", "-qp", "0", "-preset", "ultrafast", "-c:a", "aac", str(path))
    with av.open(str(path)) as c:
        times = [f.time for f in c.decode(video=0)]
    kept = [round((t - times[0]) * 50) for t in times]  # source frame numbers; the first one is frame 0
    assert len(set(np.diff(kept))) > 1, "the source must really have variable frame durations"
    _, frames, _ = decode(path)
    assert len(frames) == 50
    for n, frame in enumerate(frames):
        expected = max(k for k in kept if k <= n * 2)  # the source frame on screen at n / 25 s
        assert abs(float(frame.mean()) - (expected * 2 + 16)) < 3, n


@pytest.mark.parametrize("rotate", [90, 270, 180])
def test_rotated_phone_video_comes_out_in_display_orientation(tmp_path: Path, rotate: int) -> None:
    land = tmp_path / "land.mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc2=s=640x360:r=25:d=1", "-f", "lavfi", "-i", "sine=d=1",
           "-c:v", "libx264", "-preset", "ultrafast", "-c:a", "aac", str(land))
    rotated = tmp_path / f"rot{rotate}.mp4"
    ffmpeg("-i", str(land), "-c", "copy", "-metadata:s:v", f"rotate={rotate}", str(rotated))
    decoder, frames, _ = decode(rotated)
    expected_size = (256, 456) if rotate in (90, 270) else (456, 256)
    assert decoder.size == expected_size
    # ffmpeg's own autorotation is the reference picture.
    w, h = expected_size
    reference = subprocess.run(
        ["ffmpeg", "-v", "error", "-i", str(rotated), "-frames:v", "1", "-vf", f"scale={w}:{h}:flags=bilinear",
         "-pix_fmt", "yuv420p", "-f", "rawvideo", "-"], check=True, capture_output=True).stdout
    reference_frame = np.frombuffer(reference[: w * h], np.uint8).reshape(h, w).astype(float)  # its Y plane
    assert np.abs(frames[0].astype(float) - reference_frame).mean() < 4


def test_target_size_keeps_aspect_with_even_sides() -> None:
    assert target_size(1920, 1080, None, 0, 256) == (456, 256)
    assert target_size(1080, 1920, None, 0, 256) == (256, 456)
    assert target_size(1920, 1080, None, 90, 256) == (256, 456)
    assert target_size(720, 576, __import__("fractions").Fraction(16, 15), 0, 256) == (342, 256)


def test_small_pictures_keep_their_own_size_unless_upscaling_is_asked_for() -> None:
    assert target_size(160, 90, None, 0, 256) == (160, 90)
    assert target_size(160, 90, None, 90, 256) == (90, 160)
    assert target_size(321, 241, None, 0, 256) == (320, 240)  # even sides, never above the source
    assert target_size(160, 90, None, 0, 256, upscale=True) == (456, 256)


def test_probe_rejects_single_stream_inputs_with_a_clear_cause(tmp_path: Path) -> None:
    video_only = tmp_path / "v.mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc2=s=64x64:d=1", "-c:v", "libx264", "-preset", "ultrafast", str(video_only))
    with open_container(str(video_only)) as c, pytest.raises(ProbeError, match="video-only input: no audio stream"):
        check_decodable(probe_container(c), c)


def test_cover_art_is_not_taken_for_video(tmp_path: Path) -> None:
    cover = tmp_path / "cover.png"
    ffmpeg("-f", "lavfi", "-i", "color=red:s=320x240", "-frames:v", "1", str(cover))
    # Music with an embedded cover (an attached picture: a one-frame video stream) has no video at all.
    music = tmp_path / "music.mp4"
    ffmpeg("-f", "lavfi", "-i", "sine=d=3", "-i", str(cover), "-map", "0:a", "-map", "1:v", "-c:a", "aac",
           "-c:v", "png", "-disposition:v:0", "attached_pic", str(music))
    with open_container(str(music)) as c, pytest.raises(ProbeError, match="audio-only input"):
        check_decodable(probe_container(c), c)
    # A video with a cover: the cover is ignored, whatever its place among the streams.
    video = tmp_path / "video.mp4"
    ffmpeg("-f", "lavfi", "-i", "sine=d=3", "-i", str(cover), "-f", "lavfi", "-i", "testsrc2=s=640x360:r=25:d=3",
           "-map", "1:v", "-map", "2:v", "-map", "0:a", "-c:v:0", "png", "-disposition:v:0", "attached_pic",
           "-c:v:1", "libx264", "-preset", "ultrafast", "-c:a", "aac", str(video))
    with open_container(str(video)) as c:
        info = probe_container(c)
    assert (info.video_codec, info.width, info.height) == ("h264", 640, 360)
    decoder, frames, _ = decode(video)
    assert len(frames) == 75 and decoder.size == (456, 256)
