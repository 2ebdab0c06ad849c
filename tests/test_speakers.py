"""Speaker stages end to end in the sandboxed decoder, on generated talking faces (avcurate/speakers/talking.py):
a real face photograph whose mouth is driven by each espeak-ng voice's own speech, a second face that stays
still or speaks the other voice, music, silences, one overlap, and audio delayed by known offsets.

These prove the mechanics and their tolerances; how well the stages work on real speech is measured against
references made by others in docs/benchmarks.md (diarization: pyannote's annotated sample).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from avcurate.config import Config, ConfigError
from avcurate.model import KEPT, REJECTED, Clip, Source
from avcurate.process import curate_source
from avcurate.sandbox import Sandbox
from avcurate.speakers.base import SPEECH_RATE, Segment, Turn
from avcurate.speakers.synth import MALE, speak
from avcurate.speakers.talking import FaceSpec, Scene, one_speaker_scene, talking_face_video, two_speaker_scene
from avcurate.speakers.timeline import clip_speech

LIP_TOLERANCE_MS = 40.0  # one frame at 25 fps: lip offsets are measured on the frame grid, refined between lags
TURN_TOLERANCE_S = 0.25  # a turn's start against the script (the VAD pads 30 ms; espeak's first phoneme is soft)
BOX_TOLERANCE_PX = 15.0  # MTCNN's box against the rendered face's (its chin drops when the mouth opens)


def _config(**speakers: object) -> Config:
    """One clip per scene (the pictures never cut), no signal rules: the speaker scores are what is looked at."""
    return Config.from_dict({"speakers": {"enabled": True, **speakers}, "clips": {"min_s": 1.0, "max_s": 30.0},
                             "filters": []})  # fmt: skip


def _curate(video: Path, cfg: Config, tmp_path: Path) -> list[Clip]:
    sandbox = Sandbox(cfg.decode.memory_limit_mb)
    try:
        result = curate_source(Source.from_uri(str(video)), cfg, str(tmp_path / "staging"), sandbox)
    finally:
        sandbox.close()
    assert result.error is None, result.error
    return result.clips


def _track_at(clip: Clip, x: float) -> int:
    """The face track whose first box spans horizontal position x."""
    (track,) = [t["track"] for t in clip.face_tracks or [] if t["boxes"][0][0] <= x <= t["boxes"][0][2]]
    return track


def _speaker_of(clip: Clip, start_s: float, end_s: float) -> set[str]:
    return {t["speaker"] for t in clip.turns or [] if min(t["end_s"], end_s) - max(t["start_s"], start_s) > 0.3}


@pytest.fixture(scope="module")
def two_speakers(tmp_path_factory: pytest.TempPathFactory) -> tuple[Scene, Clip]:
    folder = tmp_path_factory.mktemp("two")
    scene = two_speaker_scene(folder)
    (clip,) = _curate(scene.video, _config(), folder)
    return scene, clip


def test_two_speakers_are_counted_and_their_turns_found(two_speakers: tuple[Scene, Clip]) -> None:
    scene, clip = two_speakers
    scores = clip.scores
    assert scores.num_speakers == 2
    # Speech: the script's turns, less the silences, the music and the pauses inside lines.
    script_s = sum(t.duration_s for t in scene.turns) - 0.6  # the overlap counts once
    assert scores.speech_ratio == pytest.approx(script_s / scene.duration_s, abs=0.12)
    # One label per voice, the same across the source: A's turns all get A's label, B's all B's.
    a_label, b_label = (_speaker_of(clip, 0.4, 2.69), _speaker_of(clip, 3.1, 5.81))
    assert len(a_label) == 1 and len(b_label) == 1 and a_label != b_label
    assert _speaker_of(clip, 12.2, 14.48) == b_label
    assert a_label <= _speaker_of(clip, 6.6, 8.3)
    # Turn starts where the script starts a line, for the lines nobody talks over.
    found_starts = {t["speaker"]: [] for t in clip.turns or []}
    for turn in clip.turns or []:
        found_starts[turn["speaker"]].append(turn["start_s"])
    for reference, label in ((scene.turns[0], a_label), (scene.turns[1], b_label), (scene.turns[2], a_label),
                             (scene.turns[4], b_label)):  # fmt: skip
        (name,) = label
        assert min(abs(s - reference.start_s) for s in found_starts[name]) <= TURN_TOLERANCE_S, (reference, clip.turns)
    # Nobody speaks over the music: no turn inside it.
    assert not _speaker_of(clip, 10.05, 11.85)
    assert 0.5 <= (scores.dominant_speaker_share or 0) <= 0.65
    assert scores.overlap_ratio is None  # the offline backend gives each instant one speaker: not measured


def test_who_is_speaking_on_screen(two_speakers: tuple[Scene, Clip]) -> None:
    scene, clip = two_speakers
    assert clip.scores.num_faces == 2 and len(clip.face_tracks or []) == 2
    for rendered in scene.faces:  # the tracks sit where the faces were drawn
        track = _track_at(clip, (rendered.face.box[0] + rendered.face.box[2]) / 2)
        first_box = clip.face_tracks[track]["boxes"][0]  # type: ignore[index]
        assert np.abs(np.array(first_box) - np.array(rendered.face.box)).max() <= BOX_TOLERANCE_PX
    left, right = (_track_at(clip, (f.face.box[0] + f.face.box[2]) / 2) for f in scene.faces)
    (a_label,), (b_label,) = _speaker_of(clip, 0.4, 2.69), _speaker_of(clip, 3.1, 5.81)
    on_screen = clip.speaker_on_screen or []
    assert [s["speaker"] for s in on_screen] == [t["speaker"] for t in clip.turns or []]
    # Every turn without overlap is given to the face that speaks it; none to the wrong face.
    for stretch in on_screen:
        if stretch["track"] is not None:
            assert stretch["track"] == (left if stretch["speaker"] == a_label else right), on_screen
    clean = [s for s in on_screen if s["end_s"] < 6.5 or s["start_s"] > 11.0]
    assert clean and all(s["track"] is not None for s in clean), on_screen
    assert (clip.scores.speaker_visible_ratio or 0) >= 0.9
    assert abs(clip.scores.lip_offset_ms or 1e9) <= LIP_TOLERANCE_MS
    assert (clip.scores.lip_sync_confidence or 0) >= 0.4


@pytest.mark.parametrize("offset_ms", [200.0, -120.0])
def test_lip_offset_is_recovered(offset_ms: float, tmp_path: Path) -> None:
    scene = one_speaker_scene(tmp_path, offset_ms)
    (clip,) = _curate(scene.video, _config(), tmp_path)
    assert clip.scores.lip_offset_ms == pytest.approx(offset_ms, abs=LIP_TOLERANCE_MS)
    assert clip.scores.num_speakers == 1 and clip.scores.dominant_speaker_share == 1.0
    speaking = _track_at(clip, (scene.faces[0].face.box[0] + scene.faces[0].face.box[2]) / 2)
    assert {s["track"] for s in clip.speaker_on_screen or []} == {speaking}  # never the still face
    assert clip.scores.speaker_visible_ratio == 1.0


def test_speaker_rules_reject_with_reasons(tmp_path: Path) -> None:
    """A still face over speech is no visible speaker; two faces break max faces; +200 ms breaks the lip rule."""
    speech = np.concatenate([np.zeros(SPEECH_RATE // 2, np.float32), speak("Nobody on screen is saying this.", MALE)])
    speech = np.pad(speech, (0, -speech.size % (SPEECH_RATE // 25)))
    silent_faces = tmp_path / "still.mp4"
    talking_face_video(silent_faces, speech, SPEECH_RATE, [FaceSpec(None), FaceSpec(None, mirror=True)])
    late = one_speaker_scene(tmp_path, 200.0)
    rules = [{"score": "speaker_visible_ratio", "min": 0.8, "name": "visible_speaker"}, {"score": "num_faces", "max": 1},
             {"score": "abs_lip_offset_ms", "max": 120.0, "when": "lip_sync_confidence >= 0.4"},
             {"score": "speech_ratio", "min": 0.3}]  # fmt: skip
    cfg = Config.from_dict({"speakers": {"enabled": True}, "clips": {"max_s": 30.0}, "filters": rules})
    (still,) = _curate(silent_faces, cfg, tmp_path)
    assert still.status == REJECTED
    assert [r.split(":")[0] for r in still.reasons] == ["visible_speaker", "num_faces"], still.reasons
    assert still.speaker_on_screen and all(s["track"] is None for s in still.speaker_on_screen)
    (clip,) = _curate(late.video, cfg, tmp_path)
    assert [r.split(":")[0] for r in clip.reasons] == ["num_faces", "abs_lip_offset_ms"], clip.reasons


def test_haar_faces_and_voice_activity_only(tmp_path: Path) -> None:
    """The OpenCV detector (boxes, no landmarks) and no diarization: speech segments go to faces as they are."""
    scene = one_speaker_scene(tmp_path)
    (clip,) = _curate(scene.video, _config(faces={"detector": "haar"}, diarization={"backend": None}), tmp_path)
    assert clip.turns is None and clip.scores.num_speakers is None and clip.scores.dominant_speaker_share is None
    assert clip.speech and clip.scores.speech_ratio and clip.scores.speech_ratio > 0.5
    speaking = _track_at(clip, (scene.faces[0].face.box[0] + scene.faces[0].face.box[2]) / 2)
    assert [s["start_s"] for s in clip.speaker_on_screen or []] == [s["start_s"] for s in clip.speech]
    long_enough = [s for s in clip.speaker_on_screen or [] if s["end_s"] - s["start_s"] >= 1.0]
    assert long_enough and {s["track"] for s in long_enough} == {speaking}
    assert clip.scores.lip_offset_ms == pytest.approx(0.0, abs=LIP_TOLERANCE_MS)


def test_speaker_outputs_are_deterministic(tmp_path: Path) -> None:
    scene = one_speaker_scene(tmp_path, 80.0)
    first, second = (_curate(scene.video, _config(), tmp_path / name)[0] for name in ("a", "b"))
    assert first.metadata() == second.metadata()
    assert first.metadata()["schema_version"] == 5 and first.turns


def test_clip_speech_cuts_source_turns_to_the_clip() -> None:
    segments = [Segment(0.5, 3.0), Segment(4.0, 9.0)]
    turns = [Turn(0.5, 3.0, "S0"), Turn(4.0, 7.0, "S1"), Turn(6.0, 9.0, "S0"), Turn(9.0, 9.2, "S1")]
    speech = clip_speech(segments, turns, start_s=2.0, end_s=9.1)
    assert [(s.start_s, s.end_s) for s in speech.segments] == [(0.0, 1.0), (2.0, 7.0)]
    assert [(t.start_s, t.end_s, t.speaker) for t in speech.turns] == [
        (0.0, 1.0, "S0"), (2.0, 5.0, "S1"), (4.0, 7.0, "S0"), (7.0, 7.1, "S1")]  # fmt: skip
    assert speech.speech_ratio == pytest.approx(6.0 / 7.1, abs=1e-3)
    assert speech.num_speakers == 2
    assert speech.overlap_ratio == pytest.approx(1.0 / 6.1, abs=0.01)  # S0 and S1 at once from 4 to 5 s
    assert speech.dominant_share == pytest.approx(4.0 / 6.1, abs=0.01)  # S0 speaks 4 s of the 6.1 s anyone does
    alone = clip_speech(segments, turns, start_s=8.95, end_s=9.3)
    assert alone.num_speakers == 0  # a 0.05 s and a 0.2 s tail: nobody speaks long enough to count
    assert clip_speech(segments, turns, 0.0, 10.0, overlap_measured=False).overlap_ratio is None
    assert clip_speech(segments, None, 0.0, 10.0).num_speakers is None


def test_speaker_rules_need_their_stage() -> None:
    with pytest.raises(ConfigError, match="speakers.enabled"):
        Config.from_dict({"filters": [{"score": "num_speakers", "max": 1}]})
    with pytest.raises(ConfigError, match="speakers.faces.detector"):
        Config.from_dict({"speakers": {"enabled": True, "faces": {"detector": None}},
                          "filters": [{"score": "speaker_visible_ratio", "min": 0.5}]})  # fmt: skip
    with pytest.raises(ConfigError, match="pyannote"):
        Config.from_dict({"speakers": {"enabled": True}, "filters": [{"score": "overlap_ratio", "max": 0.1}]})
    with pytest.raises(ConfigError, match="syncnet_weights"):
        Config.from_dict({"speakers": {"enabled": True, "faces": {"lip_sync": "syncnet"}}})
    assert Config.load(Path(__file__).parent.parent / "pipelines" / "configs" / "speech.yaml").speakers.enabled


def test_pyannote_backend_runs_in_the_decoder(tmp_path: Path) -> None:
    """A pyannote pipeline saved to a local folder (random weights) loads in the sandboxed decoder, which has
    no network and no token, and its turns reach the clip with overlap measured. Quality is not tested here:
    the weights are random."""
    from avcurate.speakers.testing import save_tiny_pyannote_pipeline

    folder = save_tiny_pyannote_pipeline(tmp_path / "pipeline")
    scene = one_speaker_scene(tmp_path)
    cfg = _config(diarization={"backend": "pyannote", "pipeline": str(folder), "device": "cpu"}, faces={"detector": None})
    (clip,) = _curate(scene.video, cfg, tmp_path)
    assert clip.turns is not None and clip.scores.num_speakers is not None
    assert clip.scores.overlap_ratio is not None or not clip.turns
    assert all(t["speaker"].startswith("S") and 0 <= t["start_s"] < t["end_s"] <= clip.duration_s for t in clip.turns)
    assert clip.face_tracks is None and clip.scores.num_faces is None


def test_syncnet_is_a_drop_in_lip_sync_backend(tmp_path: Path) -> None:
    """SyncNet (random weights saved as syncnet_v2.model is) in place of the model-free backend: the stage
    scores every speech stretch with it. Mechanics only: random weights say nothing of sync."""
    from avcurate.speakers.syncnet import save_random_syncnet

    weights = save_random_syncnet(tmp_path / "syncnet_v2.model")
    speech = np.concatenate([np.zeros(SPEECH_RATE // 4, np.float32), speak("Short and sweet.", MALE)])
    speech = np.pad(speech, (0, SPEECH_RATE // 4 + (-speech.size - SPEECH_RATE // 4) % (SPEECH_RATE // 25)))
    from avcurate.speakers.talking import speech_envelope

    video = tmp_path / "short.mp4"
    talking_face_video(video, speech, SPEECH_RATE, [FaceSpec(speech_envelope(speech, SPEECH_RATE, 25))], size=(256, 256))
    cfg = _config(diarization={"backend": None}, faces={"lip_sync": "syncnet", "syncnet_weights": str(weights),
                                                        "device": "cpu", "speaking_threshold": -1e9})  # fmt: skip
    (clip,) = _curate(video, cfg, tmp_path)
    assert len(clip.face_tracks or []) == 1 and clip.speaker_on_screen
    assert all(s["track"] == 0 and np.isfinite(s["score"]) for s in clip.speaker_on_screen)
    assert clip.scores.lip_offset_ms is not None and abs(clip.scores.lip_offset_ms) <= 400.0


@pytest.mark.slow
def test_speech_config_through_the_pipeline(tmp_path: Path) -> None:
    """`avcurate run` with pipelines/configs/speech.yaml: speaker fields reach the index (Parquet lists of
    structs, schema v5) and every shard's metadata, and the speaker rules decide with reasons."""
    import json
    import subprocess
    import sys

    import pyarrow.parquet as pq
    import webdataset as wds

    from avcurate import schemas

    videos = tmp_path / "videos"
    one_speaker_scene(videos)
    two_speaker_scene(videos)
    output = tmp_path / "out"
    config = Path(__file__).parent.parent / "pipelines" / "configs" / "speech.yaml"
    done = subprocess.run(
        [sys.executable, "-m", "avcurate.cli", "run", "--config", str(config), "--input", str(videos),
         "--output", str(output), "--workers", "2", "--json"],
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    table = pq.read_table(output / "index.parquet")
    schemas.validate_index(table)
    index = table.to_pylist()
    (one,) = [row for row in index if "one-speaker" in row["source_uri"]]
    first, second = sorted((row for row in index if "two-speakers" in row["source_uri"]), key=lambda r: r["start_s"])
    # The monologue's speaker is on screen and in sync: it passes every speaker rule.
    assert one["status"] == KEPT and one["num_speakers"] == 1 and one["speaker_visible_ratio"] == 1.0, one["reasons"]
    # The dialogue is cut at 10 s (clips.max_s). Its first clip has two speakers sharing the time; its second,
    # music and one line of B's, has too little speech. Each fails, saying why.
    assert first["num_speakers"] == 2 and first["speaker_visible_ratio"] == 1.0
    assert [r.split(":")[0] for r in first["reasons"]] == ["dominant_speaker_share"]
    assert second["num_speakers"] == 1 and [r.split(":")[0] for r in second["reasons"]] == ["speech_ratio"]
    # B keeps its label across the cut: turns are found over the whole source, not per clip.
    b_first = {t["speaker"] for t in first["turns"] if t["start_s"] > 3.0 and t["end_s"] < 6.0}
    assert b_first == {t["speaker"] for t in second["turns"]} and len(b_first) == 1
    assert one["turns"] and all(set(t) == {"start_s", "end_s", "speaker"} for t in one["turns"])
    assert len(first["face_tracks"]) == 2 and len(first["face_tracks"][0]["boxes"][0]) == 4
    (sample,) = list(wds.WebDataset(str(output / "shards" / "clips-000000.tar"), shardshuffle=False))
    meta = json.loads(sample["json"])
    schemas.validate_sample_metadata(meta)
    assert meta["key"] == one["key"] and meta["turns"] == one["turns"] and meta["speech"] == one["speech"]
    assert meta["speaker_on_screen"] == one["speaker_on_screen"] and meta["face_tracks"] == one["face_tracks"]
    from avcurate.summary import format_summary, summarize

    summary = summarize(str(output))
    assert summary["speakers"]["kept_by_num_speakers"] == {"1": 1}
    assert summary["speakers"]["kept_speech_seconds"] == pytest.approx(one["speech_ratio"] * one["duration_s"], abs=0.01)
    assert "kept speech:" in format_summary(summary)


def test_lip_scores_stop_where_the_audio_does() -> None:
    """Frames whose lagged audio lies past the clip's end are unscored (NaN), not compared with made-up silence."""
    from avcurate.speakers.lipsync import MouthMotionSync

    speech = speak("One two three four five six.", MALE)
    frames = speech.size * 25 // SPEECH_RATE
    rng = np.random.default_rng(0)
    crops = rng.integers(0, 255, (frames, 32, 48)).astype(np.uint8)
    sim = MouthMotionSync().similarity(crops, speech, SPEECH_RATE, 25.0, 5)
    for row, lag in enumerate(range(-5, 6)):
        audio_frame = np.arange(frames) + lag
        past_end = audio_frame * SPEECH_RATE / 25 >= speech.size
        assert np.isnan(sim[row, past_end]).all() and np.isfinite(sim[row, (audio_frame >= 0) & ~past_end]).all()


def test_a_speaker_score_in_a_condition_needs_its_stage() -> None:
    with pytest.raises(ConfigError, match="speakers.enabled"):
        Config.from_dict({"filters": [{"score": "duration_s", "min": 1, "when": "lip_sync_confidence>=0.2"}]})


def test_a_swaying_head_is_not_a_speaking_mouth(tmp_path: Path) -> None:
    """Both heads sway by up to 8 px (the still-mouthed one too): the lip offset is still recovered, and only the
    speaking mouth is given the speech."""
    scene = one_speaker_scene(tmp_path, 120.0, seed=3, sway_px=8.0)
    (clip,) = _curate(scene.video, _config(), tmp_path)
    speaking = _track_at(clip, (scene.faces[0].face.box[0] + scene.faces[0].face.box[2]) / 2)
    assert {s["track"] for s in clip.speaker_on_screen or []} == {speaking}
    assert clip.scores.lip_offset_ms == pytest.approx(120.0, abs=LIP_TOLERANCE_MS)
