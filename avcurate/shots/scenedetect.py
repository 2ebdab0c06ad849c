"""PySceneDetect's detectors, fed the decoder's frames (no second decode): the CPU default."""

from __future__ import annotations

from collections import deque
from fractions import Fraction

import cv2
import numpy as np
from scenedetect import AdaptiveDetector, ContentDetector, HistogramDetector
from scenedetect.common import FrameTimecode
from scenedetect.detector import FlashFilter

from ..config import ShotConfig
from .base import Cut

# The library's own defaults, on the score each detector compares with its threshold.
DEFAULT_THRESHOLDS = {"content": 27.0, "adaptive": 3.0, "histogram": 0.05}


class _Scores:
    """A stand-in for PySceneDetect's StatsManager that keeps each frame's score (the histogram detector
    reports its score only there). ContentDetector computes edge maps for a stats manager, so it gets none."""

    def __init__(self) -> None:
        self.by_frame: dict[int, float] = {}

    def set_metrics(self, timecode: FrameTimecode, metrics: dict[str, float]) -> None:
        for value in metrics.values():
            self.by_frame[timecode.frame_num] = 1.0 - value  # correlation -> difference, as its threshold reads


class SceneDetectDetector:
    """`content` (HSV change), `adaptive` (HSV change against its neighbours') or `histogram` (luma histogram)."""

    def __init__(self, cfg: ShotConfig, fps: float) -> None:
        self.name = cfg.detector
        threshold = cfg.threshold if cfg.threshold is not None else DEFAULT_THRESHOLDS[cfg.detector]
        min_len = max(1, round(cfg.min_shot_s * fps))
        self._fps = Fraction(fps).limit_denominator(1001)
        self._window = 0  # frames each side the adaptive ratio averages over
        self._recorder: _Scores | None = None
        if cfg.detector == "content":
            # Suppress (not merge) cuts closer than min_len: decided on the frame itself, so no look-ahead.
            self._detector = ContentDetector(threshold=threshold, min_scene_len=min_len,
                                             filter_mode=FlashFilter.Mode.SUPPRESS)
        elif cfg.detector == "adaptive":
            self._window = 2
            self._detector = AdaptiveDetector(adaptive_threshold=threshold, min_scene_len=min_len,
                                              window_width=self._window)
        elif cfg.detector == "histogram":
            self._detector = HistogramDetector(threshold=threshold, min_scene_len=min_len)
            self._recorder = _Scores()
            self._detector.stats_manager = self._recorder
        else:
            raise ValueError(f"unknown shot detector {cfg.detector!r}")
        self._behind = max(self._detector.event_buffer_length, self._window)
        self._content: deque[tuple[int, float]] = deque(maxlen=2 * self._behind + 2 * self._window + 2)
        self._next = 0

    @property
    def settled(self) -> int:
        return max(self._next - self._behind, 0)

    def push(self, index: int, yuv: np.ndarray) -> list[Cut]:
        bgr = cv2.cvtColor(np.ascontiguousarray(yuv.transpose(1, 2, 0)), cv2.COLOR_YUV2BGR)
        cuts = self._detector.process_frame(FrameTimecode(index, self._fps), bgr)
        if self._recorder is None:
            self._content.append((index, float(self._detector._frame_score or 0.0)))
        self._next = index + 1
        return [Cut.hard(tc.frame_num, self._score(tc.frame_num)) for tc in cuts]

    def flush(self) -> list[Cut]:
        self._next += self._behind  # nothing is pending inside PySceneDetect's detectors at the end
        return []

    def _score(self, index: int) -> float:
        if self._recorder is not None:
            return round(self._recorder.by_frame.pop(index, 0.0), 4)
        scores = dict(self._content)
        if not self._window:
            return round(scores.get(index, 0.0), 4)
        # The adaptive ratio, as AdaptiveDetector computes it (it keeps it only in a stats manager).
        around = [scores.get(index + d, 0.0) for d in range(-self._window, self._window + 1) if d]
        mean = sum(around) / len(around)
        return round(min(scores.get(index, 0.0) / mean, 255.0) if mean > 1e-5 else 255.0, 4)
