"""Offline diarization (avcurate/speakers/diarize.py): quality on pyannote.audio's two-speaker sample against its
reference turns, the cost of each stage on CPU with one thread, how the DER moves with the clustering threshold,
and what generated overlapped speech does to it.

The threshold grid is measured on the one 30 s real sample (plus the espeak cases the tests use): treat the
default as a point that works there, not a tuned optimum; tuning on one recording overfits.

    PYANNOTE_METRICS_ENABLED=false python benchmarks/bench_diarization.py [--json out.json] [--repeat 3]
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import os
import platform
import time
import wave
from pathlib import Path

import numpy as np
import torch

from avcurate.config import DiarizationConfig, VadConfig
from avcurate.speakers.base import SPEECH_RATE, Turn
from avcurate.speakers.diarize import OfflineDiarizer
from avcurate.speakers.synth import FEMALE, MALE, Line, conversation

os.environ.setdefault("PYANNOTE_METRICS_ENABLED", "false")
from pyannote.core import Annotation, Segment  # noqa: E402
from pyannote.metrics.diarization import DiarizationErrorRate  # noqa: E402

THRESHOLDS = (0.66, 0.68, 0.70, 0.72, 0.73, 0.74, 0.75, 0.76, 0.78, 0.80)
TILES = 10  # the sample repeated, to see how the cost grows with length (clustering is superlinear)


def sample() -> tuple[np.ndarray, Annotation]:
    folder = Path(next(iter(importlib.util.find_spec("pyannote.audio").submodule_search_locations))) / "sample"
    with wave.open(str(folder / "sample.wav")) as f:
        assert f.getframerate() == SPEECH_RATE
        audio = np.frombuffer(f.readframes(f.getnframes()), np.int16).astype(np.float32) / 32768.0
    reference = Annotation()
    for line in (folder / "sample.rttm").read_text().splitlines():
        fields = line.split()
        reference[Segment(float(fields[3]), float(fields[3]) + float(fields[4]))] = fields[7]
    return audio, reference


def annotation(turns: list[Turn]) -> Annotation:
    out = Annotation()
    for turn in turns:
        out[Segment(turn.start_s, turn.end_s)] = turn.speaker
    return out


def der(reference: Annotation, turns: list[Turn]) -> dict:
    hypothesis = annotation(turns)
    out = {}
    for name, collar in (("no_collar", 0.0), ("collar_0.5", 0.5)):
        metric = DiarizationErrorRate(collar=collar, skip_overlap=False)
        parts = metric(reference, hypothesis, detailed=True)
        total = parts["total"]
        out[name] = {
            "der": round(parts["diarization error rate"], 4),
            "missed": round(parts["missed detection"] / total, 4),
            "false_alarm": round(parts["false alarm"] / total, 4),
            "confusion": round(parts["confusion"] / total, 4),
            "reference_s": round(total, 2),
        }
    return out


def timed(diarizer: OfflineDiarizer, audio: np.ndarray, repeat: int) -> tuple[dict, list[Turn]]:
    """Seconds per second of audio of each stage, the best of `repeat` runs."""
    best = {"vad": np.inf, "embedding": np.inf, "clustering": np.inf}
    for _ in range(repeat):
        t0 = time.perf_counter()
        segments = diarizer.vad.segments(audio, SPEECH_RATE)
        t1 = time.perf_counter()
        windows = diarizer.windows(segments)
        embeddings = diarizer.embed(audio, windows)
        t2 = time.perf_counter()
        turns = diarizer.turns(segments, windows, diarizer.cluster(embeddings, windows))
        t3 = time.perf_counter()
        for key, seconds in (("vad", t1 - t0), ("embedding", t2 - t1), ("clustering", t3 - t2)):
            best[key] = min(best[key], seconds)
    duration = audio.size / SPEECH_RATE
    rtf = {key: round(seconds / duration, 5) for key, seconds in best.items()}
    rtf["total"] = round(sum(best.values()) / duration, 5)
    return {"audio_s": round(duration, 1), "windows": len(windows), "rtf": rtf}, turns


def overlap_case(diarizer: OfflineDiarizer) -> dict:
    """Two espeak voices, each line of B starting 1.5 s before A's ends."""
    lines = [
        Line("A", MALE, "Good morning, and welcome back to the show about old radios and how they work.", 0.5),
        Line("B", FEMALE, "Thank you, it is a real pleasure to be here with you today, truly.", 3.5),
        Line("A", MALE, "Tell us how you first became interested in repairing them, please.", 9.0),
        Line("B", FEMALE, "My grandfather kept a workshop full of valves and copper wire.", 14.0),
    ]
    audio, turns = conversation(lines, 19.0)
    reference = annotation(turns)
    hypothesis = diarizer.diarize(audio, SPEECH_RATE)
    overlap_s = sum(s.duration for s in reference.get_overlap())
    return {"reference_speakers": 2, "speakers_found": len({t.speaker for t in hypothesis}),
            "overlap_s": round(overlap_s, 2), "der": der(reference, hypothesis)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)

    cfg = DiarizationConfig()
    diarizer = OfflineDiarizer(cfg, VadConfig())
    audio, reference = sample()
    diarizer.diarize(audio, SPEECH_RATE)  # warm: TorchScript's first calls optimise the graph
    cost, turns = timed(diarizer, audio, args.repeat)
    long_cost, _ = timed(diarizer, np.tile(audio, TILES), 1)

    segments = diarizer.vad.segments(audio, SPEECH_RATE)
    windows = diarizer.windows(segments)
    embeddings = diarizer.embed(audio, windows)
    grid = []
    for threshold in THRESHOLDS:
        diarizer.cfg = dataclasses.replace(cfg, threshold=threshold)
        found = diarizer.turns(segments, windows, diarizer.cluster(embeddings, windows))
        result = der(reference, found)
        grid.append({"threshold": threshold, "speakers_found": len({t.speaker for t in found}),
                     "der": result["no_collar"]["der"], "der_collar_0.5": result["collar_0.5"]["der"]})  # fmt: skip
    diarizer.cfg = cfg

    report = {
        "backend": diarizer.name,
        "config": dataclasses.asdict(cfg) | {"vad": dataclasses.asdict(VadConfig())},
        "machine": {"cpu": platform.processor() or platform.machine(), "torch_threads": torch.get_num_threads(),
                    "torch": torch.__version__},  # fmt: skip
        "sample": {"file": "pyannote/audio/sample/sample.wav", "reference_speakers": len(reference.labels()),
                   "speakers_found": len({t.speaker for t in turns}), "der": der(reference, turns)},  # fmt: skip
        "cost_sample": cost,
        f"cost_sample_x{TILES}": long_cost,
        "threshold_grid": {"default": cfg.threshold, "rows": grid,
                           "note": "one 30 s recording: the grid shows sensitivity, not a tuned optimum"},  # fmt: skip
        "overlap_espeak": overlap_case(diarizer),
    }
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
