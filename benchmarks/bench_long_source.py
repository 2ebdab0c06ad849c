#!/usr/bin/env python3
"""One long source, 1 worker against 2: does work spread inside a source (spans, avcurate/spans.py)?

    .venv/bin/python benchmarks/bench_long_source.py [--minutes 17.3] [--dask] [--json results.json]

Generates a source of shots (`avcurate.synth.write_shots_video`: lavfi test patterns cut every 3.6 to 7 s, a
tone; 64.8 s looped to the length asked, stream copy) and curates it:

  whole x2   --workers 2, the default config (decode.span_s: 0: one source keeps one worker busy, the other idle)
  spans x1   --workers 1 with decode.span_s: 600: the baseline
  spans x2   --workers 2 with decode.span_s: 600
  dask x2    (--dask) a local Dask cluster of 2 worker processes, decode.span_s: 600

and prints wall-clock ratios against `spans x1`, all measured in this run, and whether the outputs of `spans
x1`, `spans x2` and `dask x2` are byte-identical (the split does not depend on the worker count; the clip MP4s
of a split source are not yet reproducible: docs/distributed.md, Long sources).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_pipeline import avcurate_command, code_state, cpu_model, log, loadavg  # noqa: E402

from avcurate.synth import TEST_PATTERN_SHOTS, write_shots_video  # noqa: E402


def make_source(folder: Path, minutes: float) -> Path:
    shots = write_shots_video(folder / "shots.mp4", size="480x270", preset="veryfast", extra=("-g", "50"))
    total = sum(duration for _, duration in TEST_PATTERN_SHOTS)
    loops = max(0, round(minutes * 60 / total) - 1)
    long = folder / "inputs" / "long.mp4"
    long.parent.mkdir()
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-stream_loop", str(loops), "-i", str(shots), "-c", "copy",
                    str(long)], check=True)  # fmt: skip
    return long


def curate(inputs: Path, output: Path, config: Path | None, *extra: str) -> float:
    command = [*avcurate_command(), "run", "--input", str(inputs), "--output", str(output), *extra]
    if config is not None:
        command += ["--config", str(config)]
    started = time.monotonic()
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    return time.monotonic() - started


def digest(folder: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        h.update(str(path.relative_to(folder)).encode() + b"\0" + path.read_bytes())
    return h.hexdigest()[:16]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=17.3, help="source length (default 17.3: 2 spans of 518 s)")
    parser.add_argument("--dask", action="store_true", help="also on a local Dask cluster of 2 workers")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="avcurate-bench-long-") as tmp:
        root = Path(tmp)
        source = make_source(root, args.minutes)
        duration = float(subprocess.run(["ffprobe", "-v", "error", "-show_entries", "format=duration", "-of",
                                         "csv=p=0", str(source)], capture_output=True, text=True).stdout)  # fmt: skip
        spans = root / "spans.yaml"
        spans.write_text("decode: {span_s: 600}\n", encoding="utf-8")
        log(f"source: {duration:.0f} s; load {loadavg()}")
        runs = {
            "spans x1": (spans, ["--workers", "1"]),
            "spans x2": (spans, ["--workers", "2"]),
            "whole x2": (None, ["--workers", "2"]),
        }
        if args.dask:
            runs["dask x2"] = (spans, ["--runner", "dask", "--workers", "2"])
        results = {}
        for name, (config, extra) in runs.items():
            output = root / name.replace(" ", "-")
            wall = curate(source.parent, output, config, *extra)
            results[name] = {"wall_s": round(wall, 1), "media_per_s": round(duration / wall, 2), "digest": digest(output)}
            log(f"{name}: {wall:.1f} s ({duration / wall:.1f} s of media per second)")
        base = results["spans x1"]["wall_s"]
        for name, result in results.items():
            result["speedup_vs_spans_x1"] = round(base / result["wall_s"], 2)
        same = {results[n]["digest"] for n in results if n != "whole x2"}
        report = {"source_s": round(duration, 1), "cpu": cpu_model(), "code": code_state(), "runs": results,
                  "split_outputs_identical": len(same) == 1}  # fmt: skip
        print(json.dumps(report, indent=2))
        if args.json:
            Path(args.json).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
