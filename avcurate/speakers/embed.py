"""Speaker embeddings: the GE2E speaker encoder whose weights ship in resemblyzer's wheel, rebuilt in torch.

resemblyzer itself is not imported: its package __init__ imports webrtcvad, which imports pkg_resources, gone from
setuptools >= 82. Only its weights file is read; the network (3-layer LSTM, linear, ReLU, L2 norm) and its
features (40-band power mel, 25 ms window, 10 ms hop, as librosa computes them) are rebuilt here, and a test
checks that the result matches resemblyzer's own VoiceEncoder.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import torch
import torchaudio.functional as AF
from torch import nn

from .base import SPEECH_RATE

N_MELS = 40
N_FFT = 400  # 25 ms at 16 kHz
HOP = 160  # 10 ms
HIDDEN = 256
LAYERS = 3
EMBEDDING_DIM = 256


def weights_path() -> Path:
    """resemblyzer's pretrained.pt, found without importing the package."""
    spec = importlib.util.find_spec("resemblyzer")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("resemblyzer is not installed: its wheel carries the speaker encoder's weights")
    return Path(next(iter(spec.submodule_search_locations))) / "pretrained.pt"


class _Network(nn.Module):
    """resemblyzer's VoiceEncoder network; names match its state dict (lstm.*, linear.*)."""

    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(N_MELS, HIDDEN, LAYERS, batch_first=True)
        self.linear = nn.Linear(HIDDEN, EMBEDDING_DIM)

    def forward(self, mels: torch.Tensor) -> torch.Tensor:
        _, (hidden, _) = self.lstm(mels)
        raw = torch.relu(self.linear(hidden[-1]))
        return raw / raw.norm(dim=1, keepdim=True).clamp_min(1e-12)


class SpeakerEncoder:
    """256-d L2-normalised speaker embeddings of fixed-length audio windows (16 kHz mono float32).

    The encoder was trained on 1.6 s partial utterances of volume-normalised speech; the power mel input is
    not log-compressed, so the caller decides the windows' gain (OfflineDiarizer normalises each window)."""

    def __init__(self, batch_size: int = 64) -> None:
        self.batch_size = batch_size
        checkpoint = torch.load(weights_path(), map_location="cpu", weights_only=True)
        # The checkpoint also holds GE2E's similarity scale and bias (training only), hence strict=False.
        self.network = _Network()
        missing, _ = self.network.load_state_dict(checkpoint["model_state"], strict=False)
        if missing:
            raise RuntimeError(f"speaker encoder weights lack {missing}")
        self.network.eval()
        self.window = torch.hann_window(N_FFT, periodic=True, dtype=torch.float64).float()  # scipy's "hann"
        self.filters = AF.melscale_fbanks(N_FFT // 2 + 1, 0.0, SPEECH_RATE / 2, N_MELS, SPEECH_RATE, "slaney", "slaney")

    def mel(self, audio: torch.Tensor) -> torch.Tensor:
        """[n, samples] -> [n, frames, 40] power mel, librosa.feature.melspectrogram's defaults (centred frames,
        zero padding as librosa >= 0.10 pads)."""
        padded = nn.functional.pad(audio, (N_FFT // 2, N_FFT // 2))
        spec = torch.stft(padded, N_FFT, HOP, window=self.window, center=False, return_complex=True).abs() ** 2
        return (spec.transpose(1, 2) @ self.filters).float()

    def embed(self, windows: np.ndarray) -> np.ndarray:
        """[n, samples] float32 at 16 kHz -> [n, 256] float32, unit length."""
        windows = np.asarray(windows, np.float32)
        if windows.ndim != 2:
            raise ValueError(f"windows must be [n, samples], got shape {windows.shape}")
        out = np.empty((windows.shape[0], EMBEDDING_DIM), np.float32)
        with torch.inference_mode():
            for begin in range(0, windows.shape[0], self.batch_size):
                batch = torch.from_numpy(windows[begin : begin + self.batch_size])
                out[begin : begin + batch.shape[0]] = self.network(self.mel(batch)).numpy()
        return out
