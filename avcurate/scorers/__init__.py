"""Clip scorers. Each is one class with a `name` and `score(ClipSignals) -> {score field: value}`."""

from __future__ import annotations

from typing import Protocol

from ..config import ScoringConfig
from .base import ClipSignals, SyncScorer
from .signal import AudioLevelScorer, SharpnessScorer, VisualActivityScorer
from .sync import EnvelopeSyncScorer


class Scorer(Protocol):
    name: str

    def score(self, signals: ClipSignals) -> dict[str, float]: ...


class SyncScores:
    """Adapts any `SyncScorer` to the scorer interface (fills `av_offset_ms` and `sync_confidence`)."""

    def __init__(self, estimator: SyncScorer) -> None:
        self.estimator = estimator
        self.name = f"sync/{estimator.name}"

    def score(self, signals: ClipSignals) -> dict[str, float]:
        estimate = self.estimator.estimate(signals)
        return {"av_offset_ms": estimate.offset_ms, "sync_confidence": estimate.confidence}


def build_scorers(cfg: ScoringConfig) -> list[Scorer]:
    return [
        AudioLevelScorer(cfg),
        VisualActivityScorer(cfg),
        SharpnessScorer(),
        SyncScores(EnvelopeSyncScorer(max_offset_ms=cfg.sync_max_offset_ms)),
    ]
