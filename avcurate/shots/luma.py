"""PySceneDetect's adaptive rule on the decoder's own luma, vectorised: the CPU default.

The same decision as `AdaptiveDetector(luma_only=True)` (Castellano, PySceneDetect): a frame's score is the mean
absolute luma change from the frame before; a cut is a frame whose score is at least `threshold` times the mean
score of the two frames each side of it, and at least `_MIN_SCORE`, no closer than `shots.min_shot_s` to the
previous cut. It reads the luma plane the decoder already has (BT.601 Y, where PySceneDetect converts to HSV and
takes V = max(R, G, B)) with one NumPy call a frame: calling the library costs 0.3 CPU s per minute of media,
6 % of the whole transcode, for the same cuts (docs/benchmarks.md).
"""

from __future__ import annotations

from collections import deque

import numpy as np

from ..config import ShotConfig
from .base import Cut

WINDOW = 2  # frames each side whose scores the candidate's is compared with (PySceneDetect's window_width)
_THRESHOLD = 3.0  # PySceneDetect's adaptive_threshold
_MIN_SCORE = 15.0  # PySceneDetect's min_content_val: a cut changes the picture at least this much (0..255)


class LumaAdaptiveDetector:
    name = "luma"

    def __init__(self, cfg: ShotConfig, fps: float) -> None:
        self.threshold = cfg.threshold if cfg.threshold is not None else _THRESHOLD
        self.min_frames = max(1, round(cfg.min_shot_s * fps))
        self._previous: np.ndarray | None = None
        self._scores: deque[tuple[int, float]] = deque(maxlen=2 * WINDOW + 1)
        self._last_cut = 0
        self._next = 0

    @property
    def settled(self) -> int:
        return max(self._next - WINDOW, 0)

    def push(self, index: int, yuv: np.ndarray) -> list[Cut]:
        luma = yuv[0].astype(np.int16)
        score = 0.0 if self._previous is None else float(np.abs(luma - self._previous).mean())
        self._previous = luma
        self._scores.append((index, score))
        self._next = index + 1
        return self._decide()

    def flush(self) -> list[Cut]:
        self._next += WINDOW  # the last frames never have neighbours on both sides: no cut there, as in the library
        return []

    def _decide(self) -> list[Cut]:
        if len(self._scores) < 2 * WINDOW + 1:
            return []
        target, score = self._scores[WINDOW]
        around = [s for i, (_, s) in enumerate(self._scores) if i != WINDOW]
        mean = sum(around) / len(around)
        ratio = min(score / mean, 255.0) if mean > 1e-5 else (255.0 if score >= _MIN_SCORE else 0.0)
        if ratio >= self.threshold and score >= _MIN_SCORE and target - self._last_cut >= self.min_frames:
            self._last_cut = target
            return [Cut.hard(target, round(ratio, 4))]
        return []
