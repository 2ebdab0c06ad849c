"""What every learned model shares: its card, the device it runs on, mixed precision, and how loading fails."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import torch
import torch.nn.functional as F

T = TypeVar("T")

HUB_PROBE_TIMEOUT_S = 3.0
# The end of a ModelUnavailable message for a model named on the hub
HUB_HINT = (
    "or set HF_HOME to a Hugging Face cache that holds it (downloaded elsewhere, e.g. with `hf download`), "
    "and HF_TOKEN for a gated repo"
)


class ModelUnavailable(RuntimeError):
    """A model could not be loaded: no weights here, no hub access, or a bad name or path.

    The message names the model, the cause, and what to configure instead.
    """


@dataclass(frozen=True)
class ModelCard:
    """Which model made an embedding; written into each clip's metadata next to it."""

    role: str  # model.VISUAL or model.AUDIO
    library: str  # "open_clip" or "transformers"
    library_version: str
    name: str
    pretrained: str | None  # OpenCLIP's tag or checkpoint file; None where the name says it all
    dim: int
    input: dict[str, Any]  # what the model is fed: {"image_size": 224} or {"sample_rate": 48000}

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def resolve_device(device: str) -> torch.device:
    """"auto" is cuda when there is one, else cpu; anything else is taken as torch names it ("cuda:1")."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


@contextlib.contextmanager
def autocast(device: torch.device, precision: str) -> Iterator[None]:
    """bfloat16 autocast on cuda for precision "amp"; full precision on cpu (bf16 there is slow) or for "fp32"."""
    if precision not in ("amp", "fp32"):
        raise ValueError(f"models.precision must be 'amp' or 'fp32', not {precision!r}")
    if device.type == "cuda" and precision == "amp":
        with torch.autocast(device_type="cuda", dtype=torch.bfloat16):
            yield
    else:
        yield


def limit_gpu_memory(fraction: float, device: torch.device) -> None:
    """Caps this process's CUDA caching allocator, so workers sharing a GPU cannot starve each other."""
    if device.type == "cuda":
        torch.cuda.set_per_process_memory_fraction(fraction, device)


def embed_in_chunks(
    items: Sequence[T] | np.ndarray, batch_size: int, dim: int, embed: Callable[[Any], np.ndarray]
) -> np.ndarray:
    """Runs `embed` on slices of at most batch_size items and stacks the float32 [n, dim] results."""
    chunks = [embed(items[i : i + batch_size]) for i in range(0, len(items), batch_size)]
    return np.concatenate(chunks) if chunks else np.zeros((0, dim), np.float32)


def unit_rows(features: torch.Tensor) -> np.ndarray:
    """float32 on the CPU, L2-normalised after the cast, so bfloat16 rounding still leaves unit vectors."""
    return F.normalize(features.float(), dim=-1).cpu().numpy()


def hub_reachable() -> bool:
    """One HEAD request to the hub endpoint (HF_ENDPOINT, proxies honoured) with a short timeout, no retries."""
    from huggingface_hub import constants
    from huggingface_hub.utils import get_session

    try:
        get_session().head(constants.ENDPOINT, timeout=HUB_PROBE_TIMEOUT_S)
    except Exception:  # any failure to get an answer means the same thing: the hub is not reachable from here
        return False
    return True


@contextlib.contextmanager
def offline_unless_hub_reachable() -> Iterator[bool]:
    """Runs a hub load in huggingface_hub's offline mode when the hub does not answer; yields that mode.

    Why: unreachable, huggingface_hub retries every file five times with backoff (about 23 s a file, and a load
    asks for several), where offline mode answers from the cache at once, or fails at once when it lacks the file.
    The flag is process-wide and read at each call (huggingface_hub.constants.is_offline_mode, which open_clip and
    transformers both go through), so it is set for the load only.
    """
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE or hub_reachable():
        yield constants.HF_HUB_OFFLINE
        return
    constants.HF_HUB_OFFLINE = True
    try:
        yield True
    finally:
        constants.HF_HUB_OFFLINE = False
