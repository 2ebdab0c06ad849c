"""What the sandboxed decoder hands the inference stages: each kept clip's model inputs.

The decoder already holds every frame and sample, so it samples frames at the visual model's input size and
resamples audio to the audio model's rate; the models themselves load once per worker process, in Beam's
RunInference (`avcurate/beam/inference.py`), never in the decoder. Inputs cross the process boundary as `.npy`
files in the source's scratch folder (the sandbox's replies are JSON), read back with `allow_pickle=False`.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable
from dataclasses import dataclass

import av
import numpy as np

from .fsutil import read_bytes
from .model import ModelInputs


@dataclass(frozen=True)
class InputSpec:
    """What the configured models need of each clip; built by the launcher from the loaded models."""

    frame_prep: Callable[[np.ndarray], np.ndarray] | None = None  # RGB uint8 [H, W, 3] -> the model's [S, S, 3]
    frames_per_clip: int = 8
    audio_rate: int | None = None  # the audio model's sample rate; None: no audio model
    audio_max_s: float = 10.0

    @property
    def wanted(self) -> bool:
        return self.frame_prep is not None or self.audio_rate is not None


class FrameSampler:
    """Keeps between n and 2n evenly spaced frames of a clip of unknown length, already at the model's size.

    Frames are taken every `stride` frames; when 2n are held, every other one goes and the stride doubles. So
    memory stays at 2n model-size frames whatever the clip's length, and only those frames are converted.
    """

    def __init__(self, n: int, prep: Callable[[np.ndarray], np.ndarray]) -> None:
        self.n, self.prep = n, prep
        self.stride = 1
        self.frames: list[tuple[int, np.ndarray]] = []  # (position in the clip, prepared frame)

    def add(self, position: int, frame: av.VideoFrame) -> None:
        if position % self.stride:
            return
        self.frames.append((position, self.prep(frame.to_ndarray(format="rgb24"))))
        if len(self.frames) >= 2 * self.n:
            self.stride *= 2
            self.frames = [(p, f) for p, f in self.frames if p % self.stride == 0]

    def pick(self, n_frames: int, fps: float) -> tuple[np.ndarray, np.ndarray]:
        """n frames nearest the centres of n equal parts of the clip (fewer if the clip holds fewer)."""
        held = [(p, f) for p, f in self.frames if p < n_frames]
        positions = np.array([p for p, _ in held])
        wanted = (np.arange(min(self.n, len(held))) + 0.5) * n_frames / min(self.n, len(held))
        chosen = sorted({int(np.abs(positions - w).argmin()) for w in wanted})
        frames = np.stack([held[i][1] for i in chosen])
        return frames, positions[chosen] / fps


def clip_audio(audio: np.ndarray, from_rate: int, spec: InputSpec) -> np.ndarray:
    """The clip's middle `audio_max_s` seconds, mono, at the model's rate. The middle, not a random window
    (CLAP's own feature extractor truncates at random): the same clip must give the same embedding."""
    from .models.clap import resample_for_model  # torch and torchaudio: only in a decoder that needs them

    assert spec.audio_rate is not None
    keep = int(round(spec.audio_max_s * from_rate))
    start = max(0, (audio.shape[-1] - keep) // 2)
    return resample_for_model(audio[..., start : start + keep], from_rate, spec.audio_rate)


PARTS = ("frames", "frame_times_s", "audio")


def save_inputs(folder: str, key: str, inputs: ModelInputs) -> None:
    os.makedirs(folder, exist_ok=True)
    for part in PARTS:
        value = getattr(inputs, part)
        if value is not None:
            np.save(os.path.join(folder, f"{key}.{part}.npy"), value, allow_pickle=False)


def load_inputs(folder: str, key: str) -> ModelInputs:
    """A clip's inputs from `folder` (local, or a remote folder such as a staging area on gs://)."""
    parts = {}
    for part in PARTS:
        data = read_bytes(f"{folder.rstrip('/')}/{key}.{part}.npy")
        parts[part] = np.load(io.BytesIO(data), allow_pickle=False) if data is not None else None
    return ModelInputs(**parts)
