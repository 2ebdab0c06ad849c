"""CLAP audio (and text) embeddings through transformers (docs/models.md says why this library and this model).

A model is a hub name ("laion/clap-htsat-unfused", read from the Hugging Face cache when the hub is out of reach)
or a local folder saved with save_pretrained: the model and its processor (feature extractor and tokenizer).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from contextlib import nullcontext
from typing import Any

import numpy as np
import torch
import torchaudio.functional

from avcurate.config import AudioModelConfig
from avcurate.model import AUDIO
from avcurate.models.base import (
    HUB_HINT,
    ModelCard,
    ModelUnavailable,
    autocast,
    embed_in_chunks,
    offline_unless_hub_reachable,
    resolve_device,
    unit_rows,
)


def resample_for_model(audio: np.ndarray, from_rate: int, to_rate: int) -> np.ndarray:
    """float32 [channels, samples] or [samples] -> float32 mono [samples] at `to_rate` (channels averaged).

    Runs in the sandboxed decoder: a plain function of the audio, no model.
    """
    mono = audio.mean(axis=0) if audio.ndim == 2 else audio
    mono = np.ascontiguousarray(mono, dtype=np.float32)
    if from_rate == to_rate:
        return mono
    return torchaudio.functional.resample(torch.from_numpy(mono), from_rate, to_rate).numpy()


class ClapAudioModel:
    """A CLAP model loaded for inference: audio embeddings of mono clips, text embeddings of prompts."""

    def __init__(self, model: Any, processor: Any, cfg: AudioModelConfig, device: torch.device, precision: str):
        import transformers

        self.model = model
        self.processor = processor
        self.device = device
        self.precision = precision
        self.batch_size = cfg.batch_size
        extractor = processor.feature_extractor
        self.sample_rate = int(extractor.sampling_rate)
        self.window_samples = int(extractor.nb_max_samples)  # the audio one embedding hears (10 s for CLAP)
        # ClapModel.forward scales logits_per_audio (audio against texts, what a zero-shot rule asks) by exp(a)
        self.logit_scale = float(model.logit_scale_a.detach().float().exp().item())
        self.dim = int(model.config.projection_dim)
        self.card = ModelCard(
            role=AUDIO,
            library="transformers",
            library_version=transformers.__version__,
            name=str(cfg.name),
            pretrained=None,
            dim=self.dim,
            input={"sample_rate": self.sample_rate, "window_s": self.window_samples / self.sample_rate},
        )

    @classmethod
    def load(cls, cfg: AudioModelConfig, device: torch.device | str, precision: str) -> ClapAudioModel:
        """Loads model and processor with from_pretrained; any failure is a ModelUnavailable saying what to pass."""
        from transformers import ClapModel, ClapProcessor

        if cfg.name is None:
            raise ModelUnavailable("models.audio.name is not set: no audio model to load")
        device = resolve_device(device) if isinstance(device, str) else device
        is_folder = os.path.isdir(cfg.name)
        offline = False
        try:
            with nullcontext(False) if is_folder else offline_unless_hub_reachable() as offline:
                model = ClapModel.from_pretrained(cfg.name)
                processor = ClapProcessor.from_pretrained(cfg.name)
        except (OSError, ValueError, RuntimeError, KeyError) as err:  # from_pretrained's are OSErrors mostly
            raise ModelUnavailable(_unavailable_message(cfg.name, is_folder, err, offline)) from err
        return cls(model.to(device).eval(), processor, cfg, device, precision)

    def embed_audio(self, clips: Sequence[np.ndarray], batch_size: int | None = None) -> np.ndarray:
        """float32 mono clips at `sample_rate` -> float32 [N, D], L2-normalised.

        A clip longer than the model's window keeps its first window: the feature extractor would crop a random
        one (rand_trunc, or fusion's random chunks), and the same clip must embed the same way every run.
        """
        return embed_in_chunks(clips, batch_size or self.batch_size, self.dim, self._embed_audio_chunk)

    def embed_texts(self, texts: Sequence[str], batch_size: int | None = None) -> np.ndarray:
        """Prompts -> float32 [T, D], L2-normalised."""
        return embed_in_chunks(texts, batch_size or self.batch_size, self.dim, self._embed_text_chunk)

    def _embed_audio_chunk(self, clips: Sequence[np.ndarray]) -> np.ndarray:
        waveforms = [np.asarray(clip, dtype=np.float32)[: self.window_samples] for clip in clips]
        inputs = self.processor.feature_extractor(
            waveforms, sampling_rate=self.sample_rate, return_tensors="pt"
        )
        # With "fusion" truncation the extractor marks one random clip of a batch as longer than the window (a
        # training device): it would change that clip's embedding in fused models. None is longer here.
        is_longer = torch.zeros_like(inputs["is_longer"])
        with torch.inference_mode(), autocast(self.device, self.precision):
            output = self.model.get_audio_features(
                input_features=inputs["input_features"].to(self.device), is_longer=is_longer.to(self.device)
            )
        return unit_rows(output.pooler_output)

    def _embed_text_chunk(self, texts: Sequence[str]) -> np.ndarray:
        inputs = self.processor.tokenizer(list(texts), padding=True, truncation=True, return_tensors="pt")
        with torch.inference_mode(), autocast(self.device, self.precision):
            output = self.model.get_text_features(**inputs.to(self.device))
        return unit_rows(output.pooler_output)


def _unavailable_message(name: str, is_folder: bool, err: BaseException, offline: bool) -> str:
    where = " (offline: the hub is unreachable or HF_HUB_OFFLINE is set)" if offline else ""
    head = f"audio model {name!r} could not be loaded{where}: {type(err).__name__}: {err}. "
    folder = (
        "models.audio.name: /path/to/folder saved with save_pretrained (ClapModel and ClapProcessor, "
        "e.g. a download of laion/clap-htsat-unfused)"
    )
    if is_folder:
        return head + f"Pass {folder}"
    return head + f"Pass a hub name (laion/clap-htsat-unfused) or {folder}, {HUB_HINT}"
