"""The SyncNet lip-sync backend: its network fits syncnet_python's weights file, and its scores are wired right.

Random weights (`save_random_syncnet`, loaded through the real `load`) prove mechanics, not quality: which
windows are paired at which lag, where scores are undefined, that they are deterministic, and that they follow
the audio. Real material (a photograph's face found by MTCNN, espeak-ng speech) keeps the preprocessing honest.
"""

from __future__ import annotations

import sys
import types

import numpy as np
import pytest
import torch
from torch import nn

from avcurate.models import ModelUnavailable
from avcurate.speakers.base import Face
from avcurate.speakers.synth import speak
from avcurate.speakers.syncnet import (
    CROP_FILL,
    SyncNet,
    SyncNetLipSync,
    _audio_trunk,
    _head,
    _lip_trunk,
    crop_box,
    mfcc,
    offset_and_confidence,
    save_random_syncnet,
    to_pcm16,
)

FPS = 25.0
FRAMES = 26  # 1.04 s
MAX_LAG = 4
SAMPLES_PER_FRAME = 640  # 16 kHz / 25 fps

# The state dict of syncnet_python's SyncNetModel.S (what syncnet_v2.model holds), derived by hand from its
# nn.Sequential layouts: the index of every Conv / BatchNorm / Linear in netcnnaud, netfcaud, netfclip, netcnnlip
# (ReLU and MaxPool hold no parameters but take indices). BatchNorm's num_batches_tracked is left out: the public
# file predates it. A renamed, moved or resized layer fails `test_state_dict_is_syncnet_pythons`.
_BN = ("weight", "bias", "running_mean", "running_var")
PUBLIC_KEYS = [
    "netcnnaud.0.weight", "netcnnaud.0.bias",
    *(f"netcnnaud.1.{p}" for p in _BN),
    "netcnnaud.4.weight", "netcnnaud.4.bias",
    *(f"netcnnaud.5.{p}" for p in _BN),
    "netcnnaud.8.weight", "netcnnaud.8.bias",
    *(f"netcnnaud.9.{p}" for p in _BN),
    "netcnnaud.11.weight", "netcnnaud.11.bias",
    *(f"netcnnaud.12.{p}" for p in _BN),
    "netcnnaud.14.weight", "netcnnaud.14.bias",
    *(f"netcnnaud.15.{p}" for p in _BN),
    "netcnnaud.18.weight", "netcnnaud.18.bias",
    *(f"netcnnaud.19.{p}" for p in _BN),
    "netfcaud.0.weight", "netfcaud.0.bias",
    *(f"netfcaud.1.{p}" for p in _BN),
    "netfcaud.3.weight", "netfcaud.3.bias",
    "netfclip.0.weight", "netfclip.0.bias",
    *(f"netfclip.1.{p}" for p in _BN),
    "netfclip.3.weight", "netfclip.3.bias",
    "netcnnlip.0.weight", "netcnnlip.0.bias",
    *(f"netcnnlip.1.{p}" for p in _BN),
    "netcnnlip.4.weight", "netcnnlip.4.bias",
    *(f"netcnnlip.5.{p}" for p in _BN),
    "netcnnlip.8.weight", "netcnnlip.8.bias",
    *(f"netcnnlip.9.{p}" for p in _BN),
    "netcnnlip.11.weight", "netcnnlip.11.bias",
    *(f"netcnnlip.12.{p}" for p in _BN),
    "netcnnlip.14.weight", "netcnnlip.14.bias",
    *(f"netcnnlip.15.{p}" for p in _BN),
    "netcnnlip.18.weight", "netcnnlip.18.bias",
    *(f"netcnnlip.19.{p}" for p in _BN),
]  # fmt: skip
PUBLIC_SHAPES = {
    "netcnnaud.0.weight": (64, 1, 3, 3),
    "netcnnaud.4.weight": (192, 64, 3, 3),
    "netcnnaud.8.weight": (384, 192, 3, 3),
    "netcnnaud.11.weight": (256, 384, 3, 3),
    "netcnnaud.14.weight": (256, 256, 3, 3),
    "netcnnaud.18.weight": (512, 256, 5, 4),
    "netcnnaud.19.running_var": (512,),
    "netfcaud.0.weight": (512, 512),
    "netfcaud.3.weight": (1024, 512),
    "netfclip.3.weight": (1024, 512),
    "netcnnlip.0.weight": (96, 3, 5, 7, 7),
    "netcnnlip.4.weight": (256, 96, 1, 5, 5),
    "netcnnlip.8.weight": (256, 256, 1, 3, 3),
    "netcnnlip.11.weight": (256, 256, 1, 3, 3),
    "netcnnlip.14.weight": (256, 256, 1, 3, 3),
    "netcnnlip.18.weight": (512, 256, 1, 6, 6),
    "netcnnlip.19.running_mean": (512,),
}


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory):
    return save_random_syncnet(tmp_path_factory.mktemp("syncnet") / "syncnet_v2.model", seed=0)


@pytest.fixture(scope="module")
def backend(weights) -> SyncNetLipSync:
    return SyncNetLipSync.load(weights, "cpu", batch_size=16)


@pytest.fixture(scope="module")
def astronaut() -> tuple[np.ndarray, Face]:
    """scikit-image's astronaut photograph and her face as MTCNN finds it (box and 5 landmarks)."""
    skimage_data = pytest.importorskip("skimage.data")
    from facenet_pytorch import MTCNN

    rgb = skimage_data.astronaut()
    boxes, probs, landmarks = MTCNN(keep_all=True, device="cpu").detect(rgb, landmarks=True)
    assert boxes is not None and len(boxes) == 1
    return rgb, Face(tuple(float(v) for v in boxes[0]), float(probs[0]), landmarks[0])


@pytest.fixture(scope="module")
def crops(backend, astronaut) -> np.ndarray:
    """FRAMES crops of her face with the box shaking a few pixels from frame to frame, so every lip window
    differs (a still face would make every frame's embedding the same)."""
    rgb, face = astronaut
    rng = np.random.default_rng(0)
    out = []
    for _ in range(FRAMES):
        dx, dy = rng.integers(-4, 5, 2)
        x0, y0, x1, y1 = face.box
        out.append(backend.crop(rgb, Face((x0 + dx, y0 + dy, x1 + dx, y1 + dy), face.score, face.landmarks)))
    return np.stack(out)


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    audio = speak("Lip sync is measured on real speech, one fifth of a second at a time.")
    assert audio.size >= FRAMES * SAMPLES_PER_FRAME
    return audio[: FRAMES * SAMPLES_PER_FRAME]


@pytest.fixture(scope="module")
def scores(backend, crops, speech) -> np.ndarray:
    return backend.similarity(crops, speech, 16000, FPS, MAX_LAG)


# ------------------------------------------------------------------------------------------------ weights


def test_state_dict_is_syncnet_pythons(weights):
    net = SyncNet()
    keys = [k for k in net.state_dict() if not k.endswith(".num_batches_tracked")]
    assert keys == PUBLIC_KEYS
    state = net.state_dict()
    for key, shape in PUBLIC_SHAPES.items():
        assert tuple(state[key].shape) == shape, key
    saved = torch.load(weights, map_location="cpu", weights_only=True)  # a plain state dict, as the public file
    assert [k for k in saved if not k.endswith(".num_batches_tracked")] == PUBLIC_KEYS
    SyncNet().load_state_dict(saved, strict=True)
    # the streams' outputs: 0.2 s of MFCC and 5 crops each give one 1024-d embedding
    net.eval()
    with torch.inference_mode():
        assert net.forward_aud(torch.zeros(2, 1, 13, 20)).shape == (2, 1024)
        assert net.forward_lip(torch.zeros(2, 3, 5, 224, 224)).shape == (2, 1024)


class _PublicS(nn.Module):
    """Stands in for syncnet_python's SyncNetModel.S when pickled whole (its SyncNetModel.save)."""

    def __init__(self) -> None:
        super().__init__()
        self.__nFeatures__ = 24
        self.netcnnaud, self.netfcaud, self.netfclip, self.netcnnlip = _audio_trunk(), _head(1024), _head(1024), _lip_trunk()


def _save_whole_module(state: dict, path) -> None:
    module = types.ModuleType("SyncNetModel")
    _PublicS.__module__, _PublicS.__qualname__, _PublicS.__name__ = "SyncNetModel", "S", "S"
    module.S = _PublicS
    sys.modules["SyncNetModel"] = module
    try:
        public = _PublicS()
        public.load_state_dict(state)
        torch.save(public, path)
    finally:
        del sys.modules["SyncNetModel"]  # loading must not need it


def test_loads_every_format_the_file_comes_in(weights, tmp_path):
    reference = torch.load(weights, map_location="cpu", weights_only=True)
    legacy = {k: v for k, v in reference.items() if not k.endswith(".num_batches_tracked")}
    variants = {
        "legacy.model": legacy,  # no BatchNorm batch counters (pre-0.4.1 PyTorch)
        "instance.model": {f"__S__.{k}": v for k, v in legacy.items()},  # SyncNetInstance.state_dict()
        "checkpoint.pt": {"state_dict": reference, "epoch": 3},
    }
    for name, obj in variants.items():
        torch.save(obj, tmp_path / name)
    _save_whole_module(reference, tmp_path / "whole.model")
    for name in [*variants, "whole.model"]:
        net = SyncNetLipSync.load(tmp_path / name).net
        loaded = net.state_dict()
        for key in PUBLIC_KEYS:
            assert torch.equal(loaded[key], reference[key]), (name, key)
        assert not net.training


def test_missing_or_incompatible_weights_raise_model_unavailable(weights, tmp_path):
    missing = tmp_path / "nowhere" / "syncnet_v2.model"
    with pytest.raises(ModelUnavailable, match="no such file") as err:
        SyncNetLipSync.load(missing)
    assert str(missing) in str(err.value) and "speakers.faces.syncnet_weights" in str(err.value)

    (tmp_path / "junk.model").write_bytes(b"not a checkpoint")
    reference = torch.load(weights, map_location="cpu", weights_only=True)
    renamed = {k.replace("netcnnlip.18.", "netcnnlip.17."): v for k, v in reference.items()}
    torch.save(renamed, tmp_path / "renamed.model")
    resized = dict(reference, **{"netfcaud.3.weight": torch.zeros(512, 512), "netfcaud.3.bias": torch.zeros(512)})
    torch.save(resized, tmp_path / "resized.model")
    torch.save([1, 2, 3], tmp_path / "list.model")
    for name, why in (("junk.model", "cannot be read"), ("renamed.model", "netcnnlip.1[78]"),
                      ("resized.model", "size mismatch"), ("list.model", "not a state dict")):  # fmt: skip
        with pytest.raises(ModelUnavailable, match=why) as err:
            SyncNetLipSync.load(tmp_path / name)
        assert str(tmp_path / name) in str(err.value) and "syncnet_weights" in str(err.value)


# ------------------------------------------------------------------------------------------------ input


def test_crop_frames_the_face_as_syncnet_python_does(backend, astronaut):
    rgb, face = astronaut
    crop = backend.crop(rgb, face)
    assert crop.shape == (224, 224, 3) and crop.dtype == np.uint8
    x0, y0, x1, y1 = crop_box(face.box)
    assert x1 - x0 == pytest.approx(y1 - y0, abs=2)  # square: side 2.8 x half the box's larger side
    assert x1 - x0 == pytest.approx(1.4 * max(face.box[2] - face.box[0], face.box[3] - face.box[1]), abs=2)
    # MTCNN's landmarks in crop pixels: eyes in the upper half, the mouth in the lower half, centred
    scale = 224 / (x1 - x0)
    marks = (face.landmarks - [x0, y0]) * scale
    eyes, mouth = marks[:2], marks[3:]
    assert (eyes[:, 1] < 112).all() and (mouth[:, 1] > 112).all() and (mouth[:, 1] < 200).all()
    assert abs(marks[:, 0].mean() - 112) < 25
    # the crop is the picture there, resized (colour kept: RGB, not gray)
    assert np.abs(crop.astype(int) - crop[..., ::-1].astype(int)).mean() > 5
    # out of the picture: run_pipeline.py's fill value
    corner = backend.crop(rgb, Face((-40.0, -40.0, 40.0, 40.0), 1.0))
    assert (corner[:20, :20] == CROP_FILL).all()


def test_mfcc_matches_python_speech_features(speech):
    psf = pytest.importorskip("python_speech_features")  # not a dependency; checked where installed
    pcm = to_pcm16(speech, 16000)
    np.testing.assert_allclose(mfcc(pcm), psf.mfcc(pcm.astype(np.int16), 16000), rtol=1e-9, atol=1e-9)


def test_mfcc_settings(speech):
    pcm = to_pcm16(speech, 16000)
    feats = mfcc(pcm)
    assert feats.shape == (1 + int(np.ceil((pcm.size - 400) / 160)), 13)  # 100 frames/s, last one padded
    assert np.isfinite(feats).all()
    # c0 is the log energy of the pre-emphasised, unwindowed 25 ms frame, power spectrum over 512 points
    x = np.concatenate([pcm[:1], pcm[1:] - 0.97 * pcm[:-1]])[1600:2000]
    assert feats[10, 0] == pytest.approx(np.log((np.abs(np.fft.rfft(x, 512)) ** 2 / 512).sum()))
    # 16-bit scale: the same audio at float scale has log energies 2 ln(32768) lower
    assert mfcc(pcm / 32768.0)[10, 0] == pytest.approx(feats[10, 0] - 2 * np.log(32768.0))


# ------------------------------------------------------------------------------------------------ scores


def test_similarity_shape_and_undefined_ends(scores, speech):
    assert scores.shape == (2 * MAX_LAG + 1, FRAMES) and scores.dtype == np.float32
    n_mfcc = mfcc(to_pcm16(speech, 16000)).shape[0]
    lags = np.arange(-MAX_LAG, MAX_LAG + 1)[:, None]
    t = np.arange(FRAMES)[None, :]
    start = 4 * (t - 2 + lags)  # the 0.2 s audio window of the 5 frames centred on t, at this lag
    expected = (t >= 2) & (t <= FRAMES - 3) & (start >= 0) & (start + 20 <= n_mfcc)
    np.testing.assert_array_equal(np.isfinite(scores), expected)
    assert np.isnan(scores[:, :2]).all() and np.isnan(scores[:, -2:]).all()
    assert (scores[np.isfinite(scores)] < 0).all()  # minus a distance


def test_similarity_is_deterministic(backend, crops, speech, scores):
    again = backend.similarity(crops, speech, 16000, FPS, MAX_LAG)
    np.testing.assert_array_equal(again, scores)


def test_similarity_follows_the_audio_lag(backend, crops, speech, scores):
    """Delaying the audio by k frames moves every score k rows up the lag axis (row i becomes row i + k).

    Holds for any weights, random included: the score at (lag, t) is a function of the lip window at t and the
    audio window at t + lag only, and a delay of k frames (k * 640 samples, a multiple of the 160-sample MFCC
    hop, with silence before) gives exactly the same MFCC frames 4k frames later (pre-emphasis sees the same
    zero before the first sample). So it tests the pairing of windows and lags, and that each row reads the
    audio at its own lag, not what the weights learnt.
    """
    k = 2
    delayed = np.concatenate([np.zeros(k * SAMPLES_PER_FRAME, np.float32), speech])
    moved = backend.similarity(crops, delayed, 16000, FPS, MAX_LAG)
    both = np.isfinite(moved[k:]) & np.isfinite(scores[:-k])
    assert both.sum() >= 12 * (2 * MAX_LAG + 1 - k)
    np.testing.assert_allclose(moved[k:][both], scores[:-k][both], rtol=0, atol=1e-4)
    # ...and that is not because rows are alike: the scores differ from lag to lag by far more
    rows_apart = np.isfinite(scores[k:]) & np.isfinite(scores[:-k])
    assert np.abs(scores[k:][rows_apart] - scores[:-k][rows_apart]).mean() > 100 * 1e-4


def test_similarity_depends_on_the_audio_at_every_lag(backend, crops, speech, scores):
    other = speak("Completely different words now, spoken by someone else entirely.", voice="en-us+f3")
    other = np.resize(other, speech.size)
    changed = backend.similarity(crops, other, 16000, FPS, MAX_LAG)
    np.testing.assert_array_equal(np.isfinite(changed), np.isfinite(scores))
    for row in range(scores.shape[0]):
        ok = np.isfinite(scores[row])
        assert (np.abs(changed[row, ok] - scores[row, ok]) > 1e-4).mean() > 0.9, row


def test_similarity_resamples_other_rates(backend, crops, speech, scores):
    import torchaudio.functional as AF

    at_48k = AF.resample(torch.from_numpy(speech), 16000, 48000).numpy()
    resampled = backend.similarity(crops, at_48k, 48000, FPS, MAX_LAG)
    ok = np.isfinite(scores)
    np.testing.assert_array_equal(np.isfinite(resampled), ok)
    assert np.corrcoef(resampled[ok], scores[ok])[0, 1] > 0.99


def test_too_short_clip_is_all_nan(backend, crops, speech):
    out = backend.similarity(crops[:4], speech, 16000, FPS, 2)
    assert out.shape == (5, 4) and np.isnan(out).all()


# ------------------------------------------------------------------------------------------------ offset


def _syncnet_instance_verdict(dists: np.ndarray, vshift: int) -> tuple[int, float]:
    """SyncNetInstance.evaluate's last steps on a full [frames, 2 * vshift + 1] distance table (written from
    its description: mean over frames, torch.min, offset = vshift - argmin, conf = torch.median - min)."""
    mdist = torch.from_numpy(dists).mean(0)
    minval, minidx = torch.min(mdist, 0)
    return vshift - int(minidx), float(torch.median(mdist) - minval)


def test_offset_and_confidence_is_syncnets():
    rng = np.random.default_rng(1)
    vshift, frames, true_lag = 7, 60, 3
    lags = np.arange(-vshift, vshift + 1)
    dist = 8.0 + 0.4 * np.abs(lags - true_lag)[:, None] + rng.normal(0, 0.3, (lags.size, frames))
    estimate = offset_and_confidence(-dist, FPS)
    assert estimate is not None
    syncnet_offset, syncnet_conf = _syncnet_instance_verdict(dist.T.copy(), vshift)
    assert estimate.lag_frames == true_lag == -syncnet_offset == -estimate.syncnet_offset
    assert estimate.offset_ms == pytest.approx(true_lag * 40.0)
    assert estimate.confidence == pytest.approx(syncnet_conf, rel=1e-6)
    assert estimate.min_distance == pytest.approx(dist.mean(1).min())
    # NaN ends: averaged over the frames scored at every lag only
    holed = -dist.copy()
    holed[:, :5] = np.nan
    holed[0, 5:9] = np.nan
    full = offset_and_confidence(-dist[:, 9:], FPS)
    assert offset_and_confidence(holed, FPS) == full
    assert offset_and_confidence(np.full((3, 4), np.nan), FPS) is None


def test_offset_and_confidence_of_backend_scores(scores):
    estimate = offset_and_confidence(scores, FPS)
    assert estimate is not None and -MAX_LAG <= estimate.lag_frames <= MAX_LAG
    assert estimate.confidence >= 0 and estimate.min_distance > 0
