"""Throughput of the learned stages: the pipeline's RunInference against the bare model on the same batches.

For each model it prints clips/s and images/s (visual) or audio seconds/s (audio), for the bare model (its own
embed call on the same batches, one after another in a loop) and in the pipeline (Beam's RunInference with
avcurate's handler on the local runner: batching, element handling, the model shared by the worker), and the
ratio pipeline / bare (target on a GPU: 0.8 or more). Model loading is timed apart and left out of both rates;
the pipeline's time runs from the first clip entering RunInference to the last leaving it.

The models are full-size architectures with random weights (OpenCLIP ViT-B-32 at 224 px; CLAP HTSAT-unfused at
48 kHz), saved as local checkpoints and loaded through the real loading path: random weights cost the same
compute as trained ones, and no download is needed.

    python benchmarks/bench_inference.py [--clips 64] [--device auto] [--json result.json]

--clips should be a multiple of models.max_batch_clips (64): both sides then run only full forward passes.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import apache_beam as beam
import numpy as np
import torch
from apache_beam.ml.inference.base import RunInference
from apache_beam.options.pipeline_options import DirectOptions, PipelineOptions
from apache_beam.runners.portability.fn_api_runner import FnApiRunner

from avcurate.beam.inference import AudioEmbedder, VisualEmbedder, padded
from avcurate.config import AudioModelConfig, ModelsConfig, VisualModelConfig
from avcurate.model import Clip, ModelInputs
from avcurate.models import ClapAudioModel, OpenClipImageModel, resolve_device
from avcurate.models.testing import save_tiny_clap


def save_models(folder: Path) -> tuple[VisualModelConfig, AudioModelConfig]:
    import open_clip
    from transformers import ClapConfig, ClapModel

    torch.manual_seed(0)
    checkpoint = folder / "vit-b-32.pt"
    torch.save(open_clip.create_model("ViT-B-32").state_dict(), checkpoint)
    clap = folder / "clap"
    save_tiny_clap(clap)  # its processor (feature extractor and tokenizer), then the full-size model over it
    ClapModel(ClapConfig()).save_pretrained(clap)
    return VisualModelConfig(name="ViT-B-32", pretrained=str(checkpoint)), AudioModelConfig(name=str(clap))


def make_clips(n: int, frames: int, image_size: int, audio_samples: int) -> list[Clip]:
    rng = np.random.default_rng(0)
    clips = []
    for i in range(n):
        inputs = ModelInputs(
            frames=rng.integers(0, 256, (frames, image_size, image_size, 3), dtype=np.uint8),
            audio=(0.1 * rng.standard_normal(audio_samples)).astype(np.float32),
        )
        clips.append(Clip(f"{i:016x}", "bench", 0, 0.0, 10.0, 250, 25.0, 256, 256, 16000, 1, 256, 256, inputs=inputs))
    return clips


def _stamp(clip: Clip) -> Clip:
    """Records when a clip passes, as a Beam metric: its min and max come back with the result."""
    beam.metrics.Metrics.distribution("bench", "stage_us").update(int(time.perf_counter() * 1e6))
    return clip


def run_pipeline(handler: object, clips: list[Clip]) -> float:
    """Seconds from the first clip entering RunInference to the last leaving it: the stage's steady work, model
    load included (subtracted by the caller), Beam's start-up and the pickling of the test clips into the job
    graph (seconds here, not part of a real run, where clips come out of the decoder) left out."""
    options = PipelineOptions()
    options.view_as(DirectOptions).direct_num_workers = 1  # one GPU: one worker feeding it
    p = beam.Pipeline(runner=FnApiRunner(), options=options)
    # One bundle, as the clips come out of the Curate step: Create would split them into several bundles,
    # each ending in a partial batch (padded to full size: see avcurate/beam/inference.py `padded`).
    clips_in = p | beam.Impulse() | beam.FlatMap(lambda _: clips)
    _ = clips_in | "In" >> beam.Map(_stamp) | RunInference(handler) | "Out" >> beam.Map(_stamp)
    result = p.run()
    result.wait_until_finish()
    stamps = [d.committed for d in result.metrics().query(beam.metrics.MetricsFilter().with_name("stage_us"))["distributions"]]
    return (max(s.max for s in stamps) - min(s.min for s in stamps)) / 1e6  # "In" and "Out" steps


def timed(fn) -> float:
    started = time.perf_counter()
    fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=64)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", default="amp")
    parser.add_argument("--json")
    args = parser.parse_args()
    device = resolve_device(args.device)
    results = {"device": str(device), "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
               "cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads(), "models": {}}
    with tempfile.TemporaryDirectory() as tmp:
        visual_cfg, audio_cfg = save_models(Path(tmp))
        models = ModelsConfig(device=args.device, precision=args.precision, visual=visual_cfg, audio=audio_cfg)
        per_batch = models.max_batch_clips  # the bare model gets the batches RunInference forms
        for role in ("visual", "audio"):
            load_s = time.perf_counter()
            if role == "visual":
                model = OpenClipImageModel.load(visual_cfg, device, args.precision)
                size = visual_cfg.batch_size
                clips = make_clips(args.clips, visual_cfg.frames_per_clip, model.prep.image_size, 10)
                batches = [
                    np.concatenate([c.inputs.frames for c in clips[i : i + per_batch]])
                    for i in range(0, len(clips), per_batch)
                ]

                def bare() -> None:
                    for frames in batches:
                        model.embed_images(padded(frames, size), size)

                handler = VisualEmbedder(models)
                units, unit_name = args.clips * visual_cfg.frames_per_clip, "images"
            else:
                model = ClapAudioModel.load(audio_cfg, device, args.precision)
                size = audio_cfg.batch_size
                clips = make_clips(args.clips, 1, 8, int(audio_cfg.max_s * model.sample_rate))
                batches = [[c.inputs.audio for c in clips[i : i + per_batch]] for i in range(0, len(clips), per_batch)]

                def bare() -> None:
                    for audio in batches:
                        model.embed_audio(audio + [np.zeros(1, np.float32)] * (-len(audio) % size), size)

                handler = AudioEmbedder(models)
                units, unit_name = args.clips * audio_cfg.max_s, "audio_s"
            load_s = time.perf_counter() - load_s
            bare()  # warm-up: kernels, allocator, caches
            bare_s = timed(bare)
            del model
            pipeline_s = run_pipeline(handler, clips)  # RunInference loads its model in setup, before the first clip
            row = {
                "clips": args.clips,
                "load_s": round(load_s, 2),
                "bare_s": round(bare_s, 2),
                "pipeline_s": round(pipeline_s, 2),
                "bare_clips_per_s": round(args.clips / bare_s, 2),
                "pipeline_clips_per_s": round(args.clips / pipeline_s, 2),
                f"bare_{unit_name}_per_s": round(units / bare_s, 1),
                f"pipeline_{unit_name}_per_s": round(units / pipeline_s, 1),
                "ratio": round(bare_s / pipeline_s, 3),
            }
            results["models"][role] = row
            print(f"{role}: bare {row['bare_clips_per_s']} clips/s ({row[f'bare_{unit_name}_per_s']} {unit_name}/s), "
                  f"pipeline {row['pipeline_clips_per_s']} clips/s ({row[f'pipeline_{unit_name}_per_s']} {unit_name}/s), "
                  f"ratio {row['ratio']} (load {row['load_s']} s, not counted) on {results['gpu'] or 'cpu'}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
