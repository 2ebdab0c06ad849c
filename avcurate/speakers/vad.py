"""Voice activity: Silero VAD's speech probability per 32 ms frame, turned into segments with hysteresis.

The TorchScript model that ships in the silero_vad wheel is used directly (no download), loaded once per process.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import torch

from ..config import VadConfig
from ..sandbox import heartbeat
from .base import SPEECH_RATE, Segment

FRAME = 512  # samples per probability at 16 kHz (32 ms); the model accepts no other size at this rate
_MODEL: torch.jit.ScriptModule | None = None


def _model() -> torch.jit.ScriptModule:
    """The process's one Silero model; calls reset its state, so sharing it within a thread is safe."""
    global _MODEL
    if _MODEL is None:
        spec = importlib.util.find_spec("silero_vad")
        if spec is None or not spec.submodule_search_locations:
            raise RuntimeError("silero-vad is not installed: its wheel carries the VAD model")
        path = Path(next(iter(spec.submodule_search_locations))) / "data" / "silero_vad.jit"
        _MODEL = torch.jit.load(str(path), map_location="cpu")
        _MODEL.eval()
    return _MODEL


def to_speech_rate(audio: np.ndarray, rate: int) -> np.ndarray:
    """Mono float32 at SPEECH_RATE, what the VAD, the speaker encoder and the diarizer work on."""
    audio = np.asarray(audio, np.float32)
    if audio.ndim != 1:
        raise ValueError(f"audio must be mono [samples], got shape {audio.shape}")
    from ..models import resample_for_model

    return resample_for_model(audio, rate, SPEECH_RATE)


class SileroVad:
    """Speech segments by Silero VAD (VoiceActivity)."""

    name = "silero"

    def __init__(self, cfg: VadConfig) -> None:
        self.cfg = cfg

    def probabilities(self, audio: np.ndarray, rate: int = SPEECH_RATE) -> np.ndarray:
        """Speech probability of each 32 ms frame (frame i covers samples [512 i, 512 (i + 1)) at 16 kHz).

        The model is stateful (an LSTM plus 64 samples of context), so frames go through it one at a time, in
        order, from a fresh state: memory is one frame whatever the length, and reruns give the same numbers."""
        audio = to_speech_rate(audio, rate)
        n = -(-audio.size // FRAME)
        probs = np.empty(n, np.float32)
        model = _model()
        with torch.inference_mode():
            model.reset_states()
            for i in range(n):
                frame = torch.from_numpy(audio[i * FRAME : (i + 1) * FRAME])
                if frame.numel() < FRAME:
                    frame = torch.nn.functional.pad(frame, (0, FRAME - frame.numel()))
                probs[i] = model(frame[None], SPEECH_RATE).item()
                if i % 1024 == 0:
                    heartbeat()  # in the decoder: an hour of audio is a minute of frames, with no video progress
        return probs

    def segments(self, audio: np.ndarray, rate: int) -> list[Segment]:
        """Speech stretches, in seconds from the start of `audio`."""
        audio = to_speech_rate(audio, rate)
        return self.segments_from_probabilities(self.probabilities(audio), audio.size / SPEECH_RATE)

    def segments_from_probabilities(self, probs: np.ndarray, duration_s: float) -> list[Segment]:
        """Hysteresis: speech starts at a frame >= threshold and ends at the first frame < neg_threshold that
        starts a pause of at least min_silence_s; stretches shorter than min_speech_s are dropped, the rest
        padded by pad_s (padding never crosses into the neighbour or past the audio)."""
        cfg, frame_s = self.cfg, FRAME / SPEECH_RATE
        spans: list[list[float]] = []
        start: int | None = None
        quiet_from: int | None = None
        for i, p in enumerate(probs):
            if start is None:
                if p >= cfg.threshold:
                    start, quiet_from = i, None
                continue
            if p >= cfg.threshold:
                quiet_from = None
            elif p < cfg.neg_threshold and quiet_from is None:
                quiet_from = i
            if quiet_from is not None and (i + 1 - quiet_from) * frame_s >= cfg.min_silence_s:
                spans.append([start * frame_s, quiet_from * frame_s])
                start = quiet_from = None
        if start is not None:
            spans.append([start * frame_s, (quiet_from if quiet_from is not None else len(probs)) * frame_s])
        spans = [s for s in spans if s[1] - s[0] >= cfg.min_speech_s]
        out = []
        for k, (begin, end) in enumerate(spans):
            lo = max(0.0, begin - cfg.pad_s, (spans[k - 1][1] + begin) / 2 if k else 0.0)
            hi = min(duration_s, end + cfg.pad_s, (end + spans[k + 1][0]) / 2 if k + 1 < len(spans) else duration_s)
            out.append(Segment(round(lo, 3), round(hi, 3)))
        return out
