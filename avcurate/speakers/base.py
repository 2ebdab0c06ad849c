"""What the speaker stages speak: speech segments, speaker turns, faces, and the interfaces backends implement.

Audio handed to voice activity, speaker embedding and diarization is mono float32 at SPEECH_RATE (16 kHz, what
Silero VAD, the speaker encoder and pyannote all expect). Times are seconds from the start of the audio given.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

SPEECH_RATE = 16000


@dataclass(frozen=True)
class Segment:
    """A stretch of speech."""

    start_s: float
    end_s: float

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s


@dataclass(frozen=True)
class Turn:
    """One speaker talking from start_s to end_s. Turns of different speakers may overlap (overlapped speech).

    Labels are "S0", "S1", ... numbered in order of first appearance in the source (`relabel`), so they are
    the same in every clip of one source and the same on every rerun."""

    start_s: float
    end_s: float
    speaker: str

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s


def relabel(turns: list[Turn]) -> list[Turn]:
    """Turns sorted by (start, end), speakers renamed S0, S1, ... in order of first appearance."""
    ordered = sorted(turns, key=lambda t: (t.start_s, t.end_s, t.speaker))
    names: dict[str, str] = {}
    for turn in ordered:
        names.setdefault(turn.speaker, f"S{len(names)}")
    return [Turn(t.start_s, t.end_s, names[t.speaker]) for t in ordered]


class VoiceActivity(Protocol):
    name: str

    def segments(self, audio: np.ndarray, rate: int) -> list[Segment]: ...


class Diarizer(Protocol):
    """Who speaks when over a whole source. Returns relabelled turns (`relabel`)."""

    name: str
    detects_overlap: bool  # whether two turns can overlap; if not, overlap_ratio is not measured

    def diarize(self, audio: np.ndarray, rate: int) -> list[Turn]: ...


@dataclass(frozen=True)
class Face:
    """One detected face in one frame, in that frame's pixel coordinates."""

    box: tuple[float, float, float, float]  # x0, y0, x1, y1
    score: float
    # [5, 2] (x, y): left eye, right eye, nose, left mouth corner, right mouth corner (MTCNN's order); None for
    # detectors that find no landmarks (the mouth is then estimated from the box).
    landmarks: np.ndarray | None = None


class FaceDetector(Protocol):
    name: str

    def detect(self, rgb: np.ndarray) -> list[Face]: ...  # rgb: uint8 [H, W, 3]


class LipSyncBackend(Protocol):
    """How well a face's mouth moves with the sound, at each frame and each audio lag.

    `crop` is what the backend keeps of one face in one frame (a fixed shape, small: it is held for every frame
    of a clip). `similarity` returns [2 * max_lag + 1, frames]: row i pairs frame t with the audio at
    t + (i - max_lag) frames (positive lag: the audio lags the picture, as ClipScores.av_offset_ms); higher is
    more in sync; NaN where a frame has no score (too close to the clip's ends for that lag).
    `audio` is the clip's mono float32 audio at `rate`, sample 0 at frame 0.
    """

    name: str

    def crop(self, rgb: np.ndarray, face: Face) -> np.ndarray: ...

    def similarity(self, crops: np.ndarray, audio: np.ndarray, rate: int, fps: float, max_lag: int) -> np.ndarray: ...
