"""PySceneDetect's own detectors, fed the decoder's frames (no second decode)."""

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


class _LastScore:
    """A stand-in for PySceneDetect's StatsManager that keeps the latest frame's score (the histogram detector
    reports its score only there). ContentDetector computes edge maps for a stats manager, so it gets none."""

    last = 0.0

    def set_metrics(self, timecode: FrameTimecode, metrics: dict[str, float]) -> None:
        for value in metrics.values():
            self.last = 1.0 - value  # correlation -> difference, as its threshold reads


class SceneDetectDetector:
    """`content` (luma or HSV change), `adaptive` (the same against its neighbours') or `histogram` (luma histogram)."""

    def __init__(self, cfg: ShotConfig, fps: float) -> None:
        self.name = cfg.detector
        min_len = max(1, round(cfg.min_shot_s * fps))
        self._fps = Fraction(fps).limit_denominator(1001)
        self._window = 0  # frames each side the adaptive ratio averages over
        self._recorder: _LastScore | None = None
        if cfg.detector == "content":
            # Suppress (not merge) cuts closer than min_len: decided on the frame itself, so no look-ahead.
            self._detector = ContentDetector(min_scene_len=min_len, filter_mode=FlashFilter.Mode.SUPPRESS,
                                             luma_only=cfg.luma_only, **_threshold("threshold", cfg))
        elif cfg.detector == "adaptive":
            self._window = 2
            self._detector = AdaptiveDetector(min_scene_len=min_len, window_width=self._window,
                                              luma_only=cfg.luma_only, **_threshold("adaptive_threshold", cfg))
        elif cfg.detector == "histogram":
            self._detector = HistogramDetector(min_scene_len=min_len, **_threshold("threshold", cfg))
            self._recorder = _LastScore()
            self._detector.stats_manager = self._recorder
        else:
            raise ValueError(f"unknown shot detector {cfg.detector!r}")
        self._behind = max(self._detector.event_buffer_length, self._window)
        self._content: deque[tuple[int, float]] = deque(maxlen=2 * self._behind + 2 * self._window + 2)  # recent scores
        self._next = 0

    @property
    def settled(self) -> int:
        return max(self._next - self._behind, 0)

    def push(self, index: int, yuv: np.ndarray) -> list[Cut]:
        bgr = cv2.cvtColor(np.ascontiguousarray(yuv.transpose(1, 2, 0)), cv2.COLOR_YUV2BGR)
        cuts = self._detector.process_frame(FrameTimecode(index, self._fps), bgr)
        score = self._recorder.last if self._recorder else self._detector._frame_score
        self._content.append((index, float(score or 0.0)))
        self._next = index + 1
        return [Cut.hard(tc.frame_num, self._score(tc.frame_num)) for tc in cuts]

    def flush(self) -> list[Cut]:
        self._next += self._behind  # nothing is pending inside PySceneDetect's detectors at the end
        return []

    def _score(self, index: int) -> float:
        scores = dict(self._content)
        if not self._window:
            return round(scores.get(index, 0.0), 4)
        # The adaptive ratio, as AdaptiveDetector computes it (it keeps it only in a stats manager).
        around = [scores.get(index + d, 0.0) for d in range(-self._window, self._window + 1) if d]
        mean = sum(around) / len(around)
        return round(min(scores.get(index, 0.0) / mean, 255.0) if mean > 1e-5 else 255.0, 4)


def _threshold(name: str, cfg: ShotConfig) -> dict[str, float]:
    """The configured threshold under the detector's own argument name; none given: the library's default."""
    return {} if cfg.threshold is None else {name: cfg.threshold}
