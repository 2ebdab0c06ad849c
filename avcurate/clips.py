"""Where clips end: at the shot detector's cuts (`avcurate/shots/`), at the maximum length, at the end (of the
source, or of the span a worker curates: `avcurate/spans.py`)."""

from __future__ import annotations

from .config import ClipConfig

MAX_LENGTH = "max_length"
END = "end"
SPAN_END = "span_end"  # the end of a span of a split source: the next span starts a new clip there


class Segmenter:
    """Clip lengths in frames: shots longer than the maximum are split, pieces shorter than the minimum dropped."""

    def __init__(self, cfg: ClipConfig, fps: float) -> None:
        self.max_frames = max(1, int(round(cfg.max_s * fps)))
        self.min_frames = max(1, int(round(cfg.min_s * fps)))

    def too_long(self, frames_in_clip: int) -> bool:
        """Whether a clip of this many frames must close before it takes another."""
        return frames_in_clip >= self.max_frames

    def long_enough(self, n_frames: int) -> bool:
        return n_frames >= self.min_frames
