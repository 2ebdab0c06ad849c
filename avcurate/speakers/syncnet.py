"""SyncNet lip-sync backend: the learned drop-in for `mouth_motion` (speakers.faces.lip_sync: syncnet).

SyncNet (Chung & Zisserman 2016, "Out of time: automated lip sync in the wild") embeds 0.2 s of sound (13 MFCC x
20 frames at 100 frames/s) and the 5 video frames of the same 0.2 s (at 25 fps) into one space, where in-sync
pairs lie close. The network here is the one of the public syncnet_python release (`SyncNetModel.S`, weights
`syncnet_v2.model`), with the same module and parameter names, so that file loads into it with strict=True:
whoever has it points `speakers.faces.syncnet_weights` at it and gets real SyncNet. No weights ship here, and
none are downloaded.

What is reproduced from syncnet_python (run_pipeline.py crops, SyncNetInstance.evaluate scores):

- the face crop: a square of side 2 * (1 + 0.4) * s around the box (s: half its larger side), from the box's
  centre row minus s down to plus 1.8 * s (so it shows the mouth and chin well), pixels outside the picture set
  to 110, resized to 224 x 224 with OpenCV's bilinear resize; the lip stream sees the whole crop, in colour,
  channels in OpenCV's BGR order, values 0-255 unnormalised;
- the sound: 16 kHz mono as 16-bit PCM values (the scale changes the log energies), MFCC exactly as
  python_speech_features.mfcc's defaults compute them (reimplemented here in numpy: pre-emphasis 0.97, 25 ms
  rectangular frames every 10 ms, the last one zero-padded, 512-point power spectrum / 512, 26 triangular mel
  filters on integer FFT bins, log, orthonormal DCT-II, 13 coefficients, lifter 22, c0 replaced by the log frame
  energy);
- the pairing: the lip window of frames v..v+4 goes with MFCC frames 4v..4v+19 at lag 0 (100 / 25 = 4 MFCC frames
  per video frame), and the score is the Euclidean distance between the two 1024-d embeddings
  (torch.nn.functional.pairwise_distance, eps included).

Where it differs (see also `similarity` and `offset_and_confidence`):

- boxes come from our detector (MTCNN by default), not S3FD: MTCNN's boxes are tighter (brow to chin, less
  forehead), so the same formula frames the face a little closer; the original also median-filters the box over
  13 frames of a track, which is the tracker's business here (`crop` sees one frame);
- frames are our decoded frames, not JPEG (ffmpeg -qscale:v 2) then XVID re-encoded crops;
- audio at another rate is resampled with torchaudio (the original lets ffmpeg resample); other frame rates than
  25 fps are handled by placing the 0.2 s audio window at the frame's time (round(t * 100 / fps) MFCC frames),
  while the lip window stays 5 frames, so it spans 5 / fps s instead of 0.2 s: SyncNet was trained at 25 fps,
  and the pipeline should decode faces at 25 fps for faithful scores;
- scores are placed at each window's centre frame (the original indexes them by first frame), and windows that
  run past the clip's ends are NaN, where the original compares with zero-padded embeddings.
"""

from __future__ import annotations

import contextlib
import math
import pickle
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from avcurate.models.base import ModelUnavailable

from .base import Face

SYNCNET_RATE = 16000  # Hz: the audio SyncNet's MFCC were computed from
SYNCNET_FPS = 25.0  # frames/s SyncNet was trained on
MFCC_HOP = 160  # samples (10 ms): 100 MFCC frames per second
MFCC_WINDOW = 400  # samples (25 ms)
MFCC_FFT = 512
MFCC_FILTERS = 26
MFCC_COEFFS = 13
MFCC_LIFTER = 22
PREEMPHASIS = 0.97
AUDIO_WINDOW = 20  # MFCC frames per audio input: 0.2 s
LIP_WINDOW = 5  # video frames per lip input: 0.2 s at 25 fps
CROP_SIZE = 224  # pixels, square: the lip stream's input size (its last 6 x 6 convolution needs exactly this)
CROP_SCALE = 0.40  # run_pipeline.py's --crop_scale
CROP_FILL = 110  # run_pipeline.py's padding value, outside the picture
EMBED_DIM = 1024


# ---------------------------------------------------------------------------------------------- the network


def _conv_bn_relu(layers: list[nn.Module], conv: nn.Module, channels: int, bn: type[nn.Module]) -> None:
    layers += [conv, bn(channels), nn.ReLU(inplace=True)]


def _audio_trunk() -> nn.Sequential:
    """[N, 1, 13, 20] MFCC -> [N, 512, 1, 1]. Indices (0 conv, 1 bn, 4, 5, 8, 9, 11, 12, 14, 15, 18, 19) are the
    public state dict's `netcnnaud.*` names."""
    layers: list[nn.Module] = []
    _conv_bn_relu(layers, nn.Conv2d(1, 64, (3, 3), (1, 1), (1, 1)), 64, nn.BatchNorm2d)
    layers.append(nn.MaxPool2d((1, 1), (1, 1)))
    _conv_bn_relu(layers, nn.Conv2d(64, 192, (3, 3), (1, 1), (1, 1)), 192, nn.BatchNorm2d)
    layers.append(nn.MaxPool2d((3, 3), (1, 2)))
    for c_in, c_out in ((192, 384), (384, 256), (256, 256)):
        _conv_bn_relu(layers, nn.Conv2d(c_in, c_out, (3, 3), padding=(1, 1)), c_out, nn.BatchNorm2d)
    layers.append(nn.MaxPool2d((3, 3), (2, 2)))
    _conv_bn_relu(layers, nn.Conv2d(256, 512, (5, 4)), 512, nn.BatchNorm2d)
    return nn.Sequential(*layers)


def _lip_trunk() -> nn.Sequential:
    """[N, 3, 5, 224, 224] BGR 0-255 -> [N, 512, 1, 1, 1]; same indices as `netcnnlip.*`."""
    layers: list[nn.Module] = []
    _conv_bn_relu(layers, nn.Conv3d(3, 96, (5, 7, 7), (1, 2, 2), 0), 96, nn.BatchNorm3d)
    layers.append(nn.MaxPool3d((1, 3, 3), (1, 2, 2)))
    _conv_bn_relu(layers, nn.Conv3d(96, 256, (1, 5, 5), (1, 2, 2), (0, 1, 1)), 256, nn.BatchNorm3d)
    layers.append(nn.MaxPool3d((1, 3, 3), (1, 2, 2), (0, 1, 1)))
    for _ in range(3):
        _conv_bn_relu(layers, nn.Conv3d(256, 256, (1, 3, 3), padding=(0, 1, 1)), 256, nn.BatchNorm3d)
    layers.append(nn.MaxPool3d((1, 3, 3), (1, 2, 2)))
    _conv_bn_relu(layers, nn.Conv3d(256, 512, (1, 6, 6)), 512, nn.BatchNorm3d)
    return nn.Sequential(*layers)


def _head(dim: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(512, 512), nn.BatchNorm1d(512), nn.ReLU(), nn.Linear(512, dim))


class SyncNet(nn.Module):
    """Two streams to one 1024-d space; attribute names are syncnet_python's (netcnnaud, netfcaud, netfclip,
    netcnnlip), registered in its order, so `state_dict()` has its keys in its order."""

    def __init__(self, dim: int = EMBED_DIM) -> None:
        super().__init__()
        self.netcnnaud = _audio_trunk()
        self.netfcaud = _head(dim)
        self.netfclip = _head(dim)
        self.netcnnlip = _lip_trunk()

    def forward_aud(self, mfcc: torch.Tensor) -> torch.Tensor:
        """[N, 1, 13, 20] -> [N, dim]."""
        return self.netfcaud(self.netcnnaud(mfcc).flatten(1))

    def forward_lip(self, frames: torch.Tensor) -> torch.Tensor:
        """[N, 3, 5, 224, 224] (BGR, 0-255) -> [N, dim]."""
        return self.netfclip(self.netcnnlip(frames).flatten(1))


# ------------------------------------------------------------------------------------------ weights on disk

_PREFIXES = ("__S__.", "module.")  # SyncNetInstance's attribute; DataParallel
_WRAPPERS = ("state_dict", "model_state_dict", "model", "net")
_UNPICKLE_ERRORS = (pickle.UnpicklingError, AttributeError, ModuleNotFoundError)


def _safe_module_globals() -> list[Any]:
    """What a whole pickled `SyncNetModel.S` (SyncNetModel.save) needs beyond tensors: torch.nn's layer classes
    and S itself, which is rebuilt as our SyncNet. Loaded with weights_only=True, so nothing else can run."""
    layers = [nn.Sequential, nn.Conv2d, nn.Conv3d, nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.ReLU,
              nn.MaxPool2d, nn.MaxPool3d, nn.Linear]  # fmt: skip
    return [*layers, (SyncNet, "SyncNetModel.S"), (SyncNet, "__main__.S")]


def _read(path: Path) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except _UNPICKLE_ERRORS as first:
        try:
            with torch.serialization.safe_globals(_safe_module_globals()):
                return torch.load(path, map_location="cpu", weights_only=True)
        except Exception:
            raise first from None


def _state_dict(obj: Any) -> dict[str, torch.Tensor]:
    """The tensors of whatever the file held: a state dict (syncnet_v2.model), one wrapped in a checkpoint dict,
    SyncNetInstance's (keys under `__S__.`), or a whole pickled module."""
    if isinstance(obj, nn.Module):
        obj = obj.state_dict()
    if isinstance(obj, Mapping):
        for key in _WRAPPERS:
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"holds a {type(obj).__name__}, not a state dict of tensors")
    state = {}
    for key, value in obj.items():
        while key.startswith(_PREFIXES):
            key = key.split(".", 1)[1]
        state[key] = value
    return state


def load_syncnet(path: str | Path) -> SyncNet:
    """A SyncNet with the weights in `path` (on cpu, in eval mode). Raises ModelUnavailable."""
    path = Path(path)
    hint = (
        "speakers.faces.syncnet_weights must name a local copy of syncnet_python's syncnet_v2.model (a state dict "
        "of SyncNetModel.S), or set speakers.faces.lip_sync: mouth_motion, which needs no weights"
    )
    if not path.is_file():
        raise ModelUnavailable(f"SyncNet weights {str(path)!r}: no such file; {hint}")
    try:
        state = _state_dict(_read(path))
    except Exception as err:
        why = str(err).strip().splitlines()[0][:300] if str(err).strip() else type(err).__name__
        raise ModelUnavailable(
            f"SyncNet weights {str(path)!r}: cannot be read as SyncNet weights ({why}); {hint}. A whole pickled "
            "model that will not load here can be turned into a state dict where syncnet_python runs: "
            "torch.save(torch.load(path, weights_only=False).state_dict(), 'syncnet_v2.model')"
        ) from err
    net = SyncNet()
    # BatchNorm's batch counter postdates the public file's PyTorch; it is unused in eval mode
    for key, value in net.state_dict().items():
        if key.endswith(".num_batches_tracked"):
            state.setdefault(key, torch.zeros_like(value))
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as err:
        detail = str(err).split("\n", 1)[-1].strip()[:600]
        raise ModelUnavailable(f"SyncNet weights {str(path)!r} do not fit SyncNet ({detail}); {hint}") from err
    return net.eval()


def save_random_syncnet(path: str | Path, seed: int = 0) -> Path:
    """A randomly initialised SyncNet saved as syncnet_v2.model is (a plain state dict of SyncNetModel.S, no key
    prefix), with non-trivial BatchNorm statistics so eval mode is not an identity. For tests and benchmarks:
    random weights cost what trained ones cost, and their scores mean nothing."""
    generator = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = SyncNet()
    for module in net.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            n = module.num_features
            module.running_mean.copy_(0.1 * torch.randn(n, generator=generator))
            module.running_var.copy_(1.0 + 0.5 * torch.rand(n, generator=generator))
    path = Path(path)
    torch.save(net.state_dict(), path)
    return path


# ------------------------------------------------------------------------------------------------ MFCC


def _hz_to_mel(hz: np.ndarray) -> np.ndarray:
    return 2595.0 * np.log10(1.0 + hz / 700.0)


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    return 700.0 * (10.0 ** (mel / 2595.0) - 1.0)


def _mel_filters(rate: int = SYNCNET_RATE) -> np.ndarray:
    """[26, 257] triangles between mel-spaced points snapped down to FFT bins (floor((nfft + 1) * f / rate))."""
    edges = np.floor((MFCC_FFT + 1) * _mel_to_hz(np.linspace(0.0, _hz_to_mel(rate / 2), MFCC_FILTERS + 2)) / rate)
    edges = edges.astype(int)
    bins = np.arange(MFCC_FFT // 2 + 1)
    filters = np.zeros((MFCC_FILTERS, bins.size))
    for j in range(MFCC_FILTERS):
        lo, mid, hi = edges[j : j + 3]
        rise = (bins >= lo) & (bins < mid)
        fall = (bins >= mid) & (bins < hi)
        filters[j, rise] = (bins[rise] - lo) / (mid - lo)
        filters[j, fall] = (hi - bins[fall]) / (hi - mid)
    return filters


def _dct_ortho(n: int, keep: int) -> np.ndarray:
    """[n, keep]: the first `keep` orthonormal DCT-II basis vectors (scipy's dct(type=2, norm='ortho'))."""
    k = np.arange(keep)[None, :]
    i = np.arange(n)[:, None]
    basis = np.cos(np.pi * k * (2 * i + 1) / (2 * n)) * math.sqrt(2.0 / n)
    basis[:, 0] /= math.sqrt(2.0)
    return basis


_FILTERS = _mel_filters()
_DCT = _dct_ortho(MFCC_FILTERS, MFCC_COEFFS)
_LIFTER = 1.0 + (MFCC_LIFTER / 2.0) * np.sin(np.pi * np.arange(MFCC_COEFFS) / MFCC_LIFTER)


def mfcc(pcm: np.ndarray) -> np.ndarray:
    """[frames, 13] MFCC of 16 kHz audio in 16-bit PCM units, as python_speech_features.mfcc(pcm, 16000) gives.

    Frames every 10 ms; the count is 1 + ceil((len - 400) / 160) (the last frame zero-padded), 1 for short audio.
    """
    x = np.asarray(pcm, np.float64)
    if x.size == 0:
        return np.zeros((0, MFCC_COEFFS), np.float64)
    x = np.concatenate([x[:1], x[1:] - PREEMPHASIS * x[:-1]])
    count = 1 if x.size <= MFCC_WINDOW else 1 + math.ceil((x.size - MFCC_WINDOW) / MFCC_HOP)
    x = np.pad(x, (0, (count - 1) * MFCC_HOP + MFCC_WINDOW - x.size))
    frames = np.lib.stride_tricks.sliding_window_view(x, MFCC_WINDOW)[::MFCC_HOP][:count]
    power = np.abs(np.fft.rfft(frames, MFCC_FFT)) ** 2 / MFCC_FFT
    tiny = np.finfo(float).eps
    energy = power.sum(1)
    energy = np.where(energy == 0, tiny, energy)
    banks = power @ _FILTERS.T
    banks = np.where(banks == 0, tiny, banks)
    out = (np.log(banks) @ _DCT) * _LIFTER
    out[:, 0] = np.log(energy)
    return out


def to_pcm16(audio: np.ndarray, rate: int) -> np.ndarray:
    """Mono float audio at `rate` as 16 kHz 16-bit PCM values (float64), what syncnet_python reads from its wav."""
    from ..models import resample_for_model

    audio = resample_for_model(np.asarray(audio, np.float32), rate, SYNCNET_RATE)
    return np.clip(np.round(audio.astype(np.float64) * 32768.0), -32768, 32767)


# ------------------------------------------------------------------------------------------------ the crop


def crop_box(box: tuple[float, float, float, float]) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1) in frame pixels, integers, of run_pipeline.py's crop of a face box: a square of side
    2.8 s (s: half the box's larger side) centred on the box horizontally, from its centre row minus s down."""
    x0, y0, x1, y1 = box
    s = max(x1 - x0, y1 - y0) / 2
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    pad = int(s * (1 + 2 * CROP_SCALE))  # the original pads the frame by this and truncates padded coordinates
    return (
        int(cx + pad - s * (1 + CROP_SCALE)) - pad,
        int(cy + pad - s) - pad,
        int(cx + pad + s * (1 + CROP_SCALE)) - pad,
        int(cy + pad + s * (1 + 2 * CROP_SCALE)) - pad,
    )


def face_crop(rgb: np.ndarray, face: Face) -> np.ndarray:
    """uint8 [224, 224, 3] RGB: the crop SyncNet's lip stream sees (module docstring), 110 outside the frame."""
    import cv2

    h, w = rgb.shape[:2]
    x0, y0, x1, y1 = crop_box(face.box)
    if x1 <= x0 or y1 <= y0:
        return np.full((CROP_SIZE, CROP_SIZE, 3), CROP_FILL, np.uint8)
    region = np.full((y1 - y0, x1 - x0, 3), CROP_FILL, np.uint8)
    sx0, sy0, sx1, sy1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
    if sx1 > sx0 and sy1 > sy0:
        region[sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0] = rgb[sy0:sy1, sx0:sx1]
    return cv2.resize(region, (CROP_SIZE, CROP_SIZE), interpolation=cv2.INTER_LINEAR)


# ------------------------------------------------------------------------------------------------ scores


@contextlib.contextmanager
def _deterministic(device: torch.device) -> Iterator[None]:
    if device.type == "cuda":
        with torch.backends.cudnn.flags(enabled=True, benchmark=False, deterministic=True, allow_tf32=False):
            yield
    else:
        yield


def audio_window_starts(frames: int, fps: float, max_lag: int) -> np.ndarray:
    """int [2 * max_lag + 1, frames]: the first MFCC frame of the 0.2 s of audio paired with the lip window
    centred on each frame at each lag: round((t - 2 + lag) * 100 / fps) (4 * (t - 2 + lag) at 25 fps)."""
    t = np.arange(frames)[None, :] - LIP_WINDOW // 2
    lags = np.arange(-max_lag, max_lag + 1)[:, None]
    return np.floor((t + lags) * (SYNCNET_RATE / MFCC_HOP) / fps + 0.5).astype(np.int64)


class SyncNetLipSync:
    """`LipSyncBackend` with SyncNet: similarity = minus the embedding distance (module docstring)."""

    name = "syncnet"
    # SyncNet confidence (median - min distance over lags) that lip-sync datasets commonly require of a speaking
    # face with the public weights; not measured here (no real weights on this machine).
    default_speaking_threshold = 3.0

    def __init__(self, net: SyncNet, device: torch.device | str = "cpu", batch_size: int = 32) -> None:
        self.device = torch.device(device)
        self.net = net.to(self.device).eval()
        self.batch_size = batch_size

    @classmethod
    def load(cls, weights_path: str | Path, device: torch.device | str = "cpu", batch_size: int = 32) -> SyncNetLipSync:
        """Raises ModelUnavailable when the file is missing or is not SyncNet's weights."""
        return cls(load_syncnet(weights_path), device, batch_size)

    def crop(self, rgb: np.ndarray, face: Face) -> np.ndarray:
        return face_crop(rgb, face)

    def similarity(self, crops: np.ndarray, audio: np.ndarray, rate: int, fps: float, max_lag: int) -> np.ndarray:
        """float32 [2 * max_lag + 1, frames] of -distance(lip window centred on t, audio window at t + lag).

        Frame t's lip window is frames t-2..t+2, its audio 20 MFCC frames from `audio_window_starts`; NaN where
        either runs past the clip (the first and last 2 frames always; more at lags reaching past the audio).
        Each lip and audio window is embedded once, in batches, on the backend's device, in eval mode: a
        window's score depends only on its own pixels and samples, so the result does not depend on batching
        beyond float rounding, and is the same on every run.
        """
        crops = np.asarray(crops)
        frames = crops.shape[0]
        out = np.full((2 * max_lag + 1, frames), np.nan, np.float32)
        if frames < LIP_WINDOW:
            return out
        feats = mfcc(to_pcm16(audio, rate)).astype(np.float32)  # [n, 13]
        starts = audio_window_starts(frames, fps, max_lag)
        half = LIP_WINDOW // 2
        centre = np.arange(frames)
        ok = (starts >= 0) & (starts + AUDIO_WINDOW <= feats.shape[0])
        ok &= ((centre >= half) & (centre < frames - half))[None, :]
        if not ok.any():
            return out
        lips = np.flatnonzero(ok.any(0))
        windows = np.unique(starts[ok])
        with torch.inference_mode(), _deterministic(self.device):
            lip_emb = self._embed_lips(crops, lips)
            aud_emb = self._embed_audio(feats, windows)
            rows, cols = np.nonzero(ok)
            lip_at = np.searchsorted(lips, cols)
            aud_at = np.searchsorted(windows, starts[rows, cols])
            dist = F.pairwise_distance(lip_emb[torch.from_numpy(lip_at).to(self.device)],
                                       aud_emb[torch.from_numpy(aud_at).to(self.device)])  # fmt: skip
        out[rows, cols] = -dist.float().cpu().numpy()
        return out

    def _embed_lips(self, crops: np.ndarray, centres: np.ndarray) -> torch.Tensor:
        # [3, frames, 224, 224] BGR uint8, held on the device once; windows gathered from it batch by batch
        video = torch.from_numpy(np.ascontiguousarray(crops[..., ::-1])).to(self.device).permute(3, 0, 1, 2)
        offsets = torch.arange(LIP_WINDOW, device=self.device) - LIP_WINDOW // 2
        out = []
        for i in range(0, len(centres), self.batch_size):
            idx = torch.from_numpy(centres[i : i + self.batch_size]).to(self.device)[:, None] + offsets
            batch = video[:, idx].permute(1, 0, 2, 3, 4).float()  # [B, 3, 5, 224, 224], 0-255
            out.append(self.net.forward_lip(batch))
        return torch.cat(out)

    def _embed_audio(self, feats: np.ndarray, starts: np.ndarray) -> torch.Tensor:
        cc = torch.from_numpy(np.ascontiguousarray(feats.T)).to(self.device)  # [13, n]
        offsets = torch.arange(AUDIO_WINDOW, device=self.device)
        out = []
        step = self.batch_size * 8  # the audio stream is ~7x cheaper per window than the lip stream
        for i in range(0, len(starts), step):
            idx = torch.from_numpy(starts[i : i + step]).to(self.device)[:, None] + offsets
            batch = cc[:, idx].permute(1, 0, 2).unsqueeze(1)  # [B, 1, 13, 20]
            out.append(self.net.forward_aud(batch))
        return torch.cat(out)


# ------------------------------------------------------------------------------------------------ offset


@dataclass(frozen=True)
class SyncEstimate:
    """SyncNet's verdict on a clip. `lag_frames` > 0: the audio lags the picture (our convention, as
    ClipScores.av_offset_ms); syncnet_python prints the opposite sign as "AV offset" (its vshift - argmin)."""

    lag_frames: int
    offset_ms: float  # lag_frames * 1000 / fps
    confidence: float  # median - min of the mean distance curve (syncnet_python's "Confidence")
    min_distance: float  # the minimum of that curve ("Min dist")

    @property
    def syncnet_offset(self) -> int:
        return -self.lag_frames


def offset_and_confidence(similarity: np.ndarray, fps: float) -> SyncEstimate | None:
    """SyncNet's offset and confidence from a `similarity` matrix, as SyncNetInstance.evaluate computes them.

    The mean distance curve is mdist[lag] = -mean over frames of similarity[lag, t], taken over the frames
    scored at every lag (so each lag averages the same frames; where no frame is, over each lag's own frames).
    The offset is its argmin (first one on ties, as torch.min); confidence = median(mdist) - min(mdist), with
    torch.median's lower median for an even count. With 2 * max_lag + 1 rows the count is always odd.

    Differs from the original in the frames averaged only: it compares windows running past the clip's ends
    with zero vectors (its zero padding) instead of leaving them out. None when no frame is scored.
    """
    sim = np.asarray(similarity, np.float64)
    finite = np.isfinite(sim)
    if not finite.any():
        return None
    common = finite.all(0)
    if common.any():
        mdist = -sim[:, common].mean(1)
    else:
        with np.errstate(invalid="ignore"):
            counts = finite.sum(1)
            mdist = np.where(counts > 0, -np.where(finite, sim, 0.0).sum(1) / np.maximum(counts, 1), np.inf)
    max_lag = (sim.shape[0] - 1) // 2
    best = int(np.argmin(mdist))
    valid = np.sort(mdist[np.isfinite(mdist)])
    median = valid[(valid.size - 1) // 2]
    lag = best - max_lag
    return SyncEstimate(lag, lag * 1000.0 / fps, float(median - mdist[best]), float(mdist[best]))
