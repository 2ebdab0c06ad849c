"""The speaker stages inside the sandboxed decoder, per source.

While frames stream past, each clip's faces are detected, tracked and scored against the clip's audio at every
lip lag (`ClipFaces`: small, a row of scores per frame and lag, whatever the backend). Once the whole source is
decoded, voice activity and diarization run over its whole audio (turns found over a whole source are more
reliable than per 2-10 s clip: a speaker's embedding is compared with all their speech, not a few seconds
of it, and labels stay the same across clips), and each clip gets its share: speech, turns, who is on screen.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
from dataclasses import dataclass

import numpy as np

from ..config import Config, SpeakersConfig
from ..model import Clip
from ..sandbox import heartbeat
from .base import SPEECH_RATE, Diarizer, Segment, Turn
from .faces import FaceTracker, build_face_detector
from .lipsync import build_lip_sync, score_tracks
from .timeline import clip_speech

_CHUNK_S = 60.0  # the scratch audio is read and resampled this much at a time


@dataclass
class TrackSync:
    """A face track of one clip, reduced to what is kept until the source's speech is known."""

    track_id: int
    first_frame: int
    frame_times_s: list[float]  # where the detector found it (clip-relative, seconds)
    boxes: list[list[float]]  # its box there (x0, y0, x1, y1, decoded-frame pixels)
    similarity: np.ndarray  # [lags, frames of the track] from the lip-sync backend


@dataclass
class ClipFaces:
    tracks: list[TrackSync]
    max_faces: int  # most tracked faces (faces.min_track_s or longer) found at one detection
    n_frames: int


@functools.cache
def _diarizer(cfg: SpeakersConfig) -> Diarizer | None:
    """Loaded once per decoder process, like the other speaker models."""
    backend = cfg.diarization.backend
    if backend == "offline":
        from .diarize import OfflineDiarizer

        return OfflineDiarizer(cfg.diarization, cfg.vad)
    if backend == "pyannote":
        from .pyannote_backend import PyannoteDiarizer

        return PyannoteDiarizer.load(cfg.diarization)
    return None


def prepare_speakers(cfg: Config) -> None:
    """Load every configured speaker model once in the launcher, before anything is decoded.

    A model that cannot be loaded stops the run here with models.ModelUnavailable, naming what to pass. A
    pyannote pipeline named on the hub is fetched (with HF_TOKEN) into the Hugging Face cache, from which the
    decoders, which have no network, load it."""
    if not cfg.speakers.enabled:
        return
    from ..models import ModelUnavailable
    from .vad import SileroVad

    # On the launcher's CPU: this load only proves the models load (and fills the cache); the decoders run them.
    speakers = cfg.speakers
    on_cpu = dataclasses.replace(cfg, speakers=dataclasses.replace(
        speakers, diarization=dataclasses.replace(speakers.diarization, device="cpu"),
        faces=dataclasses.replace(speakers.faces, device="cpu")))  # fmt: skip
    try:
        SileroVad(speakers.vad).probabilities(np.zeros(SPEECH_RATE // 10, np.float32))
        SpeakerStage(on_cpu)
        _diarizer(on_cpu.speakers)
    except ModelUnavailable:
        raise
    except (ImportError, OSError, RuntimeError) as e:
        raise ModelUnavailable(f"a speaker model could not be loaded: {e}; reinstall avcurate (`pip install -e .`) "
                               "or turn the stage off in `speakers:`") from e  # fmt: skip


class SpeakerStage:
    def __init__(self, cfg: Config) -> None:
        self.cfg, self.speakers = cfg, cfg.speakers
        faces = self.speakers.faces
        self.detector = build_face_detector(faces)
        self.backend = build_lip_sync(faces) if self.detector is not None else None
        self.detect_every = max(1, round(cfg.decode.fps / faces.detect_fps))
        self.min_track_frames = max(1, round(faces.min_track_s * cfg.decode.fps))

    def tracker(self) -> FaceTracker | None:
        if self.detector is None or self.backend is None:
            return None
        return FaceTracker(self.detector, self.backend, self.detect_every, self.cfg.decode.fps)

    def close_clip(self, tracker: FaceTracker, audio: np.ndarray, n_frames: int) -> ClipFaces:
        """Score the clip's face tracks at every lip lag now, while its audio is at hand."""
        assert self.backend is not None
        fps, rate = self.cfg.decode.fps, self.cfg.decode.sample_rate
        max_lag = max(1, round(self.speakers.faces.max_lip_offset_ms / 1000.0 * fps))
        counts: dict[int, int] = {}
        tracks = []
        mono = audio.mean(axis=0) if audio.ndim > 1 else audio
        for track in tracker.finish(self.min_track_frames):
            for t, _ in track.detections:
                counts[t] = counts.get(t, 0) + 1
            start = track.first_frame
            similarity = self.backend.similarity(track.crop_stack(), mono[round(start / fps * rate) :], rate, fps, max_lag)
            tracks.append(TrackSync(
                track.track_id, start, [round(t / fps, 4) for t, _ in track.detections],
                [[round(v, 1) for v in face.box] for _, face in track.detections], similarity.astype(np.float32),
            ))  # fmt: skip
        return ClipFaces(tracks, max(counts.values(), default=0), n_frames)

    def source_speech(self, audio_path: str, start_s: float = 0.0) -> tuple[list[Segment], list[Turn] | None]:
        """Speech segments and (with a diarization backend) speaker turns over the source's whole audio, or a
        span's: `start_s` is where the audio file starts on the source's timeline (clips' times are there)."""
        audio = _speech_audio(audio_path, self.cfg.decode.channels, self.cfg.decode.sample_rate)
        heartbeat()
        diarizer = _diarizer(self.speakers)
        if diarizer is not None and hasattr(diarizer, "run"):  # the offline backend finds speech on the way
            segments, turns = diarizer.run(audio, SPEECH_RATE)
        else:
            from .vad import SileroVad

            segments = SileroVad(self.speakers.vad).segments(audio, SPEECH_RATE)
            heartbeat()
            turns = diarizer.diarize(audio, SPEECH_RATE) if diarizer is not None else None
        heartbeat()
        if start_s:
            segments = [dataclasses.replace(s, start_s=s.start_s + start_s, end_s=s.end_s + start_s) for s in segments]
            if turns is not None:
                turns = [dataclasses.replace(t, start_s=t.start_s + start_s, end_s=t.end_s + start_s) for t in turns]
        return segments, turns

    def annotate(self, clip: Clip, faces: ClipFaces | None, segments: list[Segment], turns: list[Turn] | None) -> None:
        """The clip's speech, turns, faces and on-screen speaker, on its own timeline (after sync correction)."""
        shift_s = clip.sync_correction_ms / 1000.0
        overlaps = _diarizer(self.speakers).detects_overlap if turns is not None else False  # type: ignore[union-attr]
        speech = clip_speech(segments, turns, clip.start_s + shift_s, clip.end_s + shift_s, overlaps)
        clip.speech = [{"start_s": s.start_s, "end_s": s.end_s} for s in speech.segments]
        clip.turns = [{"start_s": t.start_s, "end_s": t.end_s, "speaker": t.speaker} for t in speech.turns] if turns is not None else None
        scores = clip.scores
        scores.speech_ratio = speech.speech_ratio
        scores.num_speakers = speech.num_speakers
        scores.dominant_speaker_share = speech.dominant_share
        scores.overlap_ratio = speech.overlap_ratio
        if faces is None:
            return
        clip.face_tracks = [{"track": t.track_id, "times_s": t.frame_times_s, "boxes": t.boxes} for t in faces.tracks]
        scores.num_faces = faces.max_faces
        # One stretch per turn, on the clip's (corrected) timeline; the tracks were scored on the audio as
        # decoded, so the stretches are placed on their frames `shift_s` later.
        result = score_tracks(faces.tracks, speech.stretches(), self.cfg.decode.fps, faces.n_frames,
                              self.speakers.faces, self.backend, offset_s=shift_s)  # fmt: skip
        clip.speaker_on_screen = [s.to_dict() for s in result.on_screen]
        scores.speaker_visible_ratio = result.speaker_visible_ratio
        scores.lip_offset_ms = result.lip_offset_ms
        scores.lip_sync_confidence = result.lip_sync_confidence


def _speech_audio(path: str, channels: int, rate: int) -> np.ndarray:
    """The scratch audio (float32 interleaved, `channels` at `rate`) as mono float32 at SPEECH_RATE.

    Read and resampled a minute at a time, so only the 16 kHz result (230 MB per hour) is ever whole."""
    frame_bytes = 4 * channels
    total = os.path.getsize(path) // frame_bytes
    chunk = round(_CHUNK_S * rate)
    if rate != SPEECH_RATE:
        import torch
        from torchaudio.transforms import Resample

        resample = Resample(rate, SPEECH_RATE)
    # Filled in place: holding the pieces and joining them would need twice the result's memory.
    out = np.zeros(sum(math.ceil(min(chunk, total - s) * SPEECH_RATE / rate) for s in range(0, total, chunk)), np.float32)
    filled = 0
    with open(path, "rb") as f:
        for start in range(0, total, chunk):
            block = np.frombuffer(f.read(min(chunk, total - start) * frame_bytes), np.float32).reshape(-1, channels)
            mono = block.mean(axis=1) if channels > 1 else block[:, 0]
            if rate != SPEECH_RATE:
                # Chunk edges are resampled apart: a minute-long chunk makes that error negligible for speech.
                mono = resample(torch.from_numpy(np.ascontiguousarray(mono))).numpy()
            take = min(mono.size, out.size - filled)
            out[filled : filled + take] = mono[:take]
            filled += take
            heartbeat()
    return out[:filled]
