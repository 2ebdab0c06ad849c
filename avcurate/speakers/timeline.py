"""A source's speech and speaker turns, cut to one clip: what the clip's metadata and speaker rules see."""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from .base import Segment, Turn

_MIN_SPEAKER_S = 0.3  # a speaker with less than this in a clip (a turn's tail across a cut) is not counted
_GRID_S = 0.01  # resolution of the overlap and share arithmetic


@dataclass(frozen=True)
class ClipSpeech:
    segments: list[Segment]  # Silero VAD's speech, clip-relative
    turns: list[Turn]  # diarized turns, clip-relative (empty without diarization)
    duration_s: float
    diarized: bool
    overlap_measured: bool = True  # False for a backend that gives each instant one speaker (offline)

    @property
    def speech_ratio(self) -> float:
        return round(sum(s.duration_s for s in self.segments) / self.duration_s, 4) if self.duration_s > 0 else 0.0

    @functools.cached_property
    def _speaker_grid(self) -> tuple[np.ndarray, list[str]]:
        speakers = sorted({t.speaker for t in self.turns})
        grid = np.zeros((len(speakers), max(1, round(self.duration_s / _GRID_S))), bool)
        for turn in self.turns:
            grid[speakers.index(turn.speaker), round(turn.start_s / _GRID_S) : round(turn.end_s / _GRID_S)] = True
        return grid, speakers

    @property
    def num_speakers(self) -> int | None:
        if not self.diarized:
            return None
        grid, _ = self._speaker_grid
        return int((grid.sum(axis=1) * _GRID_S >= _MIN_SPEAKER_S).sum())

    @property
    def dominant_share(self) -> float | None:
        """Of the time anyone speaks, the share the most talkative speaker speaks in."""
        if not self.diarized:
            return None
        grid, _ = self._speaker_grid
        talking = grid.any(axis=0).sum()
        return round(float(grid.sum(axis=1).max() / talking), 4) if talking else None

    @property
    def overlap_ratio(self) -> float | None:
        """Of the time anyone speaks, the share two or more speak in at once."""
        if not (self.diarized and self.overlap_measured):
            return None
        grid, _ = self._speaker_grid
        talking = grid.any(axis=0).sum()
        return round(float((grid.sum(axis=0) >= 2).sum() / talking), 4) if talking else None

    def stretches(self) -> list[tuple[float, float, str | None]]:
        """What lip sync assigns to faces: each turn, or each speech segment when nobody was diarized."""
        if self.diarized:
            return [(t.start_s, t.end_s, t.speaker) for t in self.turns]
        return [(s.start_s, s.end_s, None) for s in self.segments]


def clip_speech(
    segments: list[Segment], turns: list[Turn] | None, start_s: float, end_s: float, overlap_measured: bool = True
) -> ClipSpeech:
    """The parts of `segments` and `turns` (source times) inside [start_s, end_s), in clip time (rounded to ms)."""

    def cut(a: float, b: float) -> tuple[float, float] | None:
        lo, hi = max(a, start_s) - start_s, min(b, end_s) - start_s
        return (round(lo, 3), round(hi, 3)) if hi - lo > 1e-3 else None

    clip_segments = [Segment(*span) for s in segments if (span := cut(s.start_s, s.end_s))]
    clip_turns = [Turn(*span, t.speaker) for t in turns or [] if (span := cut(t.start_s, t.end_s))]
    return ClipSpeech(clip_segments, clip_turns, end_s - start_s, turns is not None, overlap_measured)
