"""Generated test speech: espeak-ng voices in known turns, with silences, overlap and music.

Synthetic material proves mechanics (turn boundaries move when the script moves), not quality: quality is
measured on real speech (pyannote's sample with its reference turns, docs/benchmarks.md).
"""

from __future__ import annotations

import subprocess
import tempfile
import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .base import SPEECH_RATE, Turn

MALE = "en-us+m3"  # espeak-ng voice + variant; a male and a female voice the speaker encoder tells apart
FEMALE = "en-us+f3"


def speak(text: str, voice: str = MALE, rate: int = SPEECH_RATE, words_per_minute: int = 160) -> np.ndarray:
    """`text` spoken by espeak-ng, mono float32 at `rate`, leading and trailing silence trimmed."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "speech.wav"
        subprocess.run(["espeak-ng", "-v", voice, "-s", str(words_per_minute), "-w", str(path), text], check=True,
                       capture_output=True)  # fmt: skip
        with wave.open(str(path)) as f:
            native = f.getframerate()
            pcm = np.frombuffer(f.readframes(f.getnframes()), np.int16).astype(np.float32) / 32768.0
    from ..models import resample_for_model

    audio = resample_for_model(pcm, native, rate)
    loud = np.flatnonzero(np.abs(audio) > 1e-3)
    return audio[loud[0] : loud[-1] + 1] if loud.size else audio


@dataclass(frozen=True)
class Line:
    """One line of a script: who says what, starting `start_s` into the recording."""

    speaker: str
    voice: str
    text: str
    start_s: float


def music(duration_s: float, rate: int = SPEECH_RATE, seed: int = 0) -> np.ndarray:
    """A few seconds of chords (harmonic tones with attacks), no speech."""
    rng = np.random.default_rng(seed)
    t = np.arange(round(duration_s * rate)) / rate
    out = np.zeros_like(t)
    beat_s = 0.5
    for start in np.arange(0.0, duration_s, beat_s):
        root = 110.0 * 2 ** (rng.integers(0, 12) / 12)
        note = (t >= start) & (t < start + beat_s)
        local = t[note] - start
        for ratio in (1.0, 1.25, 1.5, 2.0):
            for harmonic in (1, 2, 3):
                out[note] += np.sin(2 * np.pi * root * ratio * harmonic * local) * np.exp(-3 * local) / harmonic
    return (0.15 * out / max(np.abs(out).max(), 1e-9)).astype(np.float32)


def conversation(
    lines: list[Line], duration_s: float, rate: int = SPEECH_RATE, music_spans: tuple[tuple[float, float], ...] = ()
) -> tuple[np.ndarray, list[Turn]]:
    """The lines mixed at their start times (lines may overlap), plus music in `music_spans`.

    Returns the audio and the reference turns (speaker names as given, each line's actual spoken extent).
    """
    audio = np.zeros(round(duration_s * rate), np.float32)
    turns = []
    for line in lines:
        speech = speak(line.text, line.voice, rate)
        start = round(line.start_s * rate)
        end = min(start + speech.size, audio.size)
        audio[start:end] += speech[: end - start]
        turns.append(Turn(start / rate, end / rate, line.speaker))
    for begin_s, end_s in music_spans:
        begin, end = round(begin_s * rate), min(round(end_s * rate), audio.size)
        audio[begin:end] += music(end_s - begin_s, rate)[: end - begin]
    peak = np.abs(audio).max()
    if peak > 0.99:
        audio *= 0.99 / peak
    return audio, sorted(turns, key=lambda t: (t.start_s, t.end_s))
