"""Speaker diarization with a pyannote.audio 4 pipeline (diarization.backend: pyannote).

`diarization.pipeline` is either a hub name (pyannote/speaker-diarization-community-1, gated: HF_TOKEN from the
environment, or a Hugging Face cache in HF_HOME that holds it) or a local pipeline folder: config.yaml plus the
subfolders its "$model/<subfolder>" entries name (segmentation/, embedding/, plda/ with their pytorch_model.bin
and .npz files: a copy of the hub repo), or the path of such a config.yaml. Pipeline.from_pretrained loads both.

The audio goes to the pipeline in memory ({"waveform", "sample_rate"}): pyannote decodes no file, so torchcodec is
never used. pyannote.audio sends usage telemetry unless PYANNOTE_METRICS_ENABLED is false: this module sets it
(if unset) before pyannote is imported.
"""

from __future__ import annotations

import os

os.environ.setdefault("PYANNOTE_METRICS_ENABLED", "false")  # before any pyannote import: no telemetry

import threading
from contextlib import nullcontext
from typing import Any

import numpy as np
import torch

from avcurate.config import DiarizationConfig
from avcurate.models.base import HUB_HINT, ModelUnavailable, offline_unless_hub_reachable, resolve_device
from avcurate.sandbox import heartbeat
from avcurate.speakers.base import Turn, relabel

# Loaded pipelines of this process, by (pipeline, device): a worker loads each once and its bundles share it.
_PIPELINES: dict[tuple[str, str], Any] = {}
_LOCK = threading.Lock()


class PyannoteDiarizer:
    """Who speaks when, from a pyannote.audio SpeakerDiarization pipeline; overlapping turns are kept."""

    name = "pyannote"
    detects_overlap = True  # its segmentation model marks overlapped speech

    def __init__(self, pipeline: Any, device: torch.device, source: str) -> None:
        self.pipeline = pipeline
        self.device = device
        self.source = source

    @classmethod
    def load(cls, cfg: DiarizationConfig) -> PyannoteDiarizer:
        """The pipeline `cfg.pipeline` on `cfg.device`, loaded once per process; ModelUnavailable when it cannot be."""
        device = resolve_device(cfg.device)
        key = (str(cfg.pipeline), str(device))
        with _LOCK:
            pipeline = _PIPELINES.get(key)
            if pipeline is None:
                pipeline = _load_pipeline(str(cfg.pipeline), device)
                _PIPELINES[key] = pipeline
        return cls(pipeline, device, str(cfg.pipeline))

    def diarize(self, audio: np.ndarray, rate: int) -> list[Turn]:
        """Turns of mono float32 `audio` at `rate` (pyannote resamples to its models' rate), relabelled S0, S1, ...

        Turns are clipped to the audio's duration (the last segmentation frame can reach past it); turns of
        different speakers may overlap.
        """
        samples = np.ascontiguousarray(audio, dtype=np.float32).reshape(-1)
        duration = len(samples) / rate
        if len(samples) < 2:  # pyannote takes a (channel, time) tensor with time >= channels
            return []
        waveform = torch.from_numpy(samples)[None]  # [1, n]
        # The hook reports progress (pyannote calls it per batch): in the decoder, a long source on CPU would
        # otherwise go silent for longer than decode.stall_timeout_s.
        output = self.pipeline({"waveform": waveform, "sample_rate": int(rate), "uri": "audio"}, hook=_progress)
        annotation = _speaker_diarization(output)
        turns = []
        for segment, _, speaker in annotation.itertracks(yield_label=True):
            start, end = max(0.0, float(segment.start)), min(duration, float(segment.end))
            if end > start:
                turns.append(Turn(start, end, str(speaker)))
        return relabel(turns)


def _speaker_diarization(output: Any) -> Any:
    """The Annotation with overlapping turns: pyannote 4's DiarizeOutput.speaker_diarization (its
    exclusive_speaker_diarization drops overlap), or the Annotation itself (legacy pipelines, pyannote 3)."""
    from pyannote.core import Annotation

    if isinstance(output, Annotation):
        return output
    annotation = getattr(output, "speaker_diarization", None)
    if not isinstance(annotation, Annotation):
        raise TypeError(f"pyannote pipeline returned {type(output).__name__}, which holds no speaker_diarization")
    return annotation


def _is_local(name: str) -> bool:
    """A path rather than a hub name ("owner/name"): it exists, or it is written as a path."""
    if os.path.exists(name):
        return True
    return os.path.isabs(name) or name.startswith(("./", "../", "~")) or name.count("/") > 1 or name.endswith(".yaml")


def _load_pipeline(name: str, device: torch.device) -> Any:
    local = _is_local(name)
    path = os.path.expanduser(name)
    if local and not os.path.exists(path):
        raise ModelUnavailable(f"pyannote pipeline folder {path!r} does not exist. " + _fix(local=True))
    offline = False
    try:
        from pyannote.audio import Pipeline

        # A hub load answers from the cache at once when the hub is unreachable (offline mode), instead of
        # retrying every file; a local folder needs no hub.
        with nullcontext(False) if local else offline_unless_hub_reachable() as offline:
            pipeline = Pipeline.from_pretrained(path if local else name, token=os.environ.get("HF_TOKEN"))
        if pipeline is None:
            raise ValueError("Pipeline.from_pretrained returned nothing")
        pipeline.to(device)
    except ModelUnavailable:
        raise
    except Exception as err:  # yaml, hub, checkpoint, import or device errors all mean: this pipeline is unavailable
        where = " (offline: the hub is unreachable or HF_HUB_OFFLINE is set)" if offline else ""
        what = "folder" if local else "hub pipeline"
        cause = f"{type(err).__name__}: {str(err).rstrip('.')}"
        raise ModelUnavailable(f"pyannote {what} {name!r} could not be loaded{where}: {cause}. " + _fix(local)) from err
    return pipeline


def _fix(local: bool) -> str:
    folder = (
        "diarization.pipeline: /path/to/folder with config.yaml and the subfolders it names (segmentation/, "
        "embedding/, plda/: a copy of the hub repo, e.g. `hf download pyannote/speaker-diarization-community-1 "
        "--local-dir ...` run where the hub is reachable)"
    )
    if local:
        return f"Pass {folder}, or a hub name."
    return (
        f"Pass {folder}, or a hub name with HF_TOKEN set to a token of an account that accepted the "
        f"pipeline's conditions on huggingface.co, {HUB_HINT}"
    )


def _progress(*_: Any, **__: Any) -> None:
    heartbeat()
