"""What a shot detector sees and says."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import av
import numpy as np

from ..decode import plane

SHOT = "shot"  # a hard cut: the new shot starts at `Cut.index`
TRANSITION = "transition"  # a gradual one (dissolve, fade): frames [start, index) belong to neither shot


@dataclass(frozen=True)
class Cut:
    """A boundary between shots. For a hard cut `start == index`; a transition's frames are dropped."""

    index: int  # first frame of the new shot
    kind: str  # SHOT or TRANSITION
    score: float  # the detector's own score at the cut (what its threshold is compared with)
    start: int  # first frame that leaves the old shot

    @classmethod
    def hard(cls, index: int, score: float) -> "Cut":
        return cls(index, SHOT, score, index)


class ShotDetector(Protocol):
    """Frames go in one at a time, in order; cuts come out once they are certain.

    A detector may need frames after a cut to decide on it (the adaptive rule's window, a dissolve's span,
    TransNetV2's window):
    `settled` is the first frame whose cut decision is not final yet. Frames before it can be cut and encoded.
    """

    name: str

    @property
    def settled(self) -> int: ...

    def push(self, index: int, yuv: np.ndarray) -> list[Cut]: ...

    def flush(self) -> list[Cut]: ...


def quarter_yuv(frame: av.VideoFrame) -> np.ndarray:
    """Y, U and V of a yuv420p frame on one grid a quarter of the frame's size, uint8 [3, ceil(h/4), ceil(w/4)].

    Every 4th luma sample and every 2nd chroma sample: 114x64 at the default output size, what the shot detectors
    and the scorers look at. PySceneDetect finds the same cuts on it as on a grid twice as fine (docs/benchmarks.md),
    and TransNetV2 needs only 48x27.
    """
    y, u, v = (plane(frame, i) for i in range(3))
    return np.stack((y[::4, ::4], u[::2, ::2], v[::2, ::2]))
