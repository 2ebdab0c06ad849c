"""Voice activity, speaker embeddings and offline diarization on real media: espeak-ng speech made here, and
pyannote.audio's two-speaker recording with its reference turns."""

from __future__ import annotations

import importlib.util
import os
import sys
import types
import wave
from pathlib import Path

import numpy as np
import pytest
import torch

from avcurate.config import DiarizationConfig, VadConfig
from avcurate.speakers.base import SPEECH_RATE, Turn
from avcurate.speakers.diarize import OfflineDiarizer
from avcurate.speakers.embed import SpeakerEncoder
from avcurate.speakers.synth import FEMALE, MALE, Line, conversation, music, speak
from avcurate.speakers.vad import SileroVad

os.environ.setdefault("PYANNOTE_METRICS_ENABLED", "false")  # pyannote sends telemetry otherwise

SCRIPT = [
    ("A", "Good morning, and welcome back to the show about old radios.", 0.5),
    ("B", "Thank you, it is a real pleasure to be here with you today.", 5.0),
    ("A", "Tell us how you first became interested in repairing them.", 9.5),
    ("B", "My grandfather kept a workshop full of valves and copper wire.", 14.0),
    ("A", "That sounds like a wonderful place to grow up.", 18.5),
]
VOICES = {"A": MALE, "B": FEMALE}
BOUNDARY_TOL_S = 0.15  # VAD pads 30 ms and needs a 32 ms frame or two to cross its thresholds
SAMPLE_DER_MAX = 0.25  # measured 0.159 (no collar; benchmarks/bench_diarization.py)
SAMPLE_DER_COLLAR_MAX = 0.10  # measured 0.029 with collar=0.5


@pytest.fixture(scope="module")
def diarizer() -> OfflineDiarizer:
    torch.set_num_threads(1)
    return OfflineDiarizer(DiarizationConfig(), VadConfig())


@pytest.fixture(scope="module")
def two_voices() -> tuple[np.ndarray, list[Turn]]:
    return conversation([Line(who, VOICES[who], text, at) for who, text, at in SCRIPT], 22.0)


def _merged(turns: list[Turn], gap_s: float = 0.5) -> list[Turn]:
    """Consecutive turns of one speaker with less than gap_s between them, as one (VAD splits lines at commas)."""
    out: list[Turn] = []
    for t in turns:
        if out and out[-1].speaker == t.speaker and t.start_s - out[-1].end_s < gap_s:
            out[-1] = Turn(out[-1].start_s, t.end_s, t.speaker)
        else:
            out.append(t)
    return out


@pytest.mark.parametrize("rate", [SPEECH_RATE, 44100])
def test_vad_finds_speech_where_it_was_placed(rate: int) -> None:
    audio, reference = conversation(
        [Line("A", MALE, "Hello there, how are you doing today?", 1.0), Line("B", FEMALE, "Fine, thanks.", 5.0),
         Line("A", MALE, "Good to hear it.", 8.5)], 11.0, rate=rate)  # fmt: skip
    segments = SileroVad(VadConfig()).segments(audio, rate)
    for turn in reference:
        inside = [s for s in segments if s.end_s > turn.start_s and s.start_s < turn.end_s]
        assert inside, f"no speech found in {turn}"
        assert abs(inside[0].start_s - turn.start_s) < BOUNDARY_TOL_S
        assert abs(inside[-1].end_s - turn.end_s) < BOUNDARY_TOL_S
    spoken = [s for s in segments if any(s.end_s > t.start_s and s.start_s < t.end_s for t in reference)]
    assert spoken == segments, "speech found in the silences"


def test_vad_hears_no_speech_in_music_or_tones() -> None:
    vad = SileroVad(VadConfig())
    t = np.arange(8 * SPEECH_RATE) / SPEECH_RATE
    tones = (0.2 * np.sin(2 * np.pi * 440 * t) * (t % 1 < 0.5)).astype(np.float32)
    for audio in (music(10.0), tones):
        assert sum(s.duration_s for s in vad.segments(audio, SPEECH_RATE)) < 0.5
    probs = vad.probabilities(speak("This is certainly speech."))
    assert probs.max() > 0.9 and np.array_equal(probs, vad.probabilities(speak("This is certainly speech.")))


def test_encoder_matches_resemblyzer() -> None:
    try:
        import webrtcvad  # noqa: F401
    except ImportError:
        # webrtcvad imports pkg_resources, gone from setuptools >= 82; resemblyzer's __init__ imports webrtcvad for
        # its own VAD, which this comparison never calls.
        sys.modules["webrtcvad"] = types.ModuleType("webrtcvad")
    from resemblyzer import VoiceEncoder, wav_to_mel_spectrogram

    male = speak("The quick brown fox jumps over the lazy dog near the river bank.", MALE)
    female = speak("She sells sea shells by the sea shore every single summer.", FEMALE)
    size = 25600  # 1.6 s, resemblyzer's partial utterance
    windows = np.stack([male[:size], male[8000 : 8000 + size], female[:size], female[4000 : 4000 + size]])
    ours = SpeakerEncoder().embed(windows)
    theirs_net = VoiceEncoder("cpu", verbose=False)
    with torch.no_grad():
        theirs = theirs_net(torch.from_numpy(np.stack([wav_to_mel_spectrogram(w) for w in windows]))).numpy()
    assert ours.shape == (4, 256)
    assert np.all(np.sum(ours * theirs, axis=1) > 0.99)
    assert ours[0] @ ours[2] < 0.8 < ours[0] @ ours[1]  # and it tells the voices apart


def test_two_voices_give_two_speakers_at_their_turns(diarizer: OfflineDiarizer, two_voices) -> None:
    audio, reference = two_voices
    segments, turns = diarizer.run(audio, SPEECH_RATE)
    assert segments and turns == diarizer.diarize(audio, SPEECH_RATE)
    merged = _merged(turns)
    assert len(merged) == len(reference) and {t.speaker for t in turns} == {"S0", "S1"}
    names = {}
    for ours, theirs in zip(merged, reference):
        assert names.setdefault(theirs.speaker, ours.speaker) == ours.speaker
        assert abs(ours.start_s - theirs.start_s) < BOUNDARY_TOL_S and abs(ours.end_s - theirs.end_s) < BOUNDARY_TOL_S
    assert len(set(names.values())) == 2


def test_max_speakers_caps_the_clustering(diarizer: OfflineDiarizer, two_voices) -> None:
    audio, _ = two_voices
    strict = OfflineDiarizer(DiarizationConfig(threshold=0.999), VadConfig(), diarizer.encoder)
    capped = OfflineDiarizer(DiarizationConfig(threshold=0.999, max_speakers=2), VadConfig(), diarizer.encoder)
    assert len({t.speaker for t in strict.diarize(audio, SPEECH_RATE)}) > 2
    assert {t.speaker for t in capped.diarize(audio, SPEECH_RATE)} == {"S0", "S1"}


def test_one_voice_gives_one_speaker(diarizer: OfflineDiarizer) -> None:
    audio, _ = conversation([Line("A", FEMALE, text, at) for _, text, at in SCRIPT], 22.0)
    turns = diarizer.diarize(audio, SPEECH_RATE)
    assert turns and {t.speaker for t in turns} == {"S0"}


def test_der_on_pyannote_sample(diarizer: OfflineDiarizer) -> None:
    from pyannote.core import Annotation, Segment
    from pyannote.metrics.diarization import DiarizationErrorRate

    folder = Path(next(iter(importlib.util.find_spec("pyannote.audio").submodule_search_locations))) / "sample"
    with wave.open(str(folder / "sample.wav")) as f:
        rate = f.getframerate()
        audio = np.frombuffer(f.readframes(f.getnframes()), np.int16).astype(np.float32) / 32768.0
    reference, hypothesis = Annotation(), Annotation()
    for line in (folder / "sample.rttm").read_text().splitlines():
        fields = line.split()
        reference[Segment(float(fields[3]), float(fields[3]) + float(fields[4]))] = fields[7]
    for turn in diarizer.diarize(audio, rate):
        hypothesis[Segment(turn.start_s, turn.end_s)] = turn.speaker
    assert len(hypothesis.labels()) == 2
    assert DiarizationErrorRate()(reference, hypothesis) < SAMPLE_DER_MAX
    assert DiarizationErrorRate(collar=0.5)(reference, hypothesis) < SAMPLE_DER_COLLAR_MAX



def test_nearest_window_centre_matches_brute_force() -> None:
    from avcurate.speakers.diarize import _nearest

    rng = np.random.default_rng(0)
    centres = np.sort(rng.uniform(0, 100, 50))
    times = np.concatenate([rng.uniform(-5, 105, 2000), centres, (centres[1:] + centres[:-1]) / 2])
    brute = np.argmin(np.abs(times[:, None] - centres[None, :]), axis=1)
    assert np.array_equal(_nearest(centres, times), brute)
