"""EnvelopeSyncScorer on real media: clips made by avcurate.synth with ffmpeg, decoded back with PyAV."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from avcurate import synth
from avcurate.config import Config
from avcurate.model import Source
from avcurate.process import process_source
from avcurate.scorers.base import ClipSignals, SyncEstimate
from avcurate.scorers.sync import EnvelopeSyncScorer

FPS = 25
FRAME_MS = 1000.0 / FPS
SR = 16000
SHIFTS_MS = [-300, -200, -120, -40, 0, 40, 100, 200, 300]


def _clip(tmp_path: Path, decode_fps: float = FPS, **kwargs: object) -> ClipSignals:
    path = synth.write_event_video(tmp_path / "clip.mp4", **kwargs)  # type: ignore[arg-type]
    return synth.decode_signals(path, fps=decode_fps, sample_rate=SR)


def _estimate(signals: ClipSignals, **kwargs: float) -> SyncEstimate:
    return EnvelopeSyncScorer(**kwargs).estimate(signals)


# --- the generated media is what it claims to be (the ground truth the scorer is held to) ---


@pytest.mark.parametrize("shift_ms", [0, -120, 200])
def test_synth_sounds_and_flashes_land_on_the_events(tmp_path: Path, shift_ms: int) -> None:
    signals = _clip(tmp_path, audio_shift_ms=shift_ms, seed=5)
    events = synth.random_events(6.0, seed=5, fps=FPS)
    assert signals.gray.shape == (150, 64, 85) and signals.gray.dtype == np.float32
    assert signals.audio.shape == (1, 6 * SR) and signals.audio.dtype == np.float32
    assert 0.0 <= signals.gray.min() and signals.gray.max() <= 1.0

    brightening = np.diff(signals.gray.max(axis=(1, 2)))
    flash_frames = np.flatnonzero(brightening > 0.3) + 1
    assert flash_frames.tolist() == [round(t * FPS) for t in events]

    loud = np.abs(signals.audio[0]) > 0.1
    audible = [t + shift_ms / 1000.0 for t in events if 0.03 <= t + shift_ms / 1000.0 < 5.9]
    assert len(audible) >= len(events) - 1
    for t in audible:
        start = round((t - 0.03) * SR)
        onset = (start + int(np.argmax(loud[start : start + round(0.1 * SR)]))) / SR
        assert abs(onset - t) < 0.002, (t, onset)


def test_synth_unrelated_audio_follows_other_events(tmp_path: Path) -> None:
    signals = _clip(tmp_path, unrelated_audio=True, seed=5)
    events = synth.random_events(6.0, seed=5, fps=FPS)
    loud = np.abs(signals.audio[0]) > 0.1
    heard = sum(bool(loud[round(t * SR) : round((t + 0.02) * SR)].any()) for t in events)
    assert heard < len(events) / 2


# --- offsets and confidence on related clips ---


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("shift_ms", SHIFTS_MS)
def test_recovers_known_shift_within_a_frame(tmp_path: Path, shift_ms: int, seed: int) -> None:
    estimate = _estimate(_clip(tmp_path, audio_shift_ms=shift_ms, seed=seed))
    assert abs(estimate.offset_ms - shift_ms) <= FRAME_MS, estimate
    assert estimate.confidence > 0.5, estimate


@pytest.mark.parametrize("shift_ms", [-67, 125, 253])
def test_offset_is_refined_below_the_frame_and_lag_grid(tmp_path: Path, shift_ms: int) -> None:
    estimate = _estimate(_clip(tmp_path, audio_shift_ms=shift_ms, seed=2))
    assert abs(estimate.offset_ms - shift_ms) <= FRAME_MS / 4, estimate


@pytest.mark.parametrize("seed", [0, 1])
def test_repeated_frames_do_not_fake_events(tmp_path: Path, seed: int) -> None:
    # A 25 fps source shown at 30 fps repeats every 6th frame: that pause must not read as a 5 Hz visual onset.
    estimate = _estimate(_clip(tmp_path, decode_fps=30.0, audio_shift_ms=80, seed=seed))
    assert abs(estimate.offset_ms - 80) <= FRAME_MS, estimate
    assert estimate.confidence > 0.5, estimate


# --- low confidence where there is nothing to align ---


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_unrelated_audio_gives_low_confidence(tmp_path: Path, seed: int) -> None:
    assert _estimate(_clip(tmp_path, unrelated_audio=True, seed=seed)).confidence < 0.2


@pytest.mark.parametrize("kwargs", [{"silent_audio": True}, {"static_picture": True}], ids=["silent", "static"])
def test_silent_audio_or_static_picture_gives_no_confidence(tmp_path: Path, kwargs: dict[str, bool]) -> None:
    assert _estimate(_clip(tmp_path, seed=3, **kwargs)).confidence < 0.05


def test_offset_beyond_the_search_range_is_not_trusted(tmp_path: Path) -> None:
    signals = _clip(tmp_path, audio_shift_ms=300, seed=0)
    # The clip itself is easy: searched widely enough, its 300 ms is found with confidence...
    found = _estimate(signals, max_offset_ms=500.0)
    assert abs(found.offset_ms - 300.0) <= FRAME_MS and found.confidence > 0.5, found
    # ...so a narrow search's low confidence says the lag lies outside it (a clamped lag at the edge proves nothing).
    outside = _estimate(signals, max_offset_ms=150.0)
    assert outside.confidence < 0.2, outside


# --- degenerate inputs never raise ---


def _signals(frames: int, samples: int, side: int = 64, fill: Callable[..., np.ndarray] | None = None) -> ClipSignals:
    make = fill or (lambda *shape: np.random.default_rng(0).random(shape, dtype=np.float32))
    return ClipSignals(audio=make(1, samples), sample_rate=SR, gray=make(frames, side, side), fps=FPS)


DEGENERATE = {
    "empty": _signals(0, 0),
    "one-frame": _signals(1, 640),
    "two-frames": _signals(2, 1280),
    "no-audio": _signals(50, 0),
    "no-audio-channels": ClipSignals(np.zeros((0, SR), np.float32), SR, np.zeros((25, 8, 8), np.float32), FPS),
    "no-pixels": ClipSignals(np.zeros((1, SR), np.float32), SR, np.zeros((25, 0, 8), np.float32), FPS),
    "one-pixel": _signals(25, SR, side=1),
    "constant": _signals(50, 2 * SR, fill=lambda *shape: np.full(shape, 0.5, np.float32)),
    "zeros": _signals(50, 2 * SR, fill=lambda *shape: np.zeros(shape, np.float32)),
    "nan": _signals(50, 2 * SR, fill=lambda *shape: np.full(shape, np.nan, np.float32)),
    "audio-shorter-than-picture": _signals(50, 10),
    "zero-fps": ClipSignals(np.zeros((1, SR), np.float32), SR, np.zeros((25, 8, 8), np.float32), 0.0),
    "zero-rate": ClipSignals(np.zeros((1, SR), np.float32), 0, np.zeros((25, 8, 8), np.float32), FPS),
}


@pytest.mark.parametrize("name", list(DEGENERATE))
def test_degenerate_inputs_do_not_raise(name: str) -> None:
    estimate = _estimate(DEGENERATE[name])
    assert math.isfinite(estimate.offset_ms) and 0.0 <= estimate.confidence <= 1.0
    assert estimate.confidence < 0.05


@pytest.mark.parametrize("name", ["empty", "one-frame", "no-audio", "no-pixels", "constant", "zeros", "nan"])
def test_inputs_without_content_give_the_null_estimate(name: str) -> None:
    assert _estimate(DEGENERATE[name]) == SyncEstimate(offset_ms=0.0, confidence=0.0)


def test_zero_search_range_does_not_raise() -> None:
    estimate = _estimate(_signals(250, 10 * SR), max_offset_ms=0.0)
    assert estimate.offset_ms == 0.0 and 0.0 <= estimate.confidence <= 1.0


def test_scorer_is_fast_on_a_ten_second_clip() -> None:
    # 10 s at 25 fps, 64 px luma, 16 kHz: the budget is tens of ms, this catches only gross regressions.
    signals = _signals(250, 10 * SR)
    scorer = EnvelopeSyncScorer()
    timings = []
    for _ in range(5):
        start = time.perf_counter()
        scorer.estimate(signals)
        timings.append(time.perf_counter() - start)
    assert min(timings) < 0.1


# Through the pipeline's own decoder, cutter and scorer wiring, not just the scorer on hand-decoded signals.
PIPELINE_CFG = Config.from_dict({"filters": [], "clips": {"min_s": 1.0, "max_s": 20.0}})


@pytest.mark.parametrize("shift_ms", [-300.0, 0.0, 180.0, 300.0])
def test_pipeline_scores_recover_known_offsets(tmp_path: Path, shift_ms: float) -> None:
    path = synth.write_event_video(tmp_path / "ev.mp4", duration_s=8.0, audio_shift_ms=shift_ms, seed=11)
    result = process_source(Source.from_uri(str(path)), PIPELINE_CFG, str(tmp_path / "staged"), str(tmp_path))
    (clip,) = result.clips
    assert abs(clip.scores.av_offset_ms - shift_ms) <= FRAME_MS
    assert clip.scores.sync_confidence > 0.5


def test_pipeline_scores_unrelated_audio_with_low_confidence(tmp_path: Path) -> None:
    path = synth.write_event_video(tmp_path / "ev.mp4", duration_s=8.0, unrelated_audio=True, seed=12)
    result = process_source(Source.from_uri(str(path)), PIPELINE_CFG, str(tmp_path / "staged"), str(tmp_path))
    (clip,) = result.clips
    assert clip.scores.sync_confidence < 0.2
