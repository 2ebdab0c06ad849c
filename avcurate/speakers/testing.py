"""A tiny pyannote.audio speaker-diarization pipeline with random weights, saved as a real local pipeline folder.

What is real: the pipeline (pyannote.audio's SpeakerDiarization, the class the hub's
pyannote/speaker-diarization-community-1 names), its config.yaml in the hub repo's layout ("$model/<subfolder>"
entries, dependencies, frozen hyper-parameters), the checkpoint formats (Lightning checkpoints with pyannote's
"pyannote.audio" section, written by the models' own on_save_checkpoint; PLDA .npz files), the model classes
(PyanNet powerset segmentation over 10 s chunks with 3 local speakers, at most 2 at a time, as community-1's;
an x-vector speaker embedding from pyannote.audio.models.embedding), VBx clustering, and the loading path
(Pipeline.from_pretrained on the folder, which loads every part through Model.from_pretrained / PLDA.from_pretrained).

What is random: every weight (seeded, so the folder is the same on every call) and the PLDA (a random
orthonormal transform and decreasing between-class variances). The turns it finds mean nothing; the tests use it
to exercise loading, the in-memory waveform path, the output conversion and determinism, not accuracy.
It is smaller than the real one: the segmentation's LSTM and linear layers are narrower (the SincNet front end is
the real size), the embedding is an MFCC x-vector instead of WeSpeaker's ResNet34, the embedding 128-d.

With full_size=True the models have community-1's architectures instead (PyanNet with a 4-layer bidirectional
LSTM of 128 units; WeSpeaker ResNet34, 256-d), still random: for timing and memory (benchmarks/bench_pyannote.py),
as the real pipeline costs the same compute up to what the clustering does with real embeddings.
"""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("PYANNOTE_METRICS_ENABLED", "false")  # before pyannote is imported: no telemetry

import numpy as np
import torch
import yaml

TINY_EMBEDDING_DIM = 128
FULL_EMBEDDING_DIM = 256  # WeSpeaker ResNet34's
TINY_LDA_DIM = 128  # pyannote's PLDA keeps its first 128 dimensions (PLDA(lda_dimension=128))


def _checkpoint(model: torch.nn.Module) -> dict:
    """What Lightning's trainer.save_checkpoint would write for an untrained model, pyannote's section included."""
    import lightning

    checkpoint = {
        "state_dict": model.state_dict(),
        "hyper_parameters": dict(model.hparams),
        "pytorch-lightning_version": lightning.__version__,
    }
    model.on_save_checkpoint(checkpoint)  # adds checkpoint["pyannote.audio"]: versions, architecture, specifications
    return checkpoint


def _segmentation(full_size: bool) -> torch.nn.Module:
    from pyannote.audio.core.task import Problem, Resolution, Specifications
    from pyannote.audio.models.segmentation import PyanNet

    if full_size:
        model = PyanNet(lstm={"hidden_size": 128, "num_layers": 4}, linear={"hidden_size": 128, "num_layers": 2})
    else:
        model = PyanNet(lstm={"hidden_size": 32, "num_layers": 1}, linear={"hidden_size": 32, "num_layers": 1})
    model.specifications = Specifications(
        problem=Problem.MONO_LABEL_CLASSIFICATION,
        resolution=Resolution.FRAME,
        duration=10.0,
        min_duration=10.0,
        warm_up=(0.0, 0.0),
        classes=["speaker#1", "speaker#2", "speaker#3"],
        powerset_max_classes=2,
        permutation_invariant=True,
    )
    model.build()  # the task-dependent classifier (7 powerset classes) and its activation
    return model


def _embedding(full_size: bool) -> torch.nn.Module:
    from pyannote.audio.core.task import Problem, Resolution, Specifications
    from pyannote.audio.models.embedding import WeSpeakerResNet34, XVectorMFCC

    if full_size:
        model = WeSpeakerResNet34()
    else:
        # 40 mel bands for 40 coefficients (torchaudio's default of 128 bands leaves some empty at n_fft 400)
        model = XVectorMFCC(mfcc={"melkwargs": {"n_mels": 40}}, dimension=TINY_EMBEDDING_DIM)
    model.specifications = Specifications(
        problem=Problem.REPRESENTATION, resolution=Resolution.CHUNK, duration=5.0, min_duration=0.5
    )
    return model


def _save_plda(folder: Path, dim: int, generator: np.random.Generator) -> None:
    lda_dim = TINY_LDA_DIM
    lda, _ = np.linalg.qr(generator.standard_normal((dim, lda_dim)))  # orthonormal columns
    np.savez(
        folder / "xvec_transform.npz",
        mean1=0.01 * generator.standard_normal(dim),
        mean2=0.01 * generator.standard_normal(lda_dim),
        lda=lda,
    )
    transform, _ = np.linalg.qr(generator.standard_normal((lda_dim, lda_dim)))
    np.savez(
        folder / "plda.npz",
        mu=np.zeros(lda_dim),
        tr=transform,
        psi=np.sort(generator.uniform(0.1, 10.0, lda_dim))[::-1],
    )


def tiny_pipeline_config() -> dict:
    """config.yaml of the tiny pipeline: community-1's layout and hyper-parameters, parts found by subfolder."""
    import pyannote.audio

    return {
        "dependencies": {"pyannote.audio": pyannote.audio.__version__},
        "pipeline": {
            "name": "pyannote.audio.pipelines.SpeakerDiarization",
            "params": {
                "segmentation": "$model/segmentation",
                "embedding": "$model/embedding",
                "plda": "$model/plda",
                "clustering": "VBxClustering",
                "embedding_exclude_overlap": True,
                "segmentation_batch_size": 32,
                "embedding_batch_size": 32,
            },
        },
        "params": {
            "segmentation": {"min_duration_off": 0.0},
            "clustering": {"threshold": 0.6, "Fa": 0.07, "Fb": 0.8},
        },
    }


def save_tiny_pyannote_pipeline(folder: str | Path, full_size: bool = False) -> str:
    """Writes folder/{config.yaml, segmentation/, embedding/, plda/}; returns the folder, for diarization.pipeline.

    Seeded: the same folder contents (weights included) on every call. Takes under a second (pyannote's import
    aside); full_size: community-1's architectures, random (about 30 MB).
    """
    folder = Path(folder)
    for part in ("segmentation", "embedding", "plda"):
        (folder / part).mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    torch.save(_checkpoint(_segmentation(full_size)), folder / "segmentation" / "pytorch_model.bin")
    torch.save(_checkpoint(_embedding(full_size)), folder / "embedding" / "pytorch_model.bin")
    dim = FULL_EMBEDDING_DIM if full_size else TINY_EMBEDDING_DIM
    _save_plda(folder / "plda", dim, np.random.default_rng(0))
    (folder / "config.yaml").write_text(yaml.safe_dump(tiny_pipeline_config(), sort_keys=False), encoding="utf-8")
    return str(folder)
