"""OpenCLIP image (and text) embeddings: frames prepared in the decoder, the model on the inference device.

Names are given as OpenCLIP users give them (VisualModelConfig):
  - an architecture and a pretrained tag: name "ViT-B-32", pretrained "laion2b_s34b_b79k" (weights from the
    hub, or its cache);
  - an architecture and a checkpoint file: name "ViT-B-32", pretrained "/path/to/open_clip_pytorch_model.bin";
  - "hf-hub:org/repo": config and weights from a hub repo (or its cache). Its tokenizer may itself be a Hugging
    Face tokenizer fetched from the hub (SigLIP, multilingual models): the same offline rules apply to it;
  - "local-dir:/path": a folder holding open_clip_config.json and the weights (open_clip_model.safetensors,
    open_clip_pytorch_model.bin, ...), and the tokenizer files when the model uses an HF tokenizer.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image

from avcurate.config import VisualModelConfig
from avcurate.model import VISUAL
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

HF_HUB_PREFIX = "hf-hub:"
LOCAL_DIR_PREFIX = "local-dir:"
RESIZE_MODES = ("shortest", "longest", "squash")
CHECKPOINT_SUFFIXES = (".bin", ".pt", ".pth", ".safetensors", ".npz")


@dataclass(frozen=True)
class FramePrep:
    """The geometric half of OpenCLIP's eval preprocess, on uint8 RGB frames, with PIL as torchvision uses it.

    Runs in the sandboxed decoder, so it needs neither torch nor the model: the decoder hands over [S, S, 3]
    frames and the model does the rest (to float, /255, normalise) on its device.
    """

    image_size: int
    interpolation: str = "bicubic"  # OpenCLIP's: "bilinear", else bicubic ("random" means bicubic at eval)
    resize_mode: str = "shortest"  # shortest: resize + centre crop; longest: resize + pad; squash: stretch
    fill_color: int = 0  # padding for "longest"

    def __post_init__(self) -> None:
        if self.resize_mode not in RESIZE_MODES:
            raise ValueError(f"resize_mode must be one of {RESIZE_MODES}, not {self.resize_mode!r}")

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        """uint8 [H, W, 3] RGB -> uint8 [S, S, 3]."""
        image = Image.fromarray(frame)
        size = self.image_size
        resample = Image.Resampling.BILINEAR if self.interpolation == "bilinear" else Image.Resampling.BICUBIC
        width, height = image.size
        if self.resize_mode == "squash":
            return np.asarray(image.resize((size, size), resample))
        if self.resize_mode == "shortest":
            # torchvision's Resize(int): the short side becomes `size`, the long side is truncated, not rounded
            if width <= height:
                new_width, new_height = size, int(size * height / width)
            else:
                new_width, new_height = int(size * width / height), size
        else:
            # open_clip's ResizeKeepRatio(longest=1): the long side becomes `size`, both sides rounded
            ratio = max(height / size, width / size)
            new_width, new_height = round(width / ratio), round(height / ratio)
        if (new_width, new_height) != (width, height):
            image = image.resize((new_width, new_height), resample)
        return _center_crop_or_pad(np.asarray(image), size, self.fill_color)


def _center_crop_or_pad(image: np.ndarray, size: int, fill: int) -> np.ndarray:
    """torchvision's center_crop / open_clip's center_crop_or_pad on an [H, W, 3] array: same offsets."""
    height, width = image.shape[:2]
    if size > height or size > width:
        pad_top = (size - height) // 2 if size > height else 0
        pad_left = (size - width) // 2 if size > width else 0
        padded = np.full((max(size, height), max(size, width), 3), fill, dtype=image.dtype)
        padded[pad_top : pad_top + height, pad_left : pad_left + width] = image
        image = padded
        height, width = image.shape[:2]
    top = int(round((height - size) / 2.0))
    left = int(round((width - size) / 2.0))
    return np.ascontiguousarray(image[top : top + size, left : left + size])


class OpenClipImageModel:
    """An OpenCLIP model loaded for inference: image embeddings of prepared frames, text embeddings of prompts."""

    def __init__(
        self,
        model: torch.nn.Module,
        tokenizer: Any,
        preprocess_cfg: dict[str, Any],
        cfg: VisualModelConfig,
        device: torch.device,
        precision: str,
    ) -> None:
        import open_clip

        size = preprocess_cfg["size"]
        if not isinstance(size, int):
            if len(set(size)) != 1:
                raise ModelUnavailable(f"visual model {cfg.name!r}: non-square input {tuple(size)} is not supported")
            size = size[0]
        self.model = model
        self.tokenizer = tokenizer
        self.device = device
        self.precision = precision
        self.batch_size = cfg.batch_size
        self.prep = FramePrep(
            image_size=int(size),
            interpolation=preprocess_cfg["interpolation"],
            resize_mode=preprocess_cfg["resize_mode"],
            fill_color=int(preprocess_cfg.get("fill_color", 0)),
        )
        self._mean = torch.tensor(preprocess_cfg["mean"], dtype=torch.float32, device=device).view(1, -1, 1, 1)
        self._std = torch.tensor(preprocess_cfg["std"], dtype=torch.float32, device=device).view(1, -1, 1, 1)
        self.logit_scale = float(model.logit_scale.detach().float().exp().item())
        self.dim = int(self._embed_text_chunk(["a photo."]).shape[1])  # no config field holds it for every tower kind
        self.card = ModelCard(
            role=VISUAL,
            library="open_clip",
            library_version=open_clip.__version__,
            name=str(cfg.name),
            pretrained=cfg.pretrained,
            dim=self.dim,
            input={
                "image_size": self.prep.image_size,
                "interpolation": self.prep.interpolation,
                "resize_mode": self.prep.resize_mode,
            },
        )

    @classmethod
    def load(cls, cfg: VisualModelConfig, device: torch.device | str, precision: str) -> OpenClipImageModel:
        """Loads through OpenCLIP's own factory; any failure is a ModelUnavailable saying what to pass instead."""
        import open_clip

        if cfg.name is None:
            raise ModelUnavailable("models.visual.name is not set: no visual model to load")
        device = resolve_device(device) if isinstance(device, str) else device
        _check_name(cfg)
        needs_hub = cfg.name.startswith(HF_HUB_PREFIX) or (
            not cfg.name.startswith(LOCAL_DIR_PREFIX) and not _is_path(str(cfg.pretrained))
        )
        offline = False
        try:
            with offline_unless_hub_reachable() if needs_hub else nullcontext(False) as offline:
                # create_model_from_pretrained, not create_model_and_transforms: the latter warns and carries on
                # with random weights when a checkpoint is missing (hf-hub weights, a local-dir with none)
                model = open_clip.create_model_from_pretrained(
                    cfg.name, cfg.pretrained, device="cpu", return_transform=False
                )
                tokenizer = open_clip.get_tokenizer(cfg.name)
        except (OSError, RuntimeError, ValueError, KeyError) as err:
            raise ModelUnavailable(_unavailable_message(cfg, err, offline)) from err
        model = model.to(device).eval()
        return cls(model, tokenizer, dict(model.visual.preprocess_cfg), cfg, device, precision)

    def embed_images(self, frames: np.ndarray, batch_size: int | None = None) -> np.ndarray:
        """uint8 [N, S, S, 3] frames from `prep` -> float32 [N, D], L2-normalised."""
        if frames.ndim != 4 or frames.shape[1:] != (self.prep.image_size, self.prep.image_size, 3):
            raise ValueError(f"frames must be [N, {self.prep.image_size}, {self.prep.image_size}, 3], not {frames.shape}")
        return embed_in_chunks(frames, batch_size or self.batch_size, self.dim, self._embed_image_chunk)

    def embed_texts(self, texts: Sequence[str], batch_size: int | None = None) -> np.ndarray:
        """Prompts -> float32 [T, D], L2-normalised."""
        return embed_in_chunks(texts, batch_size or self.batch_size, self.dim, self._embed_text_chunk)

    def _embed_image_chunk(self, frames: np.ndarray) -> np.ndarray:
        with torch.inference_mode(), autocast(self.device, self.precision):
            pixels = torch.from_numpy(np.ascontiguousarray(frames)).to(self.device)
            # ToTensor then Normalize, as OpenCLIP's eval transform does them, on the device
            pixels = pixels.permute(0, 3, 1, 2).float().div(255)
            pixels = (pixels - self._mean) / self._std
            features = self.model.encode_image(pixels)
        return unit_rows(features)

    def _embed_text_chunk(self, texts: Sequence[str]) -> np.ndarray:
        with torch.inference_mode(), autocast(self.device, self.precision):
            tokens = self.tokenizer(list(texts)).to(self.device)
            features = self.model.encode_text(tokens)
        return unit_rows(features)


def _check_name(cfg: VisualModelConfig) -> None:
    """Names OpenCLIP would misread without an error of its own."""
    assert cfg.name is not None
    if cfg.name.startswith((HF_HUB_PREFIX, LOCAL_DIR_PREFIX)):
        if cfg.pretrained is not None:
            # open_clip only logs that it ignores `pretrained` here: say so before weights are silently swapped
            raise ModelUnavailable(
                f"visual model {cfg.name!r}: models.visual.pretrained ({cfg.pretrained!r}) is ignored for "
                f"'{HF_HUB_PREFIX}' and '{LOCAL_DIR_PREFIX}' names, which carry their own weights; remove it"
            )
        return
    if cfg.pretrained is None:
        raise ModelUnavailable(
            f"visual model {cfg.name!r} has no weights: set models.visual.pretrained to a tag "
            f"(open_clip.list_pretrained_tags_by_model({cfg.name!r})) or /path/to/open_clip_pytorch_model.bin"
        )
    if _is_path(cfg.pretrained) and not os.path.isfile(cfg.pretrained):
        # open_clip would take it for an unknown tag, and say so
        raise ModelUnavailable(
            f"visual model {cfg.name!r}: checkpoint file {cfg.pretrained!r} not found. Pass "
            f"models.visual.pretrained: /path/to/open_clip_pytorch_model.bin (an existing file) or a tag"
        )


def _is_path(pretrained: str) -> bool:
    """OpenCLIP's tags ("laion2b_s34b_b79k", "openai") are plain words; a checkpoint is a file path."""
    return os.sep in pretrained or pretrained.endswith(CHECKPOINT_SUFFIXES) or os.path.isfile(pretrained)


def _unavailable_message(cfg: VisualModelConfig, err: BaseException, offline: bool) -> str:
    name, pretrained = cfg.name, cfg.pretrained
    assert name is not None
    where = " (offline: the hub is unreachable or HF_HUB_OFFLINE is set)" if offline else ""
    head = f"visual model {name!r}" + (f" with pretrained {pretrained!r}" if pretrained else "")
    head += f" could not be loaded{where}: {type(err).__name__}: {err}. "
    if name.startswith(LOCAL_DIR_PREFIX):
        return head + (
            "Pass models.visual.name: local-dir:/path/to/folder holding open_clip_config.json and the weights "
            "(open_clip_model.safetensors or open_clip_pytorch_model.bin)"
        )
    local_dir = "models.visual.name: local-dir:/path/to/folder with open_clip_config.json and the weights"
    if name.startswith(HF_HUB_PREFIX):
        return head + f"Pass {local_dir} (the repo's files, downloaded elsewhere), {HUB_HINT}"
    return head + (
        f"Pass models.visual.pretrained: /path/to/open_clip_pytorch_model.bin (a checkpoint for {name}), "
        f"or {local_dir}, {HUB_HINT}"
    )
