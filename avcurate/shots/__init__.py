"""Shot detectors: where one shot ends and the next begins, from the frames the decoder already has.

Each detector is one class behind the `ShotDetector` interface (`base.py`), chosen by `shots.detector`:
PySceneDetect's adaptive rule on the decoder's luma, vectorised (`luma.py`, the default); PySceneDetect's own
content, adaptive and histogram detectors (`scenedetect.py`); TransNetV2, the learned detector, on the GPU when
there is one (`transnet.py`). The CPU ones find dissolves and fades with `dissolve.py`.
"""

from __future__ import annotations

from ..config import ShotConfig
from .base import SHOT, TRANSITION, Cut, ShotDetector, quarter_yuv
from .dissolve import WithDissolves


def build_detector(cfg: ShotConfig, fps: float, threads: int = 1) -> ShotDetector:
    if cfg.detector == "transnetv2":
        from .transnet import TransNetV2Detector  # imports torch: only where it is asked for

        return TransNetV2Detector(cfg, fps, threads)
    detector: ShotDetector
    if cfg.detector == "luma":
        from .luma import LumaAdaptiveDetector

        detector = LumaAdaptiveDetector(cfg, fps)
    else:
        from .scenedetect import SceneDetectDetector

        detector = SceneDetectDetector(cfg, fps)
    return WithDissolves(detector) if cfg.dissolves else detector


__all__ = ["SHOT", "TRANSITION", "Cut", "ShotDetector", "build_detector", "quarter_yuv"]
