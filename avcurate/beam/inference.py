"""Learned stages in Beam: embeddings in RunInference, then learned scores, rules and near-duplicates.

Each model is a `ModelHandler`, the Beam ML convention: RunInference loads it once per worker process (shared by
the process's threads) and hands it batches of clips gathered across sources (`models.max_batch_clips`). The
handlers are thin: the models live in `avcurate/models/`, the scores in `avcurate/scorers/learned.py`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from typing import Any

import apache_beam as beam
import numpy as np
from apache_beam.metrics import Metrics
from apache_beam.ml.inference.base import ModelHandler, RunInference

from . import NAMESPACE
from ..config import Config, ModelsConfig
from ..filters import reason_name
from ..checkpoints import save_embedded
from ..learned import LearnedFinish, LearnedPlan, mark_duplicate, mean_embedding
from ..model import AUDIO, KEPT, VISUAL, VISUAL_FRAMES, Clip
from ..timings import timed
from .dedup import NearDuplicates


class _ClipModelHandler(ModelHandler[Clip, Clip, Any]):
    """What both handlers share: config, batching across clips, and bytes in flight counted from the inputs
    (Beam would otherwise pickle each batch to measure it)."""

    def __init__(self, models: ModelsConfig) -> None:
        self.models = models

    def batch_elements_kwargs(self) -> dict[str, Any]:
        # Full batches only (a bundle's last one excepted): forward passes are padded to a fixed size, so
        # Beam's adaptive batching, which starts at one clip, would pad almost every pass.
        size = self.models.max_batch_clips
        return {"min_batch_size": size, "max_batch_size": size}

    def get_num_bytes(self, batch: Sequence[Clip]) -> int:
        return sum(clip.inputs.nbytes for clip in batch if clip.inputs is not None)

    def _device(self) -> Any:
        from ..models import limit_gpu_memory, resolve_device

        device = resolve_device(self.models.device)
        limit_gpu_memory(self.models.gpu_memory_fraction, device)
        return device


def padded(items: np.ndarray, multiple: int) -> np.ndarray:
    """`items` padded with zeros to a multiple of `multiple` rows. Every forward pass then has the same shape,
    so a clip's embedding does not depend on which clips shared its batch (kernels are chosen by shape), and
    reruns stay byte-identical however Beam batched them."""
    extra = -len(items) % multiple
    return np.concatenate([items, np.zeros((extra, *items.shape[1:]), items.dtype)]) if extra else items


class VisualEmbedder(_ClipModelHandler):
    """OpenCLIP image embeddings of each clip's sampled frames; the clip keeps their normalised mean."""

    def load_model(self) -> Any:
        from ..models import OpenClipImageModel

        return OpenClipImageModel.load(self.models.visual, self._device(), self.models.precision)

    def run_inference(self, batch: Sequence[Clip], model: Any, inference_args: dict[str, Any] | None = None) -> Iterable[Clip]:
        frames = [clip.inputs.frames for clip in batch]  # type: ignore[union-attr]
        size = self.models.visual.batch_size
        with timed(NAMESPACE, f"model:{VISUAL}"):
            per_frame = model.embed_images(padded(np.concatenate(frames), size), size)
        out, start = [], 0
        for clip, clip_frames in zip(batch, frames):
            rows, start = per_frame[start : start + len(clip_frames)], start + len(clip_frames)
            embeddings = {**clip.embeddings, VISUAL: mean_embedding(rows)}
            if self.models.visual.per_frame:
                embeddings[VISUAL_FRAMES] = rows
            out.append(dataclasses.replace(clip, embeddings=embeddings, models={**clip.models, VISUAL: model.card.to_dict()}))
        return out


class AudioEmbedder(_ClipModelHandler):
    """CLAP audio embeddings of each clip's audio (at the model's rate, `models.audio.max_s` long at most)."""

    def load_model(self) -> Any:
        from ..models import ClapAudioModel

        return ClapAudioModel.load(self.models.audio, self._device(), self.models.precision)

    def run_inference(self, batch: Sequence[Clip], model: Any, inference_args: dict[str, Any] | None = None) -> Iterable[Clip]:
        size = self.models.audio.batch_size
        audio = [clip.inputs.audio for clip in batch]  # type: ignore[union-attr]
        silence = np.zeros(1, np.float32)  # fills the last forward pass to `size` clips, as `padded` does
        with timed(NAMESPACE, f"model:{AUDIO}"):
            embedded = model.embed_audio(audio + [silence] * (-len(audio) % size), size)
        return [
            dataclasses.replace(
                clip, embeddings={**clip.embeddings, AUDIO: embedded[i]}, models={**clip.models, AUDIO: model.card.to_dict()}
            )
            for i, clip in enumerate(batch)
        ]


class LearnedStages(beam.PTransform):
    """PCollection[Clip kept by the decoder, with its model inputs] -> PCollection[Clip], embedded, scored,
    judged by the rules that waited for learned scores, and de-duplicated; the inputs are dropped.

    Each embedded clip is saved in the staging area (`avcurate.checkpoints`); clips an interrupted run embedded
    arrive with their embeddings instead of inputs and skip the models."""

    def __init__(self, cfg: Config, plan: LearnedPlan, staging_dir: str) -> None:
        super().__init__()
        self.cfg, self.plan, self.staging_dir = cfg, plan, staging_dir

    def expand(self, clips: Any) -> Any:
        models = self.cfg.models
        embedded_before = clips | "EmbeddedBefore" >> beam.Filter(lambda clip: clip.inputs is None)
        clips = clips | "ToEmbed" >> beam.Filter(lambda clip: clip.inputs is not None)
        if models.visual.name is not None:
            clips = clips | "VisualEmbeddings" >> RunInference(VisualEmbedder(models))
        if models.audio.name is not None:
            clips = clips | "AudioEmbeddings" >> RunInference(AudioEmbedder(models))
        embedded = clips | "SaveEmbedded" >> beam.Map(_drop_inputs) | "Checkpoint" >> beam.Map(
            lambda clip, staging: save_embedded(staging, clip), self.staging_dir
        )
        finished = (
            (embedded, embedded_before)
            | "AllEmbedded" >> beam.Flatten()
            # A runner that recomputes a lost Curate bundle after the embedding step consumed it (Dask) sends its
            # clips on again, now as embedded before: one of each, the two being equal.
            | "EmbeddedByKey" >> beam.Map(lambda clip: (clip.key, clip))
            | "OnePerClip" >> beam.CombinePerKey(_any)
            | "OneEach" >> beam.Values()
            | "LearnedScores" >> beam.Map(_Finish(self.cfg, self.plan))
        )
        dedup = self.cfg.dedup
        if dedup.embedding is None:
            return finished
        role = dedup.embedding
        duplicates = (
            finished
            | "Candidates" >> beam.FlatMap(lambda c: [(c.key, c.embeddings[role])] if c.status == KEPT else [])
            | "NearDuplicates" >> NearDuplicates(dedup)
        )
        return (
            {"clip": finished | "ByKey" >> beam.Map(lambda c: (c.key, c)), "duplicate": duplicates}
            | "JoinDuplicates" >> beam.CoGroupByKey()
            | "MarkDuplicates" >> beam.MapTuple(_MarkDuplicate(dedup.threshold))
        )


def _any(clips: Iterable[Clip]) -> Clip:
    return next(iter(clips))


def _drop_inputs(clip: Clip) -> Clip:
    return dataclasses.replace(clip, inputs=None)


class _Finish:
    def __init__(self, cfg: Config, plan: LearnedPlan) -> None:
        self.finish = LearnedFinish(cfg, plan)

    def __call__(self, clip: Clip) -> Clip:
        with timed(NAMESPACE, "score:learned"):
            done = self.finish(clip)
        if done.status != KEPT:
            _count_rejection(done.reasons)
        return done


class _MarkDuplicate:
    def __init__(self, threshold: float) -> None:
        self.threshold = threshold

    def __call__(self, key: str, joined: dict[str, list[Any]]) -> Clip:
        (clip,) = joined["clip"]
        if not joined["duplicate"]:
            return clip
        (duplicate_of, similarity), *_ = joined["duplicate"]
        marked = mark_duplicate(clip, duplicate_of, similarity, self.threshold)
        _count_rejection(marked.reasons[-1:])
        return marked


def _count_rejection(reasons: list[str]) -> None:
    """The decoder counted the clip as kept; it is rejected after all."""
    Metrics.counter(NAMESPACE, "clips_kept").dec()
    Metrics.counter(NAMESPACE, "clips_rejected").inc()
    for reason in reasons:
        Metrics.counter(NAMESPACE, f"rejected_{reason_name(reason)}").inc()
