"""Speed of the pyannote diarization backend on pyannote.audio's sample (30 s, two speakers), and its DER there.

Prints JSON: load time, real-time factor (seconds of compute per second of audio; below 1 is faster than real
time) of the first call and of the next ones, and the diarization error rate against sample.rttm (pyannote.metrics,
no collar, overlap scored).

Without --pipeline it saves and times the tiny random pipeline of avcurate.speakers.testing: its RTF says how
fast pyannote's machinery and the small random models run, nothing about the real pipeline (WeSpeaker ResNet34
embeddings and a full-size segmentation model cost far more) and its DER is meaningless. Someone with a token or
a local copy times the real one (--full-size times community-1's architectures with random weights, which
costs the same compute, short of what clustering does with real embeddings; its DER is meaningless too):

    HF_TOKEN=hf_... python benchmarks/bench_pyannote.py --pipeline pyannote/speaker-diarization-community-1
    python benchmarks/bench_pyannote.py --pipeline /path/to/speaker-diarization-community-1 --device cuda

--sandbox also loads and runs the pipeline in a child like avcurate's sandboxed decoder: `python -I`, the
decoder's environment (no HF_TOKEN, no credentials), its own network namespace where the kernel allows, and
RLIMIT_DATA (--memory-limit-mb, 3072 as decode.memory_limit_mb); it reports whether that worked, the child's
peak resident memory and whether its turns equal the parent's.
"""

from __future__ import annotations

import os

os.environ.setdefault("PYANNOTE_METRICS_ENABLED", "false")  # before pyannote is imported: no telemetry

import argparse
import json
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import wave
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from avcurate.config import DiarizationConfig  # noqa: E402
from avcurate.speakers.pyannote_backend import PyannoteDiarizer  # noqa: E402


def sample_files() -> tuple[Path, Path]:
    import pyannote.audio

    folder = Path(pyannote.audio.__file__).parent / "sample"
    return folder / "sample.wav", folder / "sample.rttm"


def read_wav(path: Path) -> tuple[np.ndarray, int]:
    with wave.open(str(path)) as f:
        if f.getnchannels() != 1 or f.getsampwidth() != 2:
            raise ValueError(f"{path}: expected 16-bit mono")
        data = np.frombuffer(f.readframes(f.getnframes()), np.int16)
        return data.astype(np.float32) / 32768.0, f.getframerate()


def read_rttm(path: Path):
    """The reference as a pyannote.core Annotation (RTTM SPEAKER lines: start and duration in fields 4 and 5)."""
    from pyannote.core import Annotation, Segment

    reference = Annotation(uri="sample")
    for line in path.read_text().splitlines():
        fields = line.split()
        if fields and fields[0] == "SPEAKER":
            start, duration = float(fields[3]), float(fields[4])
            reference[Segment(start, start + duration), fields[7]] = fields[7]
    return reference


def der(turns, reference, duration: float) -> dict[str, float]:
    from pyannote.core import Annotation, Segment, Timeline
    from pyannote.metrics.diarization import DiarizationErrorRate

    hypothesis = Annotation(uri="sample")
    for i, turn in enumerate(turns):
        hypothesis[Segment(turn.start_s, turn.end_s), i] = turn.speaker
    metric = DiarizationErrorRate(collar=0.0, skip_overlap=False)
    detail = metric(reference, hypothesis, uem=Timeline([Segment(0.0, duration)]), detailed=True)
    total = detail["total"]
    return {
        "der": round(detail["diarization error rate"], 4),
        "missed": round(detail["missed detection"] / total, 4),
        "false_alarm": round(detail["false alarm"] / total, 4),
        "confusion": round(detail["confusion"] / total, 4),
    }


CHILD = """
import json, os, resource, sys, time
sys.path.insert(0, {repo!r})
from avcurate.sandbox import _isolate_network
network_isolated = _isolate_network()
limit = {limit_mb} * 1024 * 1024
resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))
start = time.perf_counter()
import numpy as np
from avcurate.config import DiarizationConfig
from avcurate.speakers.pyannote_backend import PyannoteDiarizer
sys.path.insert(0, {bench_dir!r})
from bench_pyannote import read_wav
audio, rate = read_wav(__import__("pathlib").Path({wav!r}))
diarizer = PyannoteDiarizer.load(DiarizationConfig(backend="pyannote", pipeline={pipeline!r}, device="cpu"))
loaded = time.perf_counter()
turns = diarizer.diarize(audio, rate)
done = time.perf_counter()
status = dict(line.split(":", 1) for line in open("/proc/self/status") if ":" in line)
print(json.dumps({{
    "network_isolated": network_isolated,
    "hf_token_seen": "HF_TOKEN" in os.environ,
    "import_and_load_s": round(loaded - start, 2),
    "diarize_s": round(done - loaded, 2),
    # VmHWM, not ru_maxrss: Linux carries the forking parent's peak over exec into ru_maxrss
    "peak_rss_mib": round(int(status["VmHWM"].split()[0]) / 1024, 1),
    "vm_data_mib_at_end": round(int(status["VmData"].split()[0]) / 1024, 1),
    "turns": [[t.start_s, t.end_s, t.speaker] for t in turns],
}}))
"""


def run_sandboxed(pipeline: str, wav: Path, limit_mb: int) -> dict:
    """The pipeline loaded and run in a child started as avcurate.sandbox starts the decoder."""
    from avcurate.sandbox import child_environment

    code = CHILD.format(
        repo=str(REPO), bench_dir=str(Path(__file__).parent), wav=str(wav), pipeline=pipeline, limit_mb=limit_mb
    )
    with tempfile.TemporaryDirectory(prefix="bench-pyannote-") as cwd:
        env = child_environment(storage=False)
        env.pop("HF_TOKEN", None)
        result = subprocess.run(
            [sys.executable, "-I", "-c", code], env=env, cwd=cwd, capture_output=True, text=True, timeout=900
        )
    if result.returncode != 0:
        return {"ok": False, "exit_code": result.returncode, "stderr_tail": result.stderr[-1500:]}
    return {"ok": True, "memory_limit_mb": limit_mb, "child_env": sorted(env), **json.loads(result.stdout.splitlines()[-1])}


def _peak_rss_mib() -> float:
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pipeline", help="hub name or local folder (default: the tiny random pipeline)")
    parser.add_argument(
        "--full-size", action="store_true", help="without --pipeline: community-1's architectures, random weights"
    )
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto (default cpu)")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls after the first (default 3)")
    parser.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's choice)")
    parser.add_argument("--sandbox", action="store_true", help="also run it in a sandbox-like child")
    parser.add_argument("--memory-limit-mb", type=int, default=3072, help="RLIMIT_DATA of that child")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    wav, rttm = sample_files()
    audio, rate = read_wav(wav)
    duration = len(audio) / rate
    with tempfile.TemporaryDirectory(prefix="tiny-pyannote-") as tmp:
        pipeline = args.pipeline
        if pipeline is None:
            from avcurate.speakers.testing import save_tiny_pyannote_pipeline

            pipeline = save_tiny_pyannote_pipeline(Path(tmp) / "tiny", full_size=args.full_size)
        start = time.perf_counter()
        diarizer = PyannoteDiarizer.load(DiarizationConfig(backend="pyannote", pipeline=pipeline, device=args.device))
        load_s = time.perf_counter() - start

        def timed() -> tuple[float, list]:
            if diarizer.device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            turns = diarizer.diarize(audio, rate)
            if diarizer.device.type == "cuda":
                torch.cuda.synchronize()
            return time.perf_counter() - t0, turns

        first_s, turns = timed()
        times = [timed()[0] for _ in range(args.repeats)]
        result = {
            "pipeline": args.pipeline
            or ("full-size random" if args.full_size else "tiny random") + " (avcurate.speakers.testing)",
            "device": str(diarizer.device),
            "torch_threads": torch.get_num_threads(),
            "cpu": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(),
            "audio_s": duration,
            "load_s": round(load_s, 2),
            "rtf_first": round(first_s / duration, 4),
            "rtf_median": round(statistics.median(times) / duration, 4) if times else None,
            "rtf_min": round(min(times) / duration, 4) if times else None,
            "turns": len(turns),
            "speakers": len({t.speaker for t in turns}),
            "vs_sample_rttm": der(turns, read_rttm(rttm), duration),
            "peak_rss_mib": _peak_rss_mib(),
        }
        if args.sandbox:
            child = run_sandboxed(pipeline, wav, args.memory_limit_mb)
            if child.get("ok"):
                child_turns = child.pop("turns")
                child["same_turns_as_parent"] = child_turns == [[t.start_s, t.end_s, t.speaker] for t in turns]
            result["sandboxed_child"] = child
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
