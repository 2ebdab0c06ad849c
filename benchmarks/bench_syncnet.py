"""Real-time factor of the SyncNet lip-sync backend: seconds of processing per second of 25 fps video, one face.

One face (scikit-image's astronaut, box fixed) in 1280 x 720 frames, espeak-ng speech at 16 kHz; it times
`crop` on every frame, then `similarity` over every frame and every lag in +-max_lag frames (default 10: the
default speakers.faces.max_lip_offset_ms of 400 ms at 25 fps), after one untimed warm-up call. It also times the
parts of `similarity` apart (MFCC, lip stream, audio stream). Without --weights the network has random weights
(`save_random_syncnet`), which cost the same compute as trained ones.

    python benchmarks/bench_syncnet.py [--seconds 10] [--device cpu] [--weights syncnet_v2.model] [--threads N]

Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from avcurate.speakers.base import Face
from avcurate.speakers.syncnet import (
    AUDIO_WINDOW,
    SyncNetLipSync,
    audio_window_starts,
    mfcc,
    offset_and_confidence,
    save_random_syncnet,
    to_pcm16,
)
from avcurate.speakers.synth import speak

FPS = 25.0
RATE = 16000
FACE_BOX = (181.0, 62.0, 268.0, 172.0)  # the astronaut's face in skimage.data.astronaut() (MTCNN's box)


def _frames(count: int) -> tuple[np.ndarray, Face]:
    import skimage.data

    photo = skimage.data.astronaut()
    frame = np.full((720, 1280, 3), 40, np.uint8)
    frame[100:612, 400:912] = photo
    x0, y0, x1, y1 = FACE_BOX
    face = Face((x0 + 400, y0 + 100, x1 + 400, y1 + 100), 1.0)
    return np.broadcast_to(frame, (count, *frame.shape)), face


def _speech(seconds: float) -> np.ndarray:
    text = "The quick brown fox jumps over the lazy dog while the band plays on. " * 8
    audio = speak(text, rate=RATE)
    return np.resize(audio, round(seconds * RATE)).astype(np.float32)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--max-lag", type=int, default=10)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--weights", default=None, help="a syncnet_v2.model file; default: random weights")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as tmp:
        weights = args.weights or save_random_syncnet(Path(tmp) / "syncnet_v2.model")
        start = time.perf_counter()
        backend = SyncNetLipSync.load(weights, args.device, args.batch_size)
        load_s = time.perf_counter() - start

    count = round(args.seconds * FPS)
    frames, face = _frames(count)
    audio = _speech(args.seconds)

    warm = np.stack([backend.crop(frames[i], face) for i in range(12)])
    backend.similarity(warm, audio[: 12 * 640], RATE, FPS, 2)

    start = time.perf_counter()
    crops = np.stack([backend.crop(frame, face) for frame in frames])
    crop_s = time.perf_counter() - start

    _sync(backend.device)
    start = time.perf_counter()
    sim = backend.similarity(crops, audio, RATE, FPS, args.max_lag)
    _sync(backend.device)
    similarity_s = time.perf_counter() - start
    estimate = offset_and_confidence(sim, FPS)

    # the parts, apart
    start = time.perf_counter()
    feats = mfcc(to_pcm16(audio, RATE)).astype(np.float32)
    mfcc_s = time.perf_counter() - start
    starts = audio_window_starts(count, FPS, args.max_lag)
    windows = np.unique(starts[(starts >= 0) & (starts + AUDIO_WINDOW <= feats.shape[0])])
    centres = np.arange(2, count - 2)
    with torch.inference_mode():
        start = time.perf_counter()
        backend._embed_lips(crops, centres)
        _sync(backend.device)
        lip_s = time.perf_counter() - start
        start = time.perf_counter()
        backend._embed_audio(feats, windows)
        _sync(backend.device)
        audio_s = time.perf_counter() - start

    total = crop_s + similarity_s
    result = {
        "benchmark": "syncnet_rtf",
        "device": str(backend.device),
        "device_name": torch.cuda.get_device_name(backend.device) if backend.device.type == "cuda" else platform.processor() or platform.machine(),
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "python": sys.version.split()[0],
        "weights": "file" if args.weights else "random",
        "video_s": args.seconds,
        "fps": FPS,
        "frames": count,
        "max_lag": args.max_lag,
        "batch_size": args.batch_size,
        "load_s": round(load_s, 3),
        "crop_s": round(crop_s, 3),
        "similarity_s": round(similarity_s, 3),
        "parts_s": {"mfcc": round(mfcc_s, 3), "lip_stream": round(lip_s, 3), "audio_stream": round(audio_s, 3),
                    "lip_windows": int(centres.size), "audio_windows": int(windows.size)},  # fmt: skip
        "rtf": round(total / args.seconds, 3),  # processing seconds per second of video, one face
        "rtf_without_crop": round(similarity_s / args.seconds, 3),
        "offset_frames": estimate.lag_frames if estimate else None,
        "confidence": round(estimate.confidence, 4) if estimate else None,
    }
    print(json.dumps(result, indent=2))
    return 0


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


if __name__ == "__main__":
    raise SystemExit(main())
