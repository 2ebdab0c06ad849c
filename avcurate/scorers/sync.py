"""Model-free audio-visual sync: cross-correlate an audio onset envelope with a visual change envelope.

Both envelopes mark when something starts: a rise in short-time audio energy, a rise in how much a region of
the picture changes. They are put on one fine time grid (the audio hop) and cross-correlated circularly. The
lag with the highest correlation inside [-max_offset, +max_offset] is the offset; the lags far outside that
window are what chance alignment looks like for this very clip, and the confidence says how far the peak
stands above the peaks found there.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .base import ClipSignals, SyncEstimate

_HOP_S = 0.010  # audio envelope hop: the lag grid before peak refinement
_AUDIO_FLOOR_DB = -80.0  # energies below this are treated as silence, so dither cannot make onsets
_MOTION_FLOOR = 1e-3  # mean abs luma change (0..1) below this counts as no change
_GRID = 4  # the picture is split into GRID x GRID regions, so a small event is not averaged away
_SHORT_SIDE = 64  # larger pictures are subsampled to about this: region means need no more, and it bounds cost
_FLAT = 1e-6  # an envelope with less spread than this carries no events
_LOOKBACK = 3  # frames a visual rise is measured over: covers repeated frames of sources down to ~8 fps
_MIN_FRAMES = 3  # two frame differences are needed for one visual onset
# Excess of the peak over the typical chance peak, in null standard deviations, mapped linearly to 0..1.
# Unrelated audio gives about 0 +- 1 (its peak is a chance peak); related clips of 6 s or more give 7 to 12.
_EXCESS_ZERO = 2.0
_EXCESS_FULL = 6.0

_NO_ESTIMATE = SyncEstimate(offset_ms=0.0, confidence=0.0)


@dataclass(frozen=True)
class EnvelopeSyncScorer:
    """Estimates the offset (positive: the audio lags the picture) and how much to trust it."""

    max_offset_ms: float = 500.0
    name = "envelope-xcorr"

    def estimate(self, signals: ClipSignals) -> SyncEstimate:
        gray, audio = np.asarray(signals.gray), np.asarray(signals.audio)
        if gray.ndim != 3 or gray.shape[0] < _MIN_FRAMES or signals.fps <= 0 or audio.size == 0:
            return _NO_ESTIMATE
        if signals.sample_rate <= 0 or 0 in gray.shape[1:]:
            return _NO_ESTIMATE
        window = max(round(_HOP_S * signals.sample_rate), 1)
        hop_s = window / signals.sample_rate
        n_bins = math.floor(gray.shape[0] / signals.fps / hop_s)
        if n_bins < 4:
            return _NO_ESTIMATE
        visual = _visual_onsets(gray)
        sound = _audio_onsets(audio, window, n_bins)
        if not (np.isfinite(visual).all() and np.isfinite(sound).all()):
            return _NO_ESTIMATE
        if visual.std() < _FLAT or sound.std() < _FLAT:
            return _NO_ESTIMATE
        # An audio onset lies somewhere in the window its rise ends in: on average half a hop into it.
        frame_bins = np.arange(gray.shape[0]) / signals.fps / hop_s - 0.5
        corr = _circular_xcorr(visual, frame_bins, sound, smooth_bins=1.0 / signals.fps / hop_s)
        max_lag = max(min(math.floor(self.max_offset_ms / 1000.0 / hop_s), (n_bins - 1) // 2), 0)
        lag = _refined_peak(corr, max_lag)
        guard = math.ceil(1.0 / signals.fps / hop_s) + 1
        confidence = _confidence(corr, max_lag, guard)
        if not (math.isfinite(lag) and math.isfinite(confidence)):
            return _NO_ESTIMATE
        return SyncEstimate(offset_ms=lag * hop_s * 1000.0, confidence=confidence)


def _visual_onsets(gray: np.ndarray) -> np.ndarray:
    """Per frame: mean over regions of the rise in log motion energy; entry k is the change first seen in frame k.

    The rise is taken over the largest of the previous few frames' motion, not just the last one: a repeated
    frame (a 24 fps source shown at 25 fps) then reads as a pause, not as a burst of new motion after it.
    """
    step = max(min(gray.shape[1:]) // _SHORT_SIDE, 1)
    gray = gray[:, ::step, ::step]
    frames, h, w = gray.shape
    gh, gw = min(_GRID, h), min(_GRID, w)
    crop = gray[:, : h - h % gh, : w - w % gw].astype(np.float32, copy=False)
    diff = crop[1:] - crop[:-1]
    np.abs(diff, out=diff)
    cells = diff.reshape(frames - 1, gh, h // gh, gw, w // gw)
    motion = np.einsum("fahbw->fab", cells).reshape(frames - 1, -1) / (cells.shape[2] * cells.shape[4])
    level = np.log(motion + _MOTION_FLOOR)
    padded = np.concatenate([np.repeat(level[:1], _LOOKBACK, axis=0), level])
    recent = np.max([padded[_LOOKBACK - s : -s] for s in range(1, _LOOKBACK + 1)], axis=0)
    rise = np.maximum(level - recent, 0.0).mean(axis=1)
    return np.concatenate([[0.0], rise])


def _audio_onsets(audio: np.ndarray, window: int, n_bins: int) -> np.ndarray:
    """Per hop: the rise in log energy (dB) from the previous window; entry j is an onset inside window j."""
    mono = audio.reshape(-1, audio.shape[-1]).astype(np.float32).mean(axis=0)
    count = min(mono.size // window, n_bins)
    energy = np.square(mono[: count * window].reshape(count, window)).mean(axis=1)
    level = 10.0 * np.log10(energy + 10.0 ** (_AUDIO_FLOOR_DB / 10.0))
    # Audio shorter than the picture is silence at the floor from there on.
    level = np.pad(level, (0, n_bins - count), constant_values=_AUDIO_FLOOR_DB)
    return np.concatenate([[0.0], np.maximum(np.diff(level), 0.0)])


def _circular_xcorr(visual: np.ndarray, frame_bins: np.ndarray, sound: np.ndarray, smooth_bins: float) -> np.ndarray:
    """corr[lag] = sum over frames of visual(t) * sound(t + lag), lags in hops, circular over the clip.

    The sound envelope is smoothed with a triangle one frame wide each side, matching the picture's time
    resolution and making the peak smooth enough to refine between lags.
    """
    n = sound.size
    v = (visual - visual.mean()) / visual.std()
    s = (sound - sound.mean()) / sound.std()
    # Frames between two hops are shared between them, linearly.
    low = np.floor(frame_bins).astype(np.int64)
    frac = frame_bins - low
    on_grid = np.zeros(n)
    np.add.at(on_grid, low % n, v * (1.0 - frac))
    np.add.at(on_grid, (low + 1) % n, v * frac)
    offsets = np.arange(n)
    distance = np.minimum(offsets, n - offsets)
    kernel = np.maximum(1.0 - distance / max(smooth_bins, 1.0), 0.0)
    spectrum = np.conj(np.fft.rfft(on_grid)) * np.fft.rfft(s) * np.fft.rfft(kernel)
    return np.fft.irfft(spectrum, n) / (visual.size * kernel.sum())


def _refined_peak(corr: np.ndarray, max_lag: int) -> float:
    """The best lag in [-max_lag, max_lag], refined by a parabola through it and its neighbours."""
    lags = np.arange(-max_lag, max_lag + 1)
    values = corr[lags % corr.size]
    best = int(np.argmax(values))
    if best == 0 or best == values.size - 1:
        return float(lags[best])
    left, mid, right = values[best - 1], values[best], values[best + 1]
    curvature = left - 2.0 * mid + right
    shift = 0.5 * (left - right) / curvature if curvature < 0 else 0.0
    return float(lags[best] + np.clip(shift, -0.5, 0.5))


def _confidence(corr: np.ndarray, max_lag: int, guard: int) -> float:
    """How far the in-window peak stands above the peaks chance gives, from lags outside the window.

    Lags further than max_lag + guard from zero pair the picture with unrelated stretches of its own audio.
    Sliding a window as wide as the search window over them gives the typical chance peak; the excess of the
    real peak over it, in null standard deviations, maps to 0..1. Sparse events can leave the null lags of a
    short clip nearly flat, so the spread over all lags is a floor on the null spread: that only ever lowers
    the confidence.
    """
    n = corr.size
    width = 2 * max_lag + 1
    null = corr[max_lag + guard + 1 : n - max_lag - guard]
    spread = max(float(null.std()), float(corr.std())) if null.size else 0.0
    if null.size < max(width // 4, 8) or spread <= 0:
        return 0.0
    peak = corr[np.arange(-max_lag, max_lag + 1) % n].max()
    chance_peak = np.lib.stride_tricks.sliding_window_view(null, min(width, null.size)).max(axis=1).mean()
    excess = (peak - chance_peak) / spread
    return float(np.clip((excess - _EXCESS_ZERO) / (_EXCESS_FULL - _EXCESS_ZERO), 0.0, 1.0))
