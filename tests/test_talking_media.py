"""Talking-face test media (avcurate.speakers.talking), checked by decoding what was written.

The media is the ground truth for the face, active-speaker and lip-sync stages, so these tests hold it to what it
claims: the astronaut constants are MTCNN's answer, only the talking mouths move and only while their speaker
speaks, the sound is delayed by exactly the offset asked for, and MTCNN finds both faces whether mouths are open.
"""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest

from avcurate.speakers.base import SPEECH_RATE, Turn
from avcurate.speakers.talking import (
    FaceSpec,
    Scene,
    mouth_of_astronaut,
    one_speaker_scene,
    speech_envelope,
    talking_face_video,
    two_speaker_scene,
)
from avcurate.synth import decode_signals

FPS = 25


@pytest.fixture(scope="module")
def mtcnn():
    import torch
    from facenet_pytorch import MTCNN

    torch.set_num_threads(1)
    return MTCNN(keep_all=True, device="cpu")


@pytest.fixture(scope="module")
def one_speaker(tmp_path_factory: pytest.TempPathFactory) -> Scene:
    return one_speaker_scene(tmp_path_factory.mktemp("one"))


@pytest.fixture(scope="module")
def two_speakers(tmp_path_factory: pytest.TempPathFactory) -> Scene:
    return two_speaker_scene(tmp_path_factory.mktemp("two"))


def _frames(path: Path) -> np.ndarray:
    """All frames, uint8 RGB [frames, H, W, 3]."""
    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


Box = tuple[int, int, int, int]


def _motion(frames: np.ndarray, box: Box, hole: Box | None = None) -> np.ndarray:
    """Mean absolute difference between consecutive frames (grey levels) in `box`, less `hole` if given.

    Frame to frame, not against one reference frame: H.264 leaves a small coding residue where something moved,
    which would read as change long after the mouth closed."""
    x0, y0, x1, y1 = box
    diffs = np.abs(np.diff(frames[:, y0:y1, x0:x1].astype(np.int16), axis=0)).sum(axis=-1)
    total, area = diffs.sum(axis=(1, 2)), (x1 - x0) * (y1 - y0)
    if hole is not None:
        hx0, hy0, hx1, hy1 = hole
        total = total - diffs[:, hy0 - y0 : hy1 - y0, hx0 - x0 : hx1 - x0].sum(axis=(1, 2))
        area -= (hx1 - hx0) * (hy1 - hy0)
    return total / (3 * area)


def _speaking(turns: list[Turn], speaker: str | None, frames: int, margin_s: float = 0.0) -> np.ndarray:
    """Per step between frames (t to t+1), whether `speaker` (anyone if None) is in a turn widened by `margin_s`."""
    return _active(turns, speaker, (np.arange(1, frames) + 0.5) / FPS, margin_s)


def _active(turns: list[Turn], speaker: str | None, t: np.ndarray, margin_s: float = 0.0) -> np.ndarray:
    active = np.zeros(t.size, bool)
    for turn in turns:
        if speaker is None or turn.speaker == speaker:
            active |= (t >= turn.start_s - margin_s) & (t < turn.end_s + margin_s)
    return active


def test_astronaut_constants_are_mtcnns_answer(mtcnn) -> None:
    from skimage import data

    boxes, scores, points = mtcnn.detect(data.astronaut(), landmarks=True)
    assert boxes.shape == (1, 4) and scores[0] > 0.99
    face = mouth_of_astronaut()
    np.testing.assert_allclose(boxes[0].astype(float), face.box, atol=1.0)  # facenet-pytorch returns object arrays
    np.testing.assert_allclose(points[0].astype(float), face.landmarks, atol=1.0)


def test_video_decodes_with_duration_rate_size_and_sound(one_speaker: Scene) -> None:
    with av.open(str(one_speaker.video)) as container:
        video, audio = container.streams.video[0], container.streams.audio[0]
        assert (video.codec_context.name, audio.codec_context.name) == ("h264", "aac")
        assert (video.width, video.height) == (512, 256)
        assert video.average_rate == FPS
        frames = sum(1 for _ in container.decode(video=0))
    assert frames == round(one_speaker.duration_s * FPS) == 212
    assert [f.talking for f in one_speaker.faces] == [True, False]


def test_only_the_talking_mouth_moves(one_speaker: Scene) -> None:
    frames = _frames(one_speaker.video)
    talking, still = one_speaker.faces
    mouth = _motion(frames, talking.mouth_box)
    assert _motion(frames, (0, 0, 256, 256), hole=talking.mouth_box).max() < 0.1  # the rest of the face
    assert _motion(frames, (256, 0, 512, 256)).max() < 0.1  # the still face's panel
    speaking = _speaking(one_speaker.turns, "A", len(frames))
    quiet = ~_speaking(one_speaker.turns, "A", len(frames), margin_s=0.2)  # the mouth closes smoothly
    assert mouth[speaking].mean() > 1.5
    assert mouth[quiet].max() < 0.3  # coding noise


def test_each_face_lip_syncs_its_own_speaker(two_speakers: Scene) -> None:
    """Face 0 moves in A's turns, face 1 in B's; neither moves in silence or music."""
    frames = _frames(two_speakers.video)
    assert two_speakers.speakers == ("A", "B")
    nobody = ~_speaking(two_speakers.turns, None, len(frames), margin_s=0.2)
    assert nobody[round(10.0 * FPS) : round(11.9 * FPS)].all()  # the music
    for face, speaker in zip(two_speakers.faces, two_speakers.speakers):
        mouth = _motion(frames, face.mouth_box)
        own = _speaking(two_speakers.turns, speaker, len(frames))
        others = ~_speaking(two_speakers.turns, speaker, len(frames), margin_s=0.2)
        assert mouth[own].mean() > 1.5, speaker
        assert mouth[others].mean() < 0.05 * mouth[own].mean(), speaker
        assert mouth[nobody].max() < 0.3, speaker
    overlaps = [(a, b) for a in two_speakers.turns for b in two_speakers.turns
                if a.speaker < b.speaker and a.start_s < b.end_s and b.start_s < a.end_s]  # fmt: skip
    assert len(overlaps) == 1


def test_envelope_follows_speech(two_speakers: Scene) -> None:
    envelope = speech_envelope(two_speakers.audio, SPEECH_RATE, FPS)
    speaking = _active(two_speakers.turns, None, (np.arange(envelope.size) + 0.5) / FPS)
    assert envelope.size == 375 and envelope.min() >= 0 and envelope.max() == pytest.approx(1.0)
    assert np.corrcoef(envelope, speaking)[0, 1] > 0.6
    assert envelope[speaking].mean() > 0.4


@pytest.mark.parametrize("offset_ms", [200.0, -120.0])
def test_audio_is_delayed_by_the_offset(tmp_path: Path, offset_ms: float) -> None:
    scene = one_speaker_scene(tmp_path, offset_ms=offset_ms)
    decoded = decode_signals(scene.video, fps=FPS, sample_rate=SPEECH_RATE).audio[0]
    assert decoded.size == round(scene.duration_s * FPS) * SPEECH_RATE // FPS
    reference = scene.audio[: decoded.size]
    n = 1 << int(np.ceil(np.log2(decoded.size + reference.size)))
    xcorr = np.fft.irfft(np.fft.rfft(decoded, n) * np.conj(np.fft.rfft(reference, n)), n)
    lags = np.r_[np.arange(0, SPEECH_RATE // 2), np.arange(-SPEECH_RATE // 2, 0)]
    lag = lags[np.argmax(np.r_[xcorr[: SPEECH_RATE // 2], xcorr[-SPEECH_RATE // 2 :]])]
    assert abs(lag / SPEECH_RATE * 1000 - offset_ms) <= 1.0
    assert scene.offset_ms == offset_ms


def test_same_inputs_write_the_same_file(tmp_path: Path, one_speaker: Scene) -> None:
    again = one_speaker_scene(tmp_path)
    assert again.video.read_bytes() == one_speaker.video.read_bytes()


def test_mtcnn_finds_both_faces_mouths_open_and_closed(two_speakers: Scene, mtcnn) -> None:
    frames = _frames(two_speakers.video)
    widest = [int(np.argmax(_darkness(frames, face.mouth_box))) for face in two_speakers.faces]
    for index in [0, *widest]:
        boxes, scores = mtcnn.detect(frames[index])
        assert boxes is not None and len(boxes) == 2, index
        assert scores.astype(float).min() > 0.95
        for face in two_speakers.faces:
            error = np.abs(boxes.astype(float) - np.array(face.face.box)).max(axis=1).min()
            assert error < 15, (index, error)  # an open mouth drops the chin, so the box grows a little


def _darkness(frames: np.ndarray, box: Box) -> np.ndarray:
    """Per frame, how much darker `box` is than in frame 0 (the gap between open lips is dark)."""
    x0, y0, x1, y1 = box
    region = frames[:, y0:y1, x0:x1].astype(np.float32).mean(axis=(1, 2, 3))
    return region[0] - region


def test_talking_face_video_checks_its_inputs(tmp_path: Path) -> None:
    audio = np.zeros(SPEECH_RATE, np.float32)
    with pytest.raises(ValueError, match="envelope"):
        talking_face_video(tmp_path / "x.mp4", audio, SPEECH_RATE, [FaceSpec(np.zeros(10))], size=(256, 256))
    with pytest.raises(ValueError, match="shape"):
        talking_face_video(tmp_path / "x.mp4", audio, SPEECH_RATE, [FaceSpec(None)], size=(512, 256))


def test_head_sway_moves_the_whole_picture(tmp_path: Path) -> None:
    audio = np.zeros(SPEECH_RATE, np.float32)
    path = tmp_path / "sway.mp4"
    truth = talking_face_video(path, audio, SPEECH_RATE, [FaceSpec(None)], size=(256, 256), sway_px=2.0)
    frames = _frames(path)
    assert _motion(frames, (0, 0, 256, 256), hole=truth[0].mouth_box).mean() > 0.3  # a still face: under 0.1
