"""Cut a stream of frames into clips: at shot boundaries and at the maximum length."""

from __future__ import annotations

import numpy as np

from .config import ClipConfig

SHOT = "shot"
MAX_LENGTH = "max_length"
END = "end"


class ShotDetector:
    """Flags a cut when the colour histogram of a frame differs enough from the previous frame's.

    Works on the yuv420p planes the decoder already has (no colour conversion). The distance is half the
    L1 distance of normalised Y/U/V histograms, in [0, 1]: gradual motion stays low, a cut jumps.
    """

    def __init__(self, threshold: float) -> None:
        self.threshold = threshold
        self._previous: np.ndarray | None = None
        self.last_distance = 0.0

    def is_cut(self, y: np.ndarray, u: np.ndarray, v: np.ndarray) -> bool:
        hist = np.concatenate([_hist(y[::4, ::4], 32), _hist(u[::2, ::2], 16), _hist(v[::2, ::2], 16)]) / 3.0
        previous, self._previous = self._previous, hist
        if previous is None:
            return False
        self.last_distance = float(0.5 * np.abs(hist - previous).sum())
        return self.last_distance > self.threshold


def _hist(plane: np.ndarray, bins: int) -> np.ndarray:
    counts = np.bincount((plane.ravel() >> (8 - int(np.log2(bins)))).astype(np.intp), minlength=bins)
    return counts / max(1, plane.size)


class Segmenter:
    """Decides, frame by frame, where clips end. Pieces shorter than the minimum are reported as short."""

    def __init__(self, cfg: ClipConfig, fps: float) -> None:
        self.cfg = cfg
        self.max_frames = max(1, int(round(cfg.max_s * fps)))
        self.min_frames = max(1, int(round(cfg.min_s * fps)))
        self.detector = ShotDetector(cfg.shot_threshold)

    def boundary(self, frames_in_clip: int, y: np.ndarray, u: np.ndarray, v: np.ndarray) -> str | None:
        """Called for each new frame before it joins the current clip: the reason to close the clip first."""
        cut = self.detector.is_cut(y, u, v)
        if frames_in_clip == 0:
            return None
        if cut:
            return SHOT
        if frames_in_clip >= self.max_frames:
            return MAX_LENGTH
        return None

    def long_enough(self, n_frames: int) -> bool:
        return n_frames >= self.min_frames
