"""The typed data model every stage speaks: a source, what probing found, its clips, and its outcome.

Plain dataclasses, no Beam: they pickle between Beam workers, come back from the sandboxed decoder as JSON
(`avcurate.replies`), and turn into index/ledger rows and sample metadata through `to_dict`.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from .spans import Span

KEPT = "kept"
REJECTED = "rejected"
FAILED = "failed"
EXCLUDED = "excluded"  # a source a block list names: never decoded (avcurate/blocklist.py)


def source_id_for(uri: str) -> str:
    """A stable id from the source's URI: reruns name every clip the same, whatever the file is called."""
    return hashlib.sha1(uri.encode("utf-8")).hexdigest()[:16]


@dataclass(frozen=True)
class Source:
    """One raw input video."""

    uri: str
    source_id: str
    meta: dict[str, Any] = field(default_factory=dict)  # extra manifest columns, carried into clip metadata
    listing_error: str | None = None  # a manifest row that names no video: recorded as failed, nothing decoded

    @classmethod
    def from_uri(cls, uri: str, meta: dict[str, Any] | None = None, listing_error: str | None = None) -> "Source":
        return cls(uri=uri, source_id=source_id_for(uri), meta=dict(meta or {}), listing_error=listing_error)


@dataclass
class ProbeInfo:
    """What probing a container found, before any decoding."""

    format_name: str
    duration_s: float
    size_bytes: int | None
    has_video: bool
    has_audio: bool
    video_codec: str | None = None
    width: int | None = None
    height: int | None = None
    fps: float | None = None
    rotation: int = 0  # degrees, counter-clockwise, as in the display matrix
    video_start_s: float | None = None
    audio_codec: str | None = None
    sample_rate: int | None = None
    channels: int | None = None
    audio_start_s: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class ClipScores:
    """Signal-level scores of one clip. None where a score does not apply."""

    loudness_dbfs: float | None = None
    silence_ratio: float | None = None
    clipping_ratio: float | None = None
    motion_score: float | None = None
    static_ratio: float | None = None
    black_ratio: float | None = None
    av_offset_ms: float | None = None  # positive: audio lags video
    sync_confidence: float | None = None
    sharpness: float | None = None  # variance of the Laplacian of luma (0..255 units) at the output size
    audio_missing: float | None = None  # share of the clip's audio the source lacked (silence stands in for it)
    # Learned scores (avcurate/scorers/learned.py), after inference; None when no model made them.
    av_correspondence: float | None = None  # 0..1: the picture's and the sound's zero-shot sources agree
    duplicate_similarity: float | None = None  # cosine similarity to the clip it near-duplicates (duplicate_of)
    # Speakers (avcurate/speakers/), when speakers.enabled; None otherwise, or where a score does not apply.
    speech_ratio: float | None = None  # share of the clip Silero VAD hears speech in
    num_speakers: int | None = None  # diarized speakers with at least 0.3 s of speech in the clip
    dominant_speaker_share: float | None = None  # of the time anyone speaks, the share the main speaker speaks
    overlap_ratio: float | None = None  # of the time anyone speaks, the share two or more speak at once
    num_faces: int | None = None  # most tracked faces found at one detection (tracks of faces.min_track_s or more)
    speaker_visible_ratio: float | None = None  # share of the speech whose speaker's face is on screen, speaking
    lip_offset_ms: float | None = None  # the on-screen speaker's mouth vs the audio; positive: audio lags
    lip_sync_confidence: float | None = None  # SyncNet-style: best lag's score over the median lag's

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class ModelInputs:
    """What the sandboxed decoder hands the inference stages for one clip. Never written out."""

    frames: np.ndarray | None = None  # uint8 [n, S, S, 3] RGB at the visual model's input size (resized, cropped)
    frame_times_s: np.ndarray | None = None  # float64 [n]: each frame's time in the clip
    audio: np.ndarray | None = None  # float32 [samples] mono at the audio model's rate, at most its max length

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in (self.frames, self.frame_times_s, self.audio) if a is not None)


# Embedding roles: each is a float32 vector (or [frames, dim] matrix) in Clip.embeddings, an `{key}.{role}.npy`
# member of the sample, and `{role}_embedding` in the index.
VISUAL = "visual"  # L2-normalised mean of the frames' image embeddings
VISUAL_FRAMES = "visual_frames"  # [frames, dim], one row per sampled frame (models.visual.per_frame)
AUDIO = "audio"  # the clip's audio embedding, L2-normalised


@dataclass
class Clip:
    """One cut of a source: times on the source's timeline, scores, and the verdict of the filters."""

    source_id: str
    source_uri: str
    clip_index: int
    start_s: float
    end_s: float
    n_frames: int
    fps: float
    width: int
    height: int
    sample_rate: int
    channels: int
    source_width: int  # the source's display size (square pixels, rotated), before scaling
    source_height: int
    scores: ClipScores = field(default_factory=ClipScores)
    end_reason: str = "end"  # what closed the clip: "shot", "transition", "max_length", "span_end" or "end"
    cut_score: float | None = None  # the shot detector's score at the cut that closed it (shot, transition)
    sync_correction_ms: float = 0.0  # audio shift applied when encoding (residual offset = av_offset_ms - this)
    status: str = KEPT
    reasons: list[str] = field(default_factory=list)
    source_meta: dict[str, Any] = field(default_factory=dict)
    config_hash: str = ""
    zero_shot: dict[str, float] = field(default_factory=dict)  # zero-shot rule name -> probability (config's rules)
    embeddings: dict[str, np.ndarray] = field(default_factory=dict)  # role (VISUAL, AUDIO, ...) -> float32 array
    models: dict[str, dict[str, Any]] = field(default_factory=dict)  # role -> the model card that embedded it
    duplicate_of: str | None = None  # key of the clip this one near-duplicates (that one is kept instead)
    # Speakers, clip-relative seconds (speakers.enabled; None when not run):
    speech: list[dict[str, float]] | None = None  # {start_s, end_s} of each speech segment (Silero VAD)
    turns: list[dict[str, Any]] | None = None  # {start_s, end_s, speaker}: labels shared by a source's clips
    face_tracks: list[dict[str, Any]] | None = None  # {track, times_s, boxes}: boxes where the detector ran
    speaker_on_screen: list[dict[str, Any]] | None = None  # {start_s, end_s, speaker, track, score} per turn
    inputs: ModelInputs | None = None  # model inputs, only between decoding and inference (never written)
    staged_path: str | None = None  # encoded MP4 waiting for the shard writer (not part of any output)
    mp4_bytes: int = 0
    shard: str | None = None

    @property
    def key(self) -> str:
        """Unique, tar-safe (hex, digits and a dash, no dots) and stable across runs."""
        return f"{self.source_id}-{self.clip_index:05d}"

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s

    def metadata(self) -> dict[str, Any]:
        """The sample's `json` member (schemas/sample-metadata.v5.json)."""
        return {
            "schema_version": 5,
            "key": self.key,
            "source_id": self.source_id,
            "source_uri": self.source_uri,
            "source_meta": self.source_meta,
            "clip_index": self.clip_index,
            "start_s": self.start_s,
            "end_s": self.end_s,
            "duration_s": self.duration_s,
            "end_reason": self.end_reason,
            "cut_score": self.cut_score,
            "n_frames": self.n_frames,
            "fps": self.fps,
            "width": self.width,
            "height": self.height,
            "source_width": self.source_width,
            "source_height": self.source_height,
            "sample_rate": self.sample_rate,
            "channels": self.channels,
            "scores": self.scores.to_dict(),
            "sync_correction_ms": self.sync_correction_ms,
            "config_hash": self.config_hash,
            "zero_shot": self.zero_shot,
            "models": self.models,
            "duplicate_of": self.duplicate_of,
            "speech": self.speech,
            "turns": self.turns,
            "face_tracks": self.face_tracks,
            "speaker_on_screen": self.speaker_on_screen,
            # Shapes only: the arrays are the sample's `{key}.{role}.npy` members, so readers know which exist.
            "embeddings": {role: list(array.shape) for role, array in sorted(self.embeddings.items())},
        }


@dataclass
class SourceResult:
    """Everything one input produced: its probe, its clips, or the error that stopped it."""

    source: Source
    probe: ProbeInfo | None = None
    clips: list[Clip] = field(default_factory=list)
    error: str | None = None
    error_type: str | None = None  # short machine-readable class: "probe", "decode", "timeout", "memory", ...
    sync_correction_ms: float = 0.0
    note: str | None = None  # e.g. why a decodable source yielded no clip
    span: Span | None = None  # the part of the source this result covers, when it was split (avcurate/spans.py)
    times: dict[str, list[float]] = field(default_factory=dict)  # [cpu_s, wall_s] by stage (avcurate/timings.py)
    excluded_by: str | None = None  # the block list naming it (its `error` says how): excluded, never decoded

    @property
    def status(self) -> str:
        if self.excluded_by is not None:
            return EXCLUDED
        if self.error is not None:
            return FAILED
        return KEPT if any(c.status == KEPT for c in self.clips) else REJECTED
