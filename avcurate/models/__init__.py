"""The learned models behind the inference stages: OpenCLIP for pictures, CLAP for sound (docs/models.md).

open_clip and transformers are imported only when a model is loaded: FramePrep and resample_for_model run in the
sandboxed decoder, which should not pay for them.
"""

from avcurate.models.base import ModelCard, ModelUnavailable, autocast, limit_gpu_memory, resolve_device
from avcurate.models.clap import ClapAudioModel, resample_for_model
from avcurate.models.openclip import FramePrep, OpenClipImageModel

__all__ = [
    "ClapAudioModel",
    "FramePrep",
    "ModelCard",
    "ModelUnavailable",
    "OpenClipImageModel",
    "autocast",
    "limit_gpu_memory",
    "resample_for_model",
    "resolve_device",
]
