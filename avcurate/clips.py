"""Cut a stream of frames into clips: at shot boundaries and at the maximum length."""

from __future__ import annotations

import numpy as np

from .config import ClipConfig

SHOT = "shot"
MAX_LENGTH = "max_length"
END = "end"


class ShotDetector:
    """Flags a cut when the colour histogram of a frame differs enough from the previous frame's.

    Works on the yuv420p planes the decoder already has (no colour conversion), subsampled to a quarter of the
    frame (`decode.quarter_yuv`). The distance is half the L1 distance of normalised Y/U/V histograms (32 luma
    bins, 16 per chroma plane), in [0, 1]: gradual motion stays low, a cut jumps.
    """

    # One bincount for all three planes: a plane's values shift down to its bin count, then move to its bin range.
    _SHIFT = np.array([3, 4, 4], np.uint8).reshape(3, 1, 1)
    _OFFSET = np.array([0, 32, 48], np.uint8).reshape(3, 1, 1)
    _BINS = 64

    def __init__(self, threshold: float) -> None:
        self.threshold = threshold
        self._previous: np.ndarray | None = None
        self.last_distance = 0.0

    def is_cut(self, yuv: np.ndarray) -> bool:
        """`yuv`: uint8 [3, h, w], the three planes on one grid."""
        codes = (yuv >> self._SHIFT) + self._OFFSET
        hist = np.bincount(codes.ravel(), minlength=self._BINS) * (1.0 / codes.size)
        previous, self._previous = self._previous, hist
        if previous is None:
            return False
        self.last_distance = float(np.abs(hist - previous).sum() * 0.5)
        return self.last_distance > self.threshold


class Segmenter:
    """Decides, frame by frame, where clips end. Pieces shorter than the minimum are reported as short."""

    def __init__(self, cfg: ClipConfig, fps: float) -> None:
        self.cfg = cfg
        self.max_frames = max(1, int(round(cfg.max_s * fps)))
        self.min_frames = max(1, int(round(cfg.min_s * fps)))
        self.detector = ShotDetector(cfg.shot_threshold)

    def boundary(self, frames_in_clip: int, yuv: np.ndarray) -> str | None:
        """Called for each new frame (`quarter_yuv`) before it joins the current clip: why to close the clip first."""
        cut = self.detector.is_cut(yuv)
        if frames_in_clip == 0:
            return None
        if cut:
            return SHOT
        if frames_in_clip >= self.max_frames:
            return MAX_LENGTH
        return None

    def long_enough(self, n_frames: int) -> bool:
        return n_frames >= self.min_frames
