"""The pyannote diarization backend, through pyannote.audio's real loading path, with a tiny random pipeline."""

from __future__ import annotations

import os

os.environ.setdefault("PYANNOTE_METRICS_ENABLED", "false")  # before pyannote is imported: no telemetry

import json
import subprocess
import sys
import time
import wave
from pathlib import Path

import numpy as np
import pytest
import torch

from avcurate.config import DiarizationConfig
from avcurate.models.base import ModelUnavailable
from avcurate.speakers import pyannote_backend
from avcurate.speakers.base import Turn
from avcurate.speakers.pyannote_backend import PyannoteDiarizer
from avcurate.speakers.testing import save_tiny_pyannote_pipeline

REPO = Path(__file__).resolve().parents[1]


def sample_wav() -> Path:
    import pyannote.audio

    return Path(pyannote.audio.__file__).parent / "sample" / "sample.wav"


def read_wav(path: Path) -> tuple[np.ndarray, int]:
    with wave.open(str(path)) as f:
        assert f.getnchannels() == 1 and f.getsampwidth() == 2
        data = np.frombuffer(f.readframes(f.getnframes()), np.int16)
        return data.astype(np.float32) / 32768.0, f.getframerate()


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory: pytest.TempPathFactory) -> str:
    return save_tiny_pyannote_pipeline(tmp_path_factory.mktemp("pyannote") / "tiny")


@pytest.fixture(scope="module")
def sample() -> tuple[np.ndarray, int]:
    return read_wav(sample_wav())


@pytest.fixture(autouse=True)
def fresh_cache():
    pyannote_backend._PIPELINES.clear()
    yield
    pyannote_backend._PIPELINES.clear()


def direct_turns(folder: str, audio: np.ndarray, rate: int) -> list[tuple[float, float, str]]:
    """The same folder through pyannote alone: Pipeline.from_pretrained and a call, no avcurate code."""
    from pyannote.audio import Pipeline

    pipeline = Pipeline.from_pretrained(folder)
    output = pipeline({"waveform": torch.from_numpy(audio)[None], "sample_rate": rate})
    duration = len(audio) / rate
    return [
        (max(0.0, s.start), min(duration, s.end), label)
        for s, _, label in output.speaker_diarization.itertracks(yield_label=True)
    ]


def test_tiny_pipeline_through_the_real_loading_path(tiny_folder: str, sample: tuple[np.ndarray, int]) -> None:
    from pyannote.audio.pipelines import SpeakerDiarization

    audio, rate = sample
    cfg = DiarizationConfig(backend="pyannote", pipeline=tiny_folder, device="cpu")
    diarizer = PyannoteDiarizer.load(cfg)
    assert diarizer.name == "pyannote"
    assert isinstance(diarizer.pipeline, SpeakerDiarization)
    assert PyannoteDiarizer.load(cfg).pipeline is diarizer.pipeline  # loaded once per process
    # the weights are the saved ones, not a fresh random initialisation
    saved = torch.load(Path(tiny_folder) / "segmentation" / "pytorch_model.bin", weights_only=False)["state_dict"]
    loaded = diarizer.pipeline._segmentation.model.state_dict()
    assert saved.keys() == loaded.keys()
    assert all(torch.equal(saved[k], loaded[k].cpu()) for k in saved)

    turns = diarizer.diarize(audio, rate)
    duration = len(audio) / rate
    assert turns and all(isinstance(t, Turn) for t in turns)
    assert turns == sorted(turns, key=lambda t: (t.start_s, t.end_s, t.speaker))
    assert all(0.0 <= t.start_s < t.end_s <= duration for t in turns)
    first_seen = list(dict.fromkeys(t.speaker for t in turns))
    assert first_seen == [f"S{i}" for i in range(len(first_seen))]

    # the same turns as pyannote's own output, speakers renamed in order of appearance
    expected = direct_turns(tiny_folder, audio, rate)
    names = {}
    for _, _, label in sorted(expected):
        names.setdefault(label, f"S{len(names)}")
    assert [(t.start_s, t.end_s, t.speaker) for t in turns] == sorted((s, e, names[k]) for s, e, k in expected)

    # deterministic: a second load (a new pipeline object from the folder) gives the same turns
    pyannote_backend._PIPELINES.clear()
    again = PyannoteDiarizer.load(cfg)
    assert again.pipeline is not diarizer.pipeline
    assert again.diarize(audio, rate) == turns


class _StubPipeline:
    """Records what it is given and answers pyannote 4's output: overlapping and exclusive diarization."""

    def __init__(self) -> None:
        self.files: list[dict] = []
        self.hooks: list[object] = []

    def __call__(self, file: dict, hook=None):
        from pyannote.audio.pipelines.speaker_diarization import DiarizeOutput
        from pyannote.core import Annotation, Segment

        self.files.append(file)
        self.hooks.append(hook)
        overlapping, exclusive = Annotation(), Annotation()
        overlapping[Segment(1.0, 3.0)] = "SPEAKER_01"
        overlapping[Segment(2.0, 4.0)] = "SPEAKER_00"
        overlapping[Segment(0.5, 9.0)] = "SPEAKER_01"  # past the end of the audio
        exclusive[Segment(1.0, 4.0)] = "SPEAKER_01"
        return DiarizeOutput(overlapping, exclusive, None)


def test_waveform_in_memory_and_overlap_kept() -> None:
    stub = _StubPipeline()
    diarizer = PyannoteDiarizer(stub, torch.device("cpu"), "stub")
    audio = np.linspace(-0.5, 0.5, 8000 * 5, dtype=np.float64)  # 5 s at 8 kHz, float64: converted
    turns = diarizer.diarize(audio, 8000)
    (file,) = stub.files
    (hook,) = stub.hooks
    assert callable(hook)  # progress, so a long source does not look stalled to the sandbox
    assert set(file) >= {"waveform", "sample_rate"} and "audio" not in file  # nothing for pyannote to decode
    assert file["sample_rate"] == 8000
    assert file["waveform"].dtype == torch.float32 and tuple(file["waveform"].shape) == (1, len(audio))
    assert turns == [Turn(0.5, 5.0, "S0"), Turn(1.0, 3.0, "S0"), Turn(2.0, 4.0, "S1")]
    assert diarizer.diarize(np.zeros(0, np.float32), 16000) == []


def test_unreachable_hub_fails_quickly(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from huggingface_hub import constants

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    start = time.monotonic()
    with pytest.raises(ModelUnavailable) as info:
        PyannoteDiarizer.load(DiarizationConfig(backend="pyannote", pipeline="avcurate-test/no-such-pipeline"))
    assert time.monotonic() - start < 10
    message = str(info.value)
    assert "avcurate-test/no-such-pipeline" in message and "offline" in message
    assert "HF_TOKEN" in message and "folder" in message and "HF_HOME" in message
    assert constants.HF_HUB_OFFLINE is False  # offline mode was for the load only


def test_missing_folder_names_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "no-pipeline-here"
    with pytest.raises(ModelUnavailable, match="no-pipeline-here") as info:
        PyannoteDiarizer.load(DiarizationConfig(backend="pyannote", pipeline=str(missing)))
    assert str(missing) in str(info.value) and "config.yaml" in str(info.value)


def test_broken_folder_is_unavailable(tmp_path: Path) -> None:
    (tmp_path / "config.yaml").write_text("pipeline:\n  name: pyannote.audio.pipelines.SpeakerDiarization\n")
    with pytest.raises(ModelUnavailable, match=str(tmp_path)):
        PyannoteDiarizer.load(DiarizationConfig(backend="pyannote", pipeline=str(tmp_path / "config.yaml")))


def test_telemetry_off_before_pyannote_is_imported() -> None:
    """In a clean interpreter (-I, no PYANNOTE_METRICS_ENABLED), importing the backend then pyannote finds the
    variable already "false" when pyannote.audio is first imported."""
    code = f"""
import importlib.abc, json, os, sys
sys.path.insert(0, {str(REPO)!r})
seen = {{}}
class Watch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.startswith("pyannote") and "at_import" not in seen:
            seen["at_import"] = os.environ.get("PYANNOTE_METRICS_ENABLED")
        return None
sys.meta_path.insert(0, Watch())
import avcurate.speakers.pyannote_backend
import pyannote.audio
from pyannote.audio.telemetry.metrics import is_metrics_enabled
seen["enabled"] = is_metrics_enabled()
print(json.dumps(seen))
"""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/tmp")}
    result = subprocess.run([sys.executable, "-I", "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    seen = json.loads(result.stdout.strip().splitlines()[-1])
    assert seen == {"at_import": "false", "enabled": False}
