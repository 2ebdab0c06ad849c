"""Signal-level scorers: how loud, how silent, how clipped; how much moves, how much is static or black; how sharp."""

from __future__ import annotations

import cv2
import numpy as np

from ..config import ScoringConfig
from .base import ClipSignals

_FLOOR_DBFS = -120.0


def dbfs(rms: np.ndarray | float) -> np.ndarray | float:
    return 20.0 * np.log10(np.maximum(rms, 10 ** (_FLOOR_DBFS / 20)))


class AudioLevelScorer:
    """Loudness (RMS, dBFS), share of silent 20 ms windows, share of clipped samples."""

    name = "audio_level"

    def __init__(self, cfg: ScoringConfig) -> None:
        self.cfg = cfg

    def score(self, signals: ClipSignals) -> dict[str, float]:
        audio = signals.audio
        if audio.size == 0:
            return {"loudness_dbfs": _FLOOR_DBFS, "silence_ratio": 1.0, "clipping_ratio": 0.0}
        mono = audio.mean(axis=0)
        window = max(1, signals.sample_rate // 50)
        usable = mono[: len(mono) // window * window].reshape(-1, window) if len(mono) >= window else mono[None, :]
        window_dbfs = dbfs(np.sqrt(np.mean(usable.astype(np.float64) ** 2, axis=1)))
        return {
            "loudness_dbfs": float(dbfs(np.sqrt(np.mean(audio.astype(np.float64) ** 2)))),
            "silence_ratio": float(np.mean(window_dbfs < self.cfg.silence_dbfs)),
            "clipping_ratio": float(np.mean(np.abs(audio) >= self.cfg.clipping_level)),
        }


class VisualActivityScorer:
    """Mean frame-to-frame luma change, share of static frames, share of black frames."""

    name = "visual_activity"

    def __init__(self, cfg: ScoringConfig) -> None:
        self.cfg = cfg

    def score(self, signals: ClipSignals) -> dict[str, float]:
        gray = signals.gray
        if gray.shape[0] == 0:
            return {"motion_score": 0.0, "static_ratio": 1.0, "black_ratio": 1.0}
        black = gray.reshape(gray.shape[0], -1).mean(axis=1) < self.cfg.black_luma
        if gray.shape[0] < 2:
            return {"motion_score": 0.0, "static_ratio": 1.0, "black_ratio": float(black.mean())}
        change = np.abs(np.diff(gray, axis=0)).reshape(gray.shape[0] - 1, -1).mean(axis=1)
        return {
            "motion_score": float(change.mean()),
            "static_ratio": float(np.mean(change < self.cfg.static_threshold)),
            "black_ratio": float(black.mean()),
        }


class SharpnessScorer:
    """Variance of the Laplacian of luma (Pech-Pacheco et al., 2000), in 0..255 units, at the output size.

    Measured on a few full-size frames a second (`scoring.sharpness_fps`), not on the scorers' quarter-size
    luma: subsampling without a low-pass filter aliases, which makes a blurred picture look sharp again.
    Blur, upscaled low resolution and heavy compression all lower it; it also depends on content (a plain
    sky scores low), so a threshold is a floor for clearly soft pictures.
    """

    name = "sharpness"

    def score(self, signals: ClipSignals) -> dict[str, float]:
        frames = signals.full_luma
        if frames is None or frames.shape[0] == 0:
            return {"sharpness": 0.0}
        values = [float(cv2.Laplacian(frame, cv2.CV_32F, ksize=1).var()) for frame in frames]
        return {"sharpness": round(float(np.median(values)), 3)}
