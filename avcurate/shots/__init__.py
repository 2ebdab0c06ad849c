"""Shot detectors: where one shot ends and the next begins, from the frames the decoder already has.

Each detector is one class behind the `ShotDetector` interface (`base.py`), chosen by `shots.detector`:
PySceneDetect's content, adaptive and histogram detectors on the CPU (`scenedetect.py`), TransNetV2, the
learned detector, on the GPU when there is one (`transnet.py`).
"""

from __future__ import annotations

from ..config import ShotConfig
from .base import SHOT, TRANSITION, Cut, ShotDetector, half_yuv


def build_detector(cfg: ShotConfig, fps: float, threads: int = 1) -> ShotDetector:
    if cfg.detector == "transnetv2":
        from .transnet import TransNetV2Detector  # imports torch: only where it is asked for

        return TransNetV2Detector(cfg, fps, threads)
    from .scenedetect import SceneDetectDetector

    return SceneDetectDetector(cfg, fps)


__all__ = ["SHOT", "TRANSITION", "Cut", "ShotDetector", "build_detector", "half_yuv"]
