"""What scorers see of a clip, and the interfaces they implement."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np


@dataclass
class ClipSignals:
    """One clip, decoded and resampled, as the scorers see it. Sample 0 and frame 0 are both the clip start."""

    audio: np.ndarray  # float32 [channels, samples] in [-1, 1]
    sample_rate: int
    gray: np.ndarray  # float32 [frames, h, w] luma in [0, 1], downscaled; frame t shows time t / fps
    fps: float
    full_luma: np.ndarray | None = None  # uint8 [k, H, W]: a few frames at the output size (scoring.sharpness_fps)

    @property
    def duration_s(self) -> float:
        return self.gray.shape[0] / self.fps


@dataclass(frozen=True)
class SyncEstimate:
    offset_ms: float  # positive: the audio lags the picture (sound comes after the event it belongs to)
    confidence: float  # 0..1; near 0 when the audio is unrelated to the picture


class SyncScorer(Protocol):
    """Estimates the audio-video offset of a clip. The model-free scorer is one; a learned one can be another."""

    name: str

    def estimate(self, signals: ClipSignals) -> SyncEstimate: ...
