"""Generated talking-face test videos: a real face (the astronaut photograph) whose mouth opens with speech.

Face, speaker and lip-sync stages need clips where the truth is known: which face is where, which face speaks
which speaker's lines, and by how much the sound lags the picture. Here a real photograph (so real face detectors
find the faces) is animated only in the mouth region, driven by each speaker's own speech envelope, and the audio
is delayed by a chosen offset. Like `synth`, this proves mechanics (the right face, the right sign and size of the
offset), not quality on real footage.
"""

from __future__ import annotations

import subprocess
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from .base import SPEECH_RATE, Face, Turn
from .synth import FEMALE, MALE, Line, conversation, music

# The astronaut's face in skimage.data.astronaut() (512x512), measured once with
# facenet_pytorch.MTCNN(keep_all=True).detect(astronaut, landmarks=True) (facenet-pytorch 2.5.3, CPU) and rounded to
# 0.1 px, so that making media needs no detector; tests/test_talking_media.py checks them against MTCNN.
_ASTRONAUT_BOX = (181.1, 62.2, 267.7, 172.1)  # x0, y0, x1, y1 (score 0.99999)
_ASTRONAUT_LANDMARKS = ((205.0, 101.7), (246.8, 103.7), (224.7, 129.0), (201.7, 139.2), (245.3, 141.9))

# Crops of the astronaut photograph (x0, y0, x1, y1) whose face is 90-110 px tall in a 256 px high panel.
FACE_CROP = (84, 0, 364, 280)
WIDER_CROP = (70, 0, 370, 300)  # the second face: framed a little wider, so its box differs from the first

_OPEN_FRACTION = 0.3  # the widest mouth opening (envelope 1), as a fraction of the mouth's width
_LIFT_FRACTION = 0.25  # the upper lip rises by this fraction of the opening; the jaw drops by the rest
_JAW_HALF_WIDTH = 0.8  # the moving jaw's half width, in mouth widths (the lips part only between the corners)
_INSIDE_RGB = np.array([48.0, 16.0, 18.0], np.float32)  # the dark gap between open lips
_INSIDE_ALPHA = 0.9


def mouth_of_astronaut() -> Face:
    """The astronaut's face box and landmarks (eyes, nose, mouth corners) in the photograph's pixels."""
    return Face(box=_ASTRONAUT_BOX, score=1.0, landmarks=np.array(_ASTRONAUT_LANDMARKS, np.float32))


@dataclass(frozen=True, eq=False)
class FaceSpec:
    """One face to show: a crop of the astronaut photograph and what drives its mouth.

    `envelope` is the mouth opening per video frame (0 closed .. 1 wide open), None for a face that stays still.
    `crop` (x0, y0, x1, y1 in the photograph) is scaled to fill the face's panel, so it must have the panel's
    shape; `mirror` flips it left to right, so a second face from the same photograph is not a copy of the first.
    """

    envelope: np.ndarray | None
    crop: tuple[int, int, int, int] = FACE_CROP
    mirror: bool = False


@dataclass(frozen=True, eq=False)
class RenderedFace:
    """Where a face is in the written video, in output pixels (at rest, when the head sway is off).

    `face` has the box and MTCNN-ordered landmarks; `mouth_box` (x0, y0, x1, y1, end exclusive) holds every pixel
    the mouth animation can change, so outside it a face's pixels are the same in every frame.
    """

    face: Face
    mouth_box: tuple[int, int, int, int]
    talking: bool


@dataclass(frozen=True, eq=False)
class Scene:
    """A generated test clip and its truth.

    `speakers[i]` is the speaker whose speech drives face i's mouth (None: face i stays still). `audio` is the
    mixed sound as spoken (mono float32 at SPEECH_RATE, sample 0 at frame 0), before `offset_ms` delayed it.
    """

    video: Path
    turns: list[Turn]
    speakers: tuple[str | None, ...]
    faces: list[RenderedFace]
    offset_ms: float
    fps: int
    audio: np.ndarray

    @property
    def duration_s(self) -> float:
        return self.audio.size / SPEECH_RATE


def speech_envelope(audio: np.ndarray, rate: int, fps: float, window_s: float = 0.08) -> np.ndarray:
    """How far a speaker's mouth is open at each video frame (0..1), from that speaker's own speech.

    RMS in a `window_s` window centred on each frame's timestamp (so at offset 0 the best lag is exactly 0 frames),
    smoothed without delay (a jaw cannot follow every syllable, and a lagging smoother would bias the lip-sync
    truth), divided by the loud (95th percentile) level.
    """
    frames = round(audio.size * fps / rate)
    energy = np.concatenate([[0.0], np.cumsum(audio.astype(np.float64) ** 2)])
    centres = np.arange(frames) / fps * rate
    half = window_s * rate / 2
    lo = np.clip(np.round(centres - half), 0, audio.size).astype(int)
    hi = np.clip(np.round(centres + half), 0, audio.size).astype(int)
    rms = np.sqrt((energy[hi] - energy[lo]) / np.maximum(hi - lo, 1))
    kernel = np.exp(-0.5 * np.arange(-3, 4) ** 2)  # Gaussian, sigma one frame
    smooth = np.convolve(np.pad(rms, 3, mode="edge"), kernel / kernel.sum(), mode="valid")
    loud = np.percentile(smooth, 95) if smooth.size else 0.0
    if loud <= 1e-6:
        return np.zeros(frames, np.float32)
    return np.clip(smooth / loud, 0.0, 1.0).astype(np.float32)


@dataclass(frozen=True)
class _Mouth:
    """A face's mouth in its panel's pixels, and the region (rows y0:y1, columns x0:x1) its animation touches."""

    left: tuple[float, float]  # mouth corners, left and right in the image
    right: tuple[float, float]
    nose_y: float
    chin_y: float
    y0: int
    y1: int
    x0: int
    x1: int

    @property
    def width(self) -> float:
        return float(np.hypot(self.right[0] - self.left[0], self.right[1] - self.left[1]))


def talking_face_video(
    path: str | Path,
    audio: np.ndarray,
    rate: int,
    faces: list[FaceSpec],
    offset_ms: float = 0.0,
    fps: int = 25,
    size: tuple[int, int] = (512, 256),
    seed: int = 0,
    sway_px: float = 0.0,
) -> list[RenderedFace]:
    """Write an H.264/AAC MP4 of `faces` side by side (one equal panel each) playing `audio` delayed by `offset_ms`.

    The video lasts as long as `audio` (each envelope needs one value per frame); positive `offset_ms` makes the
    sound come after the mouth moves, and the delayed track is cut to keep the duration. `sway_px` moves each
    head (the whole panel) smoothly by up to that many pixels, on a path drawn from `seed`, so that a picture is
    not frozen outside the mouths; at 0 (the default) only the mouths move. The same inputs write the same bytes.
    """
    width, height = size
    frames = round(audio.size * fps / rate)
    if width % len(faces) or width % 2 or height % 2:
        raise ValueError(f"size {size}: the width must split into {len(faces)} panels, both sides even")
    for spec in faces:
        if spec.envelope is not None and len(spec.envelope) != frames:
            raise ValueError(f"an envelope has {len(spec.envelope)} values for {frames} frames")
    panel_w = width // len(faces)
    placed = [_place(spec, panel_w, height) for spec in faces]
    panels = [(_panel(spec, panel_w, height), _mouth(face, panel_w, height)) for spec, face in zip(faces, placed)]
    truths = [_truth(face, mouth, spec.envelope is not None, i * panel_w) for i, (spec, face, (_, mouth))
              in enumerate(zip(faces, placed, panels))]  # fmt: skip
    sways = _sways(len(faces), frames, fps, sway_px, seed)

    def pictures() -> Iterator[np.ndarray]:
        for t in range(frames):
            row = []
            for i, (spec, (image, mouth)) in enumerate(zip(faces, panels)):
                opening = 0.0 if spec.envelope is None else float(spec.envelope[t])
                row.append(_sway(_open_mouth(image, mouth, opening), sways[i, t]))
            yield np.concatenate(row, axis=1)

    _encode(Path(path), pictures(), _delayed(audio, rate, offset_ms), rate, size, fps)
    return truths


def _panel(spec: FaceSpec, width: int, height: int) -> np.ndarray:
    """The face's crop scaled to its panel, float32 RGB."""
    from skimage import data

    x0, y0, x1, y1 = spec.crop
    if abs((x1 - x0) / (y1 - y0) - width / height) > 0.02 * width / height:
        raise ValueError(f"crop {spec.crop} does not have the {width}x{height} panel's shape")
    image = cv2.resize(data.astronaut()[y0:y1, x0:x1], (width, height), interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(image[:, ::-1] if spec.mirror else image, np.float32)


def _mouth(face: Face, width: int, height: int) -> _Mouth:
    """The mouth of a face placed in a panel, with the rows and columns its widest opening can reach."""
    left, right = (tuple(map(float, p)) for p in face.landmarks[3:5])
    mouth_w = float(np.hypot(right[0] - left[0], right[1] - left[1]))
    mouth_y, nose_y, chin_y = (left[1] + right[1]) / 2, float(face.landmarks[2, 1]), face.box[3]
    opening = _OPEN_FRACTION * mouth_w
    centre_x = (left[0] + right[0]) / 2
    rows = (mouth_y - _lift_span(mouth_y, nose_y) - opening, chin_y + opening + _drop_span(mouth_y, chin_y))
    return _Mouth(
        left=left, right=right, nose_y=nose_y, chin_y=chin_y,
        y0=max(int(np.floor(rows[0])) - 1, 0), y1=min(int(np.ceil(rows[1])) + 2, height),
        x0=max(int(np.floor(centre_x - _JAW_HALF_WIDTH * mouth_w)), 0),
        x1=min(int(np.ceil(centre_x + _JAW_HALF_WIDTH * mouth_w)) + 1, width),
    )  # fmt: skip


def _lift_span(mouth_y: float, nose_y: float) -> float:
    """Rows above the mouth over which the upper lip's rise fades out (half way up to the nose)."""
    return 0.5 * (mouth_y - nose_y)


def _drop_span(mouth_y: float, chin_y: float) -> float:
    """Rows below the chin over which the jaw's drop fades out, so the neck stretches instead of tearing."""
    return 0.6 * (chin_y - mouth_y)


def _place(spec: FaceSpec, width: int, height: int) -> Face:
    """The astronaut's face box and landmarks mapped into the panel (mirrored ones re-sorted left/right)."""
    x0, y0, x1, y1 = spec.crop
    scale = np.array([width / (x1 - x0), height / (y1 - y0)])
    face = mouth_of_astronaut()
    points = (face.landmarks - [x0, y0]) * scale
    corners = (np.array(face.box).reshape(2, 2) - [x0, y0]) * scale
    if spec.mirror:
        points[:, 0] = width - points[:, 0]
        points = points[[1, 0, 2, 4, 3]]  # the eye and mouth corner on the left are now the other ones
        corners[:, 0] = width - corners[::-1, 0]
    return Face(box=tuple(float(v) for v in corners.reshape(-1)), score=1.0, landmarks=points.astype(np.float32))


def _truth(face: Face, mouth: _Mouth, talking: bool, left: int) -> RenderedFace:
    """A panel's face and mouth region moved to the panel's place in the frame."""
    x0, y0, x1, y1 = face.box
    return RenderedFace(
        face=Face(box=(x0 + left, y0, x1 + left, y1), score=1.0, landmarks=face.landmarks + np.float32([left, 0])),
        mouth_box=(mouth.x0 + left, mouth.y0, mouth.x1 + left, mouth.y1),
        talking=talking,
    )


def _open_mouth(image: np.ndarray, mouth: _Mouth, opening: float) -> np.ndarray:
    """The panel with its mouth `opening` (0..1) open: the jaw and lower lip drop, the upper lip rises a little,
    and the gap between the lips is dark.

    Each column of the mouth region is resampled along a continuous map that is the identity at the region's
    edges (the displacement tapers across the columns and fades out above the mouth and below the chin), so the
    change blends into the still face with no seam, and at `opening` 0 the pixels are exactly the photograph's.
    """
    if opening <= 0.0:
        return image
    ys = np.arange(mouth.y0, mouth.y1, dtype=np.float32)[:, None]
    xs = np.arange(mouth.x0, mouth.x1, dtype=np.float32)[None, :]
    width = mouth.width
    centre_x = (mouth.left[0] + mouth.right[0]) / 2
    # The lip line follows the corners (a tilted head has a tilted mouth).
    slope = (mouth.right[1] - mouth.left[1]) / max(mouth.right[0] - mouth.left[0], 1e-6)
    line = mouth.left[1] + slope * (xs - mouth.left[0])
    open_px = opening * _OPEN_FRACTION * width
    # The lips part between the corners (an ellipse); the jaw below drops over a wider, softer span.
    lips = np.sqrt(np.clip(1 - ((xs - centre_x) / (0.5 * width)) ** 2, 0.0, 1.0))
    jaw = np.cos(np.clip((xs - centre_x) / (_JAW_HALF_WIDTH * width), -1, 1) * np.pi / 2) ** 2
    lift = open_px * _LIFT_FRACTION * lips
    lip_drop, jaw_drop = open_px * (1 - _LIFT_FRACTION) * lips, open_px * (1 - _LIFT_FRACTION) * jaw
    chin = mouth.chin_y + (line - (mouth.left[1] + mouth.right[1]) / 2)  # the chin tilts with the mouth
    above, below = _lift_span(line, mouth.nose_y), _drop_span(line, mouth.chin_y)
    top, bottom = line - lift, line + lip_drop
    # Below the gap the drop goes from the lower lip's to the jaw's over half the chin's height, then fades out
    # under the chin; every step stays under a pixel per row, so the map never folds.
    drop = lip_drop + (jaw_drop - lip_drop) * _smoothstep((ys - bottom) / (0.5 * (chin - line)))
    drop = drop * (1 - _smoothstep((ys - chin - jaw_drop) / below))
    source = np.where(
        ys <= top, ys + lift * _smoothstep((ys - (top - above)) / above), np.where(ys < bottom, line, ys - drop)
    )
    region = cv2.remap(
        image, np.broadcast_to(xs, source.shape).astype(np.float32), source.astype(np.float32),
        cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE,
    )  # fmt: skip
    # Anti-aliased: a pixel half inside the gap is half dark, and a gap under a pixel high is that much fainter.
    inside = np.clip(np.minimum(ys - top, bottom - ys) + 0.5, 0.0, 1.0) * np.clip(bottom - top, 0.0, 1.0)
    inside = inside[..., None] * _INSIDE_ALPHA
    out = image.copy()
    out[mouth.y0 : mouth.y1, mouth.x0 : mouth.x1] = region * (1 - inside) + _INSIDE_RGB * inside
    return out


def _smoothstep(t: np.ndarray) -> np.ndarray:
    t = np.clip(t, 0.0, 1.0)
    return t * t * (3 - 2 * t)


def _sways(faces: int, frames: int, fps: int, sway_px: float, seed: int) -> np.ndarray:
    """[faces, frames, 2] head offsets (x, y) in pixels: two slow sines per axis, frequencies and phases from seed."""
    rng = np.random.default_rng(seed)
    t = np.arange(frames) / fps
    freqs = rng.uniform(0.15, 0.6, size=(faces, 1, 2, 2))
    phases = rng.uniform(0, 2 * np.pi, size=(faces, 1, 2, 2))
    waves = np.sin(2 * np.pi * freqs * t[None, :, None, None] + phases).sum(axis=-1) / 2
    return sway_px * waves


def _sway(image: np.ndarray, offset: np.ndarray) -> np.ndarray:
    if not offset.any():
        return image
    shift = np.float32([[1, 0, offset[0]], [0, 1, offset[1]]])
    return cv2.warpAffine(image, shift, image.shape[1::-1], flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)


def _delayed(audio: np.ndarray, rate: int, offset_ms: float) -> np.ndarray:
    """`audio` later by `offset_ms` (earlier if negative), padded with silence and cut to its own length."""
    shift = round(offset_ms * rate / 1000)
    if shift >= 0:
        return np.concatenate([np.zeros(shift, np.float32), audio[: max(audio.size - shift, 0)]])[: audio.size]
    return np.concatenate([audio[-shift:], np.zeros(min(-shift, audio.size), np.float32)])


def _encode(
    path: Path, pictures: Iterable[np.ndarray], audio: np.ndarray, rate: int, size: tuple[int, int], fps: int
) -> None:
    """Pipe RGB frames to the ffmpeg CLI with the audio from a raw file; single-threaded and bit-exact, so that
    the same frames give the same file."""
    with tempfile.TemporaryDirectory() as tmp:
        sound = Path(tmp) / "audio.f32"
        sound.write_bytes(audio.astype("<f4").tobytes())
        cmd = [
            "ffmpeg", "-nostdin", "-v", "error", "-y",
            "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{size[0]}x{size[1]}", "-r", str(fps), "-i", "pipe:0",
            "-f", "f32le", "-ar", str(rate), "-ac", "1", "-i", str(sound),
            "-map", "0:v", "-map", "1:a",
            "-c:v", "libx264", "-preset", "veryfast", "-crf", "18", "-pix_fmt", "yuv420p",
            "-c:a", "aac", "-b:a", "96k", "-ar", "48000",
            "-threads", "1", "-fflags", "+bitexact", "-flags:v", "+bitexact", "-flags:a", "+bitexact",
            str(path),
        ]  # fmt: skip
        with subprocess.Popen(cmd, stdin=subprocess.PIPE, stderr=subprocess.PIPE) as proc:
            assert proc.stdin is not None and proc.stderr is not None
            for picture in pictures:
                proc.stdin.write(np.clip(np.rint(picture), 0, 255).astype(np.uint8).tobytes())
            proc.stdin.close()
            error = proc.stderr.read().decode(errors="replace")
        if proc.returncode != 0:
            raise RuntimeError(f"ffmpeg failed ({proc.returncode}) writing {path}: {error.strip()}")


def two_speaker_scene(folder: str | Path, offset_ms: float = 0.0, seed: int = 0, sway_px: float = 0.0) -> Scene:
    """The standard two-speaker case, 15 s: face 0 lip-syncs speaker A (male), face 1 speaker B (female).

    A speaks, B answers after a pause, a longer silence, A asks and B answers over A's last words (the one
    overlap), a stretch of music with nobody speaking, and B speaks last.
    """
    lines = [
        Line("A", MALE, "Hello there. How have you been lately?", 0.4),
        Line("B", FEMALE, "I have been very well, thank you for asking.", 3.1),
        Line("A", MALE, "Did you hear the band that played last night?", 6.6),
        Line("B", FEMALE, "Yes, it was lovely.", 8.3),
        Line("B", FEMALE, "Let us go and listen again tomorrow.", 12.2),
    ]
    return _scene(Path(folder) / f"two-speakers{offset_ms:+.0f}ms.mp4", lines, 15.0, ((10.0, 11.9),), ("A", "B"),
                  offset_ms, seed, sway_px)  # fmt: skip


def one_speaker_scene(folder: str | Path, offset_ms: float = 0.0, seed: int = 0, sway_px: float = 0.0) -> Scene:
    """One speaker, 8.5 s: face 0 lip-syncs speaker A (male, three lines with pauses), face 1 stays still."""
    lines = [
        Line("A", MALE, "The weather is bright and clear this morning.", 0.4),
        Line("A", MALE, "We will start the meeting at ten.", 3.5),
        Line("A", MALE, "That sounds like a plan.", 6.0),
    ]
    return _scene(Path(folder) / f"one-speaker{offset_ms:+.0f}ms.mp4", lines, 8.5, (), ("A", None), offset_ms, seed,
                  sway_px)  # fmt: skip


def _scene(
    path: Path,
    lines: list[Line],
    duration_s: float,
    music_spans: tuple[tuple[float, float], ...],
    speakers: tuple[str | None, ...],
    offset_ms: float,
    seed: int,
    sway_px: float = 0.0,
) -> Scene:
    """Each speaker's lines rendered on their own track (their envelope drives their face), then mixed with music."""
    fps = 25
    mix = np.zeros(round(duration_s * SPEECH_RATE), np.float32)
    turns: list[Turn] = []
    envelopes: dict[str, np.ndarray] = {}
    for speaker in sorted({line.speaker for line in lines}):
        track, spoken = conversation([line for line in lines if line.speaker == speaker], duration_s)
        mix += track
        turns += spoken
        envelopes[speaker] = speech_envelope(track, SPEECH_RATE, fps)
    for begin_s, end_s in music_spans:
        begin = round(begin_s * SPEECH_RATE)
        piece = music(end_s - begin_s, SPEECH_RATE, seed)
        mix[begin : begin + piece.size] += piece[: mix.size - begin]
    mix *= min(1.0, 0.99 / max(float(np.abs(mix).max()), 1e-9))
    faces = [
        FaceSpec(None if speakers[0] is None else envelopes[speakers[0]], FACE_CROP),
        FaceSpec(None if speakers[1] is None else envelopes[speakers[1]], WIDER_CROP, mirror=True),
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    rendered = talking_face_video(path, mix, SPEECH_RATE, faces, offset_ms, fps, seed=seed, sway_px=sway_px)
    turns = sorted(turns, key=lambda t: (t.start_s, t.end_s))
    return Scene(video=path, turns=turns, speakers=speakers, faces=rendered, offset_ms=offset_ms, fps=fps, audio=mix)
