"""Gradual transitions (dissolves, fades to and from black) for the CPU detectors, which see only hard cuts.

A dissolve from shot A to shot B shows (1 - a) A + a B with a rising from 0 to 1, so across it every frame is
a linear mix of the frames at its ends. For each span of L frames ending at the newest frame, the middle and
quarter frames are compared with that mix: a dissolve fits it closely; camera motion, which moves content
rather than blending it, leaves a residual of the same order as the change itself; a hard cut puts all the
change into one step. A blend of two different pictures is also flatter than either (its spatial variance
dips mid-way, Alattar 1993), which smooth content in motion (a drifting gradient, a lighting change) is not.
Where all of that holds, each frame's share `a` of B (its projection onto the A-to-B difference) marks the
transition's frames: those with 0.05 < a < 0.95.
"""

from __future__ import annotations

from collections import deque

import numpy as np

from .base import TRANSITION, Cut, ShotDetector

SPANS = (8, 16, 32)  # frames: dissolves of about 0.3 to 1.3 s at 25 fps, longer ones seen as their parts
_MIN_CHANGE = 10.0  # mean abs change (0..255) between the span's ends: less is too little to tell
_MAX_RESIDUAL = 0.25  # the mix fits within this share of that change (camera motion: 0.37 and more)
_MAX_STEP = 0.4  # no single step holds more than this share of the change (else it is a hard cut)
_MAX_FLATNESS = 0.8  # the middle frame's spatial variance, against the ends' mean: a blend is flatter than either
_MAX_FRAMES = 4 * max(SPANS)  # a transition is closed at this length, so the look-ahead stays bounded
_LOW, _HIGH = 0.05, 0.95  # a frame with less than 5 % of either shot in it belongs to the other


class DissolveFinder:
    def __init__(self) -> None:
        self._frames: deque[tuple[int, np.ndarray]] = deque(maxlen=max(SPANS) + 1)
        self._span: tuple[int, int, float] | None = None  # (first, last frame, best fit) of the open transition
        self._next = 0

    @property
    def settled(self) -> int:
        horizon = max(self._next - max(SPANS) - 1, 0)  # the longest span's first frame
        return min(horizon, self._span[0]) if self._span else horizon

    def push(self, index: int, yuv: np.ndarray) -> list[Cut]:
        self._frames.append((index, yuv[:, ::2, ::2].astype(np.float32)))
        self._next = index + 1
        found = [span for span in map(self._fit, SPANS) if span is not None]
        cuts: list[Cut] = []
        for first, last, score in found:
            if self._span and first <= self._span[1] + 1:
                self._span = (min(self._span[0], first), max(self._span[1], last), max(self._span[2], score))
            else:
                cuts += self._close()
                self._span = (first, last, score)
        if self._span and (self._span[1] < self._next - max(SPANS) or self._next - self._span[0] > _MAX_FRAMES):
            cuts += self._close()
        return cuts

    def flush(self) -> list[Cut]:
        return self._close()

    def _close(self) -> list[Cut]:
        span, self._span = self._span, None
        return [Cut(span[1] + 1, TRANSITION, round(span[2], 4), span[0])] if span else []

    def _fit(self, length: int) -> tuple[int, int, float] | None:
        if len(self._frames) <= length:
            return None
        window = [frame for _, frame in list(self._frames)[-length - 1 :]]
        a, b = window[0], window[-1]
        diff = b - a
        change = float(np.abs(diff).mean())
        if change < _MIN_CHANGE:
            return None
        residual = max(float(np.abs(window[k * length // 4] - (a + diff * (k / 4))).mean()) for k in (1, 2, 3))
        if residual > _MAX_RESIDUAL * change:
            return None
        steps = max(float(np.abs(window[i + 1] - window[i]).mean()) for i in range(length))
        if steps > _MAX_STEP * change:
            return None
        if _variance(window[length // 2]) > _MAX_FLATNESS * (_variance(a) + _variance(b)) / 2:
            return None
        norm = float((diff * diff).sum())
        shares = [float(((f - a) * diff).sum()) / norm for f in window]
        inside = [i for i, share in enumerate(shares) if _LOW < share < _HIGH]
        if not inside:
            return None
        first_index = self._frames[-length - 1][0]
        return first_index + inside[0], first_index + inside[-1], 1.0 - residual / change


class WithDissolves:
    """A hard-cut detector and a `DissolveFinder` over the same frames, as one detector (`shots.dissolves`)."""

    def __init__(self, detector: ShotDetector) -> None:
        self.detector, self.dissolves = detector, DissolveFinder()
        self.name = detector.name

    @property
    def settled(self) -> int:
        return min(self.detector.settled, self.dissolves.settled)

    def push(self, index: int, yuv: np.ndarray) -> list[Cut]:
        return self.detector.push(index, yuv) + self.dissolves.push(index, yuv)

    def flush(self) -> list[Cut]:
        return self.detector.flush() + self.dissolves.flush()


def _variance(frame: np.ndarray) -> float:
    return float(frame.reshape(frame.shape[0], -1).var(axis=1).sum())
