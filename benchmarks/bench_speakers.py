#!/usr/bin/env python3
"""Cost of the speaker stages: each stage's real-time factor, and the pipeline's CPU against a plain ffmpeg
transcode with and without them, all measured in the same run.

    .venv/bin/python benchmarks/bench_speakers.py [--scenes 4] [--json results.json]

Inputs are generated talking-face scenes (avcurate/speakers/talking.py: two faces, two espeak-ng voices,
music, 15 s each, 512x256 at 25 fps): faces and speech everywhere, which is what these stages cost most on.

  stages    seconds of CPU per second of media, one thread, in this process, for: Silero VAD; the offline
            diarizer (VAD + speaker encoder + clustering) over a whole source; MTCNN and Haar face detection
            at faces.detect_fps; face tracking + model-free lip sync (crops, smoothing, similarity); SyncNet's
            similarity (random weights: the same compute as the real ones); pyannote's community-1
            architecture with random weights (the same compute as the trained pipeline)
  pipeline  `avcurate run --workers 1` CPU of the whole process tree per minute of media, start-up (a 2 s
            input) subtracted, against one ffmpeg per input doing the same transcode: default config, speakers
            (mtcnn + offline diarization), speakers with Haar faces, speakers with pyannote (random weights)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
sys.path.insert(0, str(REPO))

import bench_pipeline as bp  # noqa: E402

os.environ.setdefault("PYANNOTE_METRICS_ENABLED", "false")


def log(message: str) -> None:
    print(f"[speakers {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def cpu_s() -> float:
    usage = os.times()
    return usage.user + usage.system


def timed(fn: Any, *args: Any) -> tuple[Any, float]:
    start = cpu_s()
    out = fn(*args)
    return out, cpu_s() - start


def decode_rgb(path: Path) -> list[np.ndarray]:
    import av

    with av.open(str(path)) as container:
        return [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]


def stage_rtfs(scene: Any, folder: Path) -> dict[str, Any]:
    import torch

    torch.set_num_threads(1)
    from avcurate.config import DiarizationConfig, FacesConfig, VadConfig
    from avcurate.speakers.diarize import OfflineDiarizer
    from avcurate.speakers.faces import FaceTracker, HaarFaces, MtcnnFaces
    from avcurate.speakers.lipsync import MouthMotionSync
    from avcurate.speakers.syncnet import SyncNetLipSync, save_random_syncnet
    from avcurate.speakers.vad import SileroVad

    audio = np.tile(scene.audio, 4)  # a minute of conversation: the diarizer works per source
    audio_s = audio.size / 16000
    frames = decode_rgb(scene.video)
    video_s = len(frames) / scene.fps
    out: dict[str, Any] = {"audio_s": round(audio_s, 2), "video_s": round(video_s, 2)}
    vad = SileroVad(VadConfig())
    vad.segments(audio[:16000], 16000)  # load
    _, spent = timed(vad.segments, audio, 16000)
    out["vad_silero"] = round(spent / audio_s, 4)
    diarizer = OfflineDiarizer(DiarizationConfig(), VadConfig())
    diarizer.run(audio[: 16000 * 5], 16000)
    _, spent = timed(diarizer.run, audio, 16000)
    out["diarization_offline"] = round(spent / audio_s, 4)
    faces_cfg = FacesConfig()
    every = round(25 / faces_cfg.detect_fps)
    for name, detector in (("mtcnn", MtcnnFaces(faces_cfg)), ("haar", HaarFaces(faces_cfg))):
        detector.detect(frames[0])
        _, spent = timed(lambda: [detector.detect(f) for f in frames[::every]])
        out[f"faces_{name}_at_{faces_cfg.detect_fps:g}fps"] = round(spent / video_s, 4)
    # Tracking and model-free lip sync, detection excluded: the detections are replayed from a first pass.
    mtcnn = MtcnnFaces(faces_cfg)
    found = {t: mtcnn.detect(frames[t]) for t in range(0, len(frames), every)}

    class Replay:
        name = "replay"

        def detect(self, rgb: np.ndarray) -> list[Any]:
            return found[self.t]

    replay = Replay()
    backend = MouthMotionSync()

    def track_and_score() -> None:
        tracker = FaceTracker(replay, backend, every, scene.fps)  # type: ignore[arg-type]
        for t, frame in enumerate(frames):
            replay.t = t  # type: ignore[attr-defined]
            tracker.add(t, frame)
        for track in tracker.finish(12):
            backend.similarity(track.crop_stack(), scene.audio, 16000, scene.fps, 10)

    _, spent = timed(track_and_score)
    out["tracking_and_mouth_motion"] = round(spent / video_s, 4)
    weights = save_random_syncnet(folder / "syncnet.model")
    syncnet = SyncNetLipSync.load(weights, "cpu")
    box = found[0][0]
    crops = np.stack([syncnet.crop(f, box) for f in frames[:125]])  # 5 s of one face
    _, spent = timed(syncnet.similarity, crops, scene.audio[: 5 * 16000], 16000, 25.0, 10)
    out["lip_sync_syncnet_per_face"] = round(spent / 5.0, 4)
    from avcurate.speakers.pyannote_backend import PyannoteDiarizer
    from avcurate.speakers.testing import save_tiny_pyannote_pipeline

    pipeline = save_tiny_pyannote_pipeline(folder / "pyannote", full_size=True)
    pyannote = PyannoteDiarizer.load(DiarizationConfig(backend="pyannote", pipeline=str(pipeline), device="cpu"))
    pyannote.diarize(audio[: 16000 * 10], 16000)
    _, spent = timed(pyannote.diarize, audio, 16000)
    out["diarization_pyannote_full_size_random"] = round(spent / audio_s, 4)
    return out


def pipeline_ratios(scenes: list[Any], tiny: Path, folder: Path, pyannote_folder: Path) -> dict[str, Any]:
    import yaml

    bp.become_subreaper()
    inputs = folder / "inputs"
    inputs.mkdir()
    for scene in scenes:
        os.link(scene.video, inputs / scene.video.name)
    tiny_dir = folder / "tiny"
    tiny_dir.mkdir()
    os.link(tiny, tiny_dir / tiny.name)
    media_min = sum(s.duration_s for s in scenes) / 60.0
    tiny_min = bp.media_duration(tiny) / 60.0
    logs = folder / "logs"
    logs.mkdir()

    def m(label: str, command: list[str]) -> bp.Measurement:
        result = bp.measure(label, command, cwd=REPO, interval=0.05, log_dir=logs)
        if result.rc != 0:
            raise SystemExit(f"{label} failed ({result.rc}): {result.stderr_tail[-2000:]}")
        return result

    base = sum(m(f"baseline_{i}", bp.baseline_command(s.video, folder / f"b{i}.mp4", "512x256")).cpu_best_s
               for i, s in enumerate(scenes))  # fmt: skip
    base_tiny = m("baseline_tiny", bp.baseline_command(tiny, folder / "btiny.mp4", "512x256")).cpu_best_s
    base_net = (base - len(scenes) * base_tiny) / (media_min - len(scenes) * tiny_min)
    configs = {
        "default": {},
        "speakers_mtcnn_offline": {"speakers": {"enabled": True}},
        "speakers_haar_offline": {"speakers": {"enabled": True, "faces": {"detector": "haar"}}},
        "speakers_mtcnn_pyannote_random": {"speakers": {"enabled": True, "diarization": {
            "backend": "pyannote", "pipeline": str(pyannote_folder), "device": "cpu"}}},
    }  # fmt: skip
    out: dict[str, Any] = {"baseline_cpu_s_per_media_min": round(base / media_min, 2),
                           "baseline_cpu_s_per_media_min_net": round(base_net, 2)}  # fmt: skip
    for name, overrides in configs.items():
        config = folder / f"{name}.yaml"
        config.write_text(yaml.safe_dump(overrides))
        full = m(f"{name}", bp.pipeline_command(inputs, folder / f"out_{name}", config, 1))
        start = m(f"{name}_tiny", bp.pipeline_command(tiny_dir, folder / f"out_{name}_tiny", config, 1))
        net = (full.cpu_best_s - start.cpu_best_s) / (media_min - tiny_min)
        out[name] = {"cpu_s": round(full.cpu_best_s, 2), "wall_s": round(full.wall_s, 2),
                     "startup_cpu_s": round(start.cpu_best_s, 2), "cpu_s_per_media_min_net": round(net, 2),
                     "ratio_to_ffmpeg": round(net / base_net, 2)}  # fmt: skip
        log(f"{name}: {out[name]}")
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenes", type=int, default=4, help="15 s talking scenes for the pipeline runs")
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--sections", default="stages,pipeline")
    args = parser.parse_args()
    from avcurate.speakers.base import SPEECH_RATE
    from avcurate.speakers.synth import MALE, speak
    from avcurate.speakers.talking import FaceSpec, speech_envelope, talking_face_video, two_speaker_scene
    from avcurate.speakers.testing import save_tiny_pyannote_pipeline

    results: dict[str, Any] = {"code": bp.code_state(), "cpu": bp.cpu_model(), "cores": os.cpu_count()}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        log(f"generating {args.scenes} scenes")
        scenes = [two_speaker_scene(folder / "scenes", offset_ms=40.0 * k, seed=k) for k in range(args.scenes)]
        speech = np.pad(speak("Hello.", MALE), (0, 0))
        speech = np.pad(speech, (0, 2 * SPEECH_RATE - speech.size))
        tiny = folder / "tiny.mp4"
        talking_face_video(tiny, speech, SPEECH_RATE, [FaceSpec(speech_envelope(speech, SPEECH_RATE, 25)), FaceSpec(None)])
        if "stages" in args.sections:
            log("stages")
            results["stages_rtf"] = stage_rtfs(scenes[0], folder)
            log(json.dumps(results["stages_rtf"]))
        if "pipeline" in args.sections:
            pyannote = save_tiny_pyannote_pipeline(folder / "pyannote-full", full_size=True)
            (folder / "runs").mkdir()
            results["pipeline"] = pipeline_ratios(scenes, tiny, folder / "runs", pyannote)
    text = json.dumps(results, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
