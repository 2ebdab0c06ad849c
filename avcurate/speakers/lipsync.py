"""Which face is speaking, and its lip-sync offset: a face track's mouth scored against the clip's speech.

A backend (`LipSyncBackend`) turns a track's per-frame crops and the clip's audio into a similarity for every
frame and audio lag. Everything after that is shared, and follows SyncNet's conventions (Chung & Zisserman,
"Out of time", 2016): averaged over frames, the similarity is a curve over lags; the offset is its best lag,
and the confidence how far that best value stands above the curve's median (SyncNet's median - min distance).

- `MouthMotionSync` (default, model-free): how open the mouth is against how loud the sound is. Speech is
  loud when the mouth is open; a still face, or a face that moves out of step with the sound, does not
  correlate.
- `SyncNetLipSync` (avcurate/speakers/syncnet.py): the learned model, with local weights.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from ..config import FacesConfig
from .base import Face, LipSyncBackend

if TYPE_CHECKING:
    from .stage import TrackSync

_MOUTH_SIZE = (48, 32)  # width, height of the mouth crop the model-free backend keeps (uint8 luma)
# Mean change between consecutive crops (grey levels) under which a mouth counts as still: compression noise and
# a detector's smoothed jitter stay under 0.5, talking mouths of the generated faces move 3 on average.
_MOTION_FLOOR = 1.0
_SLOW_S = 0.4  # change slower than this (a moving average over it) is removed before correlating
_LEVEL_FLOOR_DB = -60.0  # sound quieter than this counts as silence, so dither does not make level changes


def mouth_box(face: Face) -> tuple[float, float, float, float]:
    """Where the mouth and jaw are: from the mouth corners when the detector gives them, else from the box.

    Wide enough for both lips and tall enough for the jaw to drop into (1.8 x 1.4 mouth widths)."""
    x0, y0, x1, y1 = face.box
    if face.landmarks is not None:
        left, right = face.landmarks[3], face.landmarks[4]
        cx, cy = (left + right) / 2.0
        width = max(float(np.hypot(*(right - left))), 0.3 * (x1 - x0))
    else:  # frontal faces: the mouth sits about three quarters down the box, 40% of its width wide
        cx, cy, width = (x0 + x1) / 2.0, y0 + 0.76 * (y1 - y0), 0.4 * (x1 - x0)
    return (cx - 0.9 * width, cy - 0.5 * width, cx + 0.9 * width, cy + 0.9 * width)


def mouth_crop(rgb: np.ndarray, face: Face) -> np.ndarray:
    """The mouth box resampled to a fixed size, at sub-pixel position: a box that moves by a fraction of a pixel
    (a detector's jitter on a still face) then moves the crop by as little, instead of jumping a whole pixel."""
    import cv2

    x0, y0, x1, y1 = mouth_box(face)
    out_w, out_h = _MOUTH_SIZE
    height, width = rgb.shape[:2]
    left, top = max(int(math.floor(x0)) - 1, 0), max(int(math.floor(y0)) - 1, 0)
    right, bottom = min(int(math.ceil(x1)) + 2, width), min(int(math.ceil(y1)) + 2, height)
    if right - left < 2 or bottom - top < 2:
        return np.zeros((out_h, out_w), np.uint8)
    luma = rgb[top:bottom, left:right].astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    sx, sy = (x1 - x0) / out_w, (y1 - y0) / out_h
    # Output pixel (u, v) samples the region at x0 + (u + 0.5) * sx (pixel centres), less the region's origin.
    to_region = np.array([[sx, 0.0, x0 - left + 0.5 * sx - 0.5], [0.0, sy, y0 - top + 0.5 * sy - 0.5]], np.float32)
    crop = cv2.warpAffine(luma, to_region, (out_w, out_h), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_REPLICATE)  # fmt: skip
    return crop.round().clip(0, 255).astype(np.uint8)


class MouthMotionSync:
    """Model-free lip sync: how open the mouth is against how loud the sound is (module docstring).

    How open: the mouth crops' first principal component over the track, the one mode of appearance change a
    talking mouth is dominated by (opening and closing). How loud: the sound's level in dB over one frame
    period. Both lose what changes slower than syllables (a head swaying, a turn starting) before they are
    compared: that is what tells a speaking mouth from a face that merely moves while someone talks.
    """

    name = "mouth_motion"
    # Calibrated on generated talking faces (docs/speakers.md): a speaking mouth scores 0.74-1.8 on a turn;
    # another face scores about 0 when still, up to 0.36 when its head sways by 8 pixels or it speaks over the turn.
    default_speaking_threshold = 0.4

    def crop(self, rgb: np.ndarray, face: Face) -> np.ndarray:
        return mouth_crop(rgb, face)

    def similarity(self, crops: np.ndarray, audio: np.ndarray, rate: int, fps: float, max_lag: int) -> np.ndarray:
        frames = crops.shape[0]
        out = np.full((2 * max_lag + 1, frames), np.nan)
        slow = max(3, round(_SLOW_S * fps) | 1)
        v = _standardise(_fast(mouth_opening(crops), slow))
        a = _standardise(_fast(_level(audio, rate, fps, frames + max_lag), slow))  # NaN past the audio: unscored
        if v is None or a is None:
            return out
        for row, lag in enumerate(range(-max_lag, max_lag + 1)):
            lo, hi = max(0, -lag), min(frames, a.size - lag)
            if hi > lo:
                out[row, lo:hi] = v[lo:hi] * a[lo + lag : hi + lag]
        # A principal component has no sign of its own: it is taken as "open" where it best follows the level.
        curve = lag_curve(out, np.arange(frames))
        if np.isfinite(curve).any() and curve[np.nanargmax(np.abs(curve))] < 0:
            out = -out
        return out


def mouth_opening(crops: np.ndarray) -> np.ndarray:
    """Per frame, the mouth's main mode of change (arbitrary units and sign); NaN for a mouth that does not move."""
    frames = crops.shape[0]
    if frames < 3:
        return np.full(frames, np.nan)
    pixels = crops.reshape(frames, -1).astype(np.float64)
    if np.abs(np.diff(pixels, axis=0)).mean() < _MOTION_FLOOR:
        return np.full(frames, np.nan)
    pixels -= pixels.mean(axis=0)
    u, s, _ = np.linalg.svd(pixels, full_matrices=False)
    return u[:, 0] * s[0]


def _level(audio: np.ndarray, rate: int, fps: float, frames: int) -> np.ndarray:
    """Per frame: the sound's level (dB) over one frame period centred on the frame's time (a picture is the
    instant of its timestamp); NaN for frames past the audio's end, which have no sound to compare."""
    mono = audio.reshape(-1, audio.shape[-1]).mean(axis=0) if audio.ndim > 1 else audio
    centres = np.round(np.arange(frames) / fps * rate).astype(np.int64)
    half = max(1, round(rate / fps / 2))
    power = np.concatenate([[0.0], np.cumsum(np.square(mono.astype(np.float64)))])
    lo, hi = np.clip(centres - half, 0, mono.size), np.clip(centres + half, 0, mono.size)
    energy = (power[hi] - power[lo]) / np.maximum(hi - lo, 1)
    level = 10.0 * np.log10(energy + 10.0 ** (_LEVEL_FLOOR_DB / 10.0))
    level[centres >= mono.size] = np.nan
    return level


def _fast(signal: np.ndarray, window: int) -> np.ndarray:
    """`signal` less its centred moving average over `window` frames (NaN stays NaN): what changes at the rate
    of syllables. Slower change, a head swaying or a turn starting, is not lip sync, and on a short turn it
    correlates with anything else slow by chance."""
    finite = np.isfinite(signal)
    values = np.where(finite, signal, 0.0)
    kernel = np.ones(window)
    sums = np.convolve(values, kernel, "same")
    counts = np.convolve(finite.astype(np.float64), kernel, "same")
    return np.where(finite, signal - sums / np.maximum(counts, 1.0), np.nan)


def _standardise(signal: np.ndarray) -> np.ndarray | None:
    finite = np.isfinite(signal)
    if finite.sum() < 3:
        return None
    spread = float(signal[finite].std())
    if spread < 1e-6:  # a still mouth or a silent clip: nothing to correlate
        return None
    return (signal - signal[finite].mean()) / spread


def lag_curve(similarity: np.ndarray, frames: np.ndarray) -> np.ndarray:
    """The mean similarity over `frames` (indices into the similarity's columns) at each lag."""
    if frames.size == 0:
        return np.full(similarity.shape[0], np.nan)
    block = similarity[:, frames]
    counts = np.isfinite(block).sum(axis=1)
    sums = np.nansum(block, axis=1)
    return np.where(counts >= max(3, frames.size // 2), sums / np.maximum(counts, 1), np.nan)


def best_lag(curve: np.ndarray) -> float | None:
    """The best lag index, refined between lags by a parabola through the peak and its neighbours."""
    if not np.isfinite(curve).any():
        return None
    best = int(np.nanargmax(curve))
    if 0 < best < curve.size - 1 and np.isfinite(curve[best - 1 : best + 2]).all():
        left, mid, right = curve[best - 1 : best + 2]
        curvature = left - 2 * mid + right
        if curvature < 0:
            return best + float(np.clip(0.5 * (left - right) / curvature, -0.5, 0.5))
    return float(best)


def confidence(curve: np.ndarray, at: float) -> float:
    """SyncNet's confidence: the curve at the chosen lag over its median over all lags."""
    finite = curve[np.isfinite(curve)]
    if finite.size == 0:
        return math.nan
    median = float(np.median(finite))
    value = float(np.interp(at, np.arange(curve.size), np.nan_to_num(curve, nan=median)))
    return value - median


@dataclass(frozen=True)
class OnScreen:
    """Who speaks in [start_s, end_s) of the clip, and which face track shows them (None: not on screen)."""

    start_s: float
    end_s: float
    speaker: str | None  # the diarized speaker, None without diarization
    track: int | None
    score: float | None  # the speaking track's confidence on this stretch

    def to_dict(self) -> dict[str, object]:
        return {"start_s": self.start_s, "end_s": self.end_s, "speaker": self.speaker, "track": self.track,
                "score": None if self.score is None else round(self.score, 4)}  # fmt: skip


@dataclass(frozen=True)
class LipResult:
    on_screen: list[OnScreen]
    lip_offset_ms: float | None  # of the on-screen speaker's mouth; positive: the audio lags the lips
    lip_sync_confidence: float | None
    speaker_visible_ratio: float | None  # share of the clip's speech whose speaker is on screen


def score_tracks(
    tracks: list[TrackSync], stretches: list[tuple[float, float, str | None]], fps: float, n_frames: int,
    cfg: FacesConfig, backend: LipSyncBackend, offset_s: float = 0.0,
) -> LipResult:
    """Assign each stretch of speech (clip-relative: start, end, speaker) to the face whose mouth follows it.

    A track's lag is chosen on all the speech it spans (many frames: a stable choice); each stretch then goes
    to the track with the highest confidence at that lag, if it reaches the speaking threshold. Stretch time t
    is the tracks' frame time t + offset_s (the tracks were scored on the audio before the sync correction).
    """
    threshold = cfg.speaking_threshold if cfg.speaking_threshold is not None else backend.default_speaking_threshold  # type: ignore[attr-defined]
    speech = np.zeros(n_frames, bool)
    for start_s, end_s, _ in stretches:
        speech[_frames(start_s + offset_s, end_s + offset_s, fps, n_frames)] = True
    lags: dict[int, float | None] = {}
    for track in tracks:
        span = np.arange(track.first_frame, track.first_frame + track.similarity.shape[1])
        lags[track.track_id] = best_lag(lag_curve(track.similarity, np.flatnonzero(speech[span])))
    on_screen, visible_s, speech_s = [], 0.0, 0.0
    spoken: dict[int, list[np.ndarray]] = {}
    for start_s, end_s, speaker in stretches:
        frames = _frames(start_s + offset_s, end_s + offset_s, fps, n_frames)
        speech_s += end_s - start_s
        choice: tuple[float, TrackSync] | None = None
        for track in tracks:
            inside = _inside(track, frames)
            lag = lags[track.track_id]
            if lag is None or inside.size < max(3, frames.size // 2):
                continue
            value = confidence(lag_curve(track.similarity, inside), lag)
            if np.isfinite(value) and (choice is None or value > choice[0]):
                choice = (value, track)
        if choice is not None and choice[0] >= threshold:
            on_screen.append(OnScreen(start_s, end_s, speaker, choice[1].track_id, choice[0]))
            visible_s += end_s - start_s
            spoken.setdefault(choice[1].track_id, []).append(frames)
        else:
            on_screen.append(OnScreen(start_s, end_s, speaker, None, None if choice is None else choice[0]))
    offset_ms = sync_confidence = None
    if spoken:
        # The lip offset is measured on the face that speaks longest, over all the speech it speaks.
        track_id = max(spoken, key=lambda k: (sum(f.size for f in spoken[k]), -k))
        track = next(t for t in tracks if t.track_id == track_id)
        curve = lag_curve(track.similarity, _inside(track, np.unique(np.concatenate(spoken[track_id]))))
        lag = best_lag(curve)
        if lag is not None:
            max_lag = (track.similarity.shape[0] - 1) // 2
            offset_ms = round((lag - max_lag) / fps * 1000.0, 1)
            sync_confidence = round(confidence(curve, lag), 4)
    ratio = round(visible_s / speech_s, 4) if speech_s > 0 else None
    return LipResult(on_screen, offset_ms, sync_confidence, ratio)


def _inside(track: TrackSync, frames: np.ndarray) -> np.ndarray:
    """`frames` (clip frame numbers) as columns of the track's similarity, those it spans."""
    columns = frames - track.first_frame
    return columns[(columns >= 0) & (columns < track.similarity.shape[1])]


def _frames(start_s: float, end_s: float, fps: float, n_frames: int) -> np.ndarray:
    """Frames whose time falls in [start_s, end_s) (a hair of slack: 0.28 s * 25 is 7.000000000000001)."""
    return np.arange(max(0, math.ceil(start_s * fps - 1e-9)), min(n_frames, math.ceil(end_s * fps - 1e-9)))


def build_lip_sync(cfg: FacesConfig) -> LipSyncBackend:
    if cfg.lip_sync == "syncnet":
        from .syncnet import SyncNetLipSync

        from ..models import resolve_device

        return SyncNetLipSync.load(cfg.syncnet_weights, resolve_device(cfg.device))  # type: ignore[arg-type]
    return MouthMotionSync()
