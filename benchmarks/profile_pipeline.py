#!/usr/bin/env python3
"""Where avcurate's time and memory go: the follow-up to bench_pipeline.py when a target is missed.

    .venv/bin/python benchmarks/profile_pipeline.py profile INPUT.mp4 [--top 25]
        cProfile of avcurate.process.process_source run in this process (no Beam, no sandbox), with the
        time grouped by stage (decode, convert, segment, encode, score, mux, ...).
    .venv/bin/python benchmarks/profile_pipeline.py runners INPUT_DIR [--workers 2]
        the same pipeline on Beam's FnApiRunner: as `avcurate run --workers 1` and `--workers N` do it
        (whatever the checkout's pipeline.py chooses), and with Beam's multi_processing mode (one Beam SDK
        worker process per worker) and multi_threading mode (N worker threads in the launching process; each
        still drives its own sandboxed decoder process) forced. Wall clock and the CPU of every process,
        measured like bench_pipeline.py does.
    .venv/bin/python benchmarks/profile_pipeline.py paired INPUT.mp4 [--repeats 6]
        the ffmpeg baseline and process_source (in process, no start-up) alternated on one input: the
        steady-state CPU ratio, as paired measurements that a drifting machine load affects alike.
    .venv/bin/python benchmarks/profile_pipeline.py startup
        CPU seconds of the imports every process of a local run pays.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

# (stage, substrings of "file:function" or of a C function's name), first match wins.
STAGES: list[tuple[str, tuple[str, ...]]] = [
    ("encode video (libx264)", ("method 'encode' of 'av.video.stream", "av.video.stream.VideoStream", "VideoStream' objects")),
    ("encode audio (aac)", ("method 'encode' of 'av.audio.stream", "AudioStream' objects", "_encode_audio")),
    ("mux/remux (mp4)", ("method 'mux' of", "mux_clip", "method 'demux' of 'av.container.input", "method 'close' of 'av.container")),
    ("decode (packets -> frames)", ("method 'decode' of 'av.packet", "Packet' objects")),
    ("audio resample", ("resample' of", "AudioResampler")),
    ("scale/format (filter graph)", ("method 'push' of 'av.filter", "method 'pull' of 'av.filter", "Graph' objects", "_build_graph")),
    ("demux/read", ("method 'demux' of", "InputContainer")),
    ("segment (shot histograms)", ("clips.py",)),
    ("score (scorers)", ("scorers/",)),
    ("numpy (gray, audio copies)", ("numpy", "ndarray", "method 'astype'", "method 'tobytes'", "built-in method numpy")),
    ("file writes", ("method 'write' of '_io", "write_bytes", "fsutil.py")),
]


def _stage(key: tuple[str, int, str]) -> str:
    filename, _, name = key
    label = f"{filename}:{name}"
    for stage, needles in STAGES:
        if any(n in label for n in needles):
            return stage
    if "avcurate" in filename:
        return "avcurate python (other)"
    return "other"


def profile(args: argparse.Namespace) -> dict[str, Any]:
    from avcurate.config import Config
    from avcurate.model import Source
    from avcurate.process import process_source

    cfg = Config.from_dict({"decode": {"threads": 1}})
    staging = tempfile.mkdtemp(prefix="prof-stage-")
    scratch = tempfile.mkdtemp(prefix="prof-scratch-")
    source = Source.from_uri(str(Path(args.input).resolve()))
    try:
        # One unprofiled run first: warms imports and caches, and gives the profiler-free CPU time.
        cpu0, wall0 = time.process_time(), time.perf_counter()
        result = process_source(source, cfg, staging, scratch)
        plain_cpu, plain_wall = time.process_time() - cpu0, time.perf_counter() - wall0
        for name in os.listdir(staging):
            os.unlink(os.path.join(staging, name))
        profiler = cProfile.Profile()
        profiler.enable()
        result = process_source(source, cfg, staging, scratch)
        profiler.disable()
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        shutil.rmtree(scratch, ignore_errors=True)
    stats = pstats.Stats(profiler)
    total = sum(v[2] for v in stats.stats.values())  # tottime over all functions
    stages: dict[str, float] = {}
    for key, value in stats.stats.items():
        stages[_stage(key)] = stages.get(_stage(key), 0.0) + value[2]
    top = sorted(stats.stats.items(), key=lambda kv: kv[1][2], reverse=True)[: args.top]
    ours = sorted(((k, v) for k, v in stats.stats.items() if "avcurate" in k[0]), key=lambda kv: kv[1][3], reverse=True)
    duration = result.probe.duration_s if result.probe else 0.0
    out = {
        "input": args.input,
        "media_s": duration,
        "clips": len(result.clips),
        "plain_cpu_s": round(plain_cpu, 3),
        "plain_wall_s": round(plain_wall, 3),
        "plain_cpu_s_per_media_min": round(plain_cpu / (duration / 60.0), 3) if duration else None,
        "profiled_total_s": round(total, 3),
        "stages": {k: {"s": round(v, 3), "share": round(v / total, 3)} for k, v in sorted(stages.items(), key=lambda kv: -kv[1])},
        "top": [
            {"function": f"{Path(k[0]).name}:{k[1]}:{k[2]}", "calls": v[1], "tottime_s": round(v[2], 3), "cumtime_s": round(v[3], 3)}
            for k, v in top
        ],
        "avcurate_cumulative": [
            {"function": f"{Path(k[0]).name}:{k[1]}:{k[2]}", "calls": v[1], "cumtime_s": round(v[3], 3)}
            for k, v in ours[: args.top]
        ],
    }
    print(f"process_source on {args.input}: {duration:.1f} s of media, {len(result.clips)} clips; "
          f"unprofiled {plain_cpu:.2f} s CPU ({out['plain_cpu_s_per_media_min']} s per media minute)")
    print(f"\n{'stage (cProfile tottime)':<40}{'s':>8}{'share':>8}")
    for k, v in out["stages"].items():
        print(f"{k:<40}{v['s']:>8.2f}{v['share']:>8.1%}")
    print(f"\n{'function':<90}{'calls':>8}{'tottime':>9}{'cumtime':>9}")
    for row in out["top"]:
        print(f"{row['function'][:89]:<90}{row['calls']:>8}{row['tottime_s']:>9.3f}{row['cumtime_s']:>9.3f}")
    print(f"\n{'avcurate function (cumulative, includes callees)':<90}{'calls':>8}{'cumtime':>9}")
    for row in out["avcurate_cumulative"]:
        print(f"{row['function'][:89]:<90}{row['calls']:>8}{row['cumtime_s']:>9.3f}")
    return out


def paired(args: argparse.Namespace) -> dict[str, Any]:
    """The per-source cost without any start-up: the ffmpeg baseline and process_source (in this process,
    after a warm-up run) on the same input, alternated `--repeats` times; the median of the paired ratios is
    robust to the slow drifts of a shared machine."""
    import resource
    import statistics

    from bench_pipeline import baseline_command, loadavg

    from avcurate.config import Config
    from avcurate.model import Source
    from avcurate.process import process_source

    cfg = Config.from_dict({"decode": {"threads": 1}})
    source = Source.from_uri(str(Path(args.input).resolve()))
    work = Path(tempfile.mkdtemp(prefix="prof-paired-"))
    info = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries", "stream=width,height",
                           "-of", "csv=p=0", args.input], capture_output=True, text=True, check=True).stdout.strip()
    width, height = info.split(",")[:2]

    def run_pipeline() -> float:
        staging, scratch = tempfile.mkdtemp(dir=work), tempfile.mkdtemp(dir=work)
        cpu0 = time.process_time()
        process_source(source, cfg, staging, scratch)
        cpu = time.process_time() - cpu0
        shutil.rmtree(staging)
        shutil.rmtree(scratch)
        return cpu

    def run_ffmpeg() -> float:
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        subprocess.run(baseline_command(Path(args.input), work / "out.mp4", f"{width}x{height}"), check=True)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        return after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime

    try:
        run_pipeline()  # warm-up: imports, first-use allocations
        pairs = []
        for k in range(args.repeats):
            first, second = (run_ffmpeg, run_pipeline) if k % 2 == 0 else (run_pipeline, run_ffmpeg)
            a, b = first(), second()
            base, pipe = (a, b) if first is run_ffmpeg else (b, a)
            pairs.append((base, pipe))
            print(f"round {k}: ffmpeg {base:6.2f} s  process_source {pipe:6.2f} s  ratio {pipe / base:5.3f}", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    ratios = [p / b for b, p in pairs]
    out = {"input": args.input, "load": loadavg(), "pairs_cpu_s": [[round(b, 3), round(p, 3)] for b, p in pairs],
           "ratio_median": round(statistics.median(ratios), 3), "ratio_min": round(min(ratios), 3),
           "ratio_max": round(max(ratios), 3)}
    print(f"process_source / ffmpeg CPU: median {out['ratio_median']} (range {out['ratio_min']}-{out['ratio_max']})")
    return out


def _run_child(mode: str, input_dir: str, output: str, workers: int) -> None:
    """Runs in a child process: the pipeline on one runner configuration."""
    from apache_beam.runners.portability.fn_api_runner import FnApiRunner

    from avcurate.beam import pipeline as P
    from avcurate.config import Config
    from avcurate.ingest import check_inputs

    import apache_beam as beam
    import logging

    logging.getLogger("apache_beam.runners.portability.fn_api_runner.fn_runner").setLevel(logging.ERROR)
    cfg = Config.from_dict({"decode": {"threads": 1}})
    inputs = check_inputs([input_dir])
    os.makedirs(f"{output}/shards", exist_ok=True)
    started = time.monotonic()
    if mode == "project":  # exactly what `avcurate run` does, whatever the checkout's pipeline.py says
        P.run(inputs, output, cfg, runner=P.LOCAL, workers=workers)
    else:
        options = P.pipeline_options(P.LOCAL, workers, [])
        direct = options.view_as(beam.options.pipeline_options.DirectOptions)
        direct.direct_running_mode = {"threads": "multi_threading", "processes": "multi_processing"}[mode]
        pipeline = beam.Pipeline(runner=FnApiRunner(), options=options)
        P.build(pipeline, inputs, output, cfg)
        pipeline.run().wait_until_finish()
    print(json.dumps({"pipeline_wall_s": round(time.monotonic() - started, 3)}), flush=True)


def runners(args: argparse.Namespace) -> dict[str, Any]:
    from bench_pipeline import become_subreaper, loadavg, measure, timeline

    become_subreaper()
    work = Path(tempfile.mkdtemp(prefix="prof-runners-"))
    results: dict[str, Any] = {"input": args.input, "load_start": loadavg(), "runs": []}
    plan = [("project", 1), ("project", args.workers), ("processes", args.workers), ("threads", args.workers)]
    order = plan + list(reversed(plan)) if args.repeats > 1 else plan
    try:
        for k, (mode, workers) in enumerate(order):
            label = f"{mode}_w{workers}_{k}"
            command = [sys.executable, str(Path(__file__).resolve()), "_child", mode, args.input, str(work / label), str(workers)]
            m = measure(label, command, cwd=REPO, interval=0.05, log_dir=work)
            roles: dict[str, float] = {}
            for p in m.processes:
                roles[p["role"]] = round(roles.get(p["role"], 0.0) + p["cpu_s"], 2)
            row = {"mode": mode, "workers": workers, "rc": m.rc, "wall_s": m.wall_s, "cpu_s": round(m.cpu_best_s, 2),
                   "cpu_by_role": roles, "foreign_cpu_cores": m.foreign_cpu_cores, "timeline": timeline(m),
                   "peak_tree_rss_mb": round(m.peak_tree_rss_kb / 1024, 1), "processes": len(m.processes)}
            results["runs"].append(row)
            print(f"{label:<22} wall {m.wall_s:7.2f} s  cpu {m.cpu_best_s:7.2f} s  rss {row['peak_tree_rss_mb']:7.1f} MiB  "
                  f"foreign {m.foreign_cpu_cores:.2f} cores  rc {m.rc}  {roles}  {row['timeline']}", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    results["load_end"] = loadavg()
    return results


def startup(args: argparse.Namespace) -> dict[str, Any]:
    """CPU of the imports each process type pays (median of `--repeats` fresh interpreters)."""
    import resource
    import statistics

    probes = {
        "interpreter": "pass",
        "cli + beam (root)": "import avcurate.cli, avcurate.beam.pipeline",
        "beam sdk worker": "import apache_beam.runners.worker.sdk_worker_main, avcurate.beam.transforms",
        "sandbox (process_source)": "import avcurate.sandbox, avcurate.process",
        "pandas (pulled in by beam)": "import pandas",
    }
    out: dict[str, Any] = {}
    for name, code in probes.items():
        cpus = []
        for _ in range(args.repeats):
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO, capture_output=True)
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpus.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
        out[name] = round(statistics.median(cpus), 3)
        print(f"{name:<32}{out[name]:>8.2f} s CPU", flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    if argv is None and len(sys.argv) > 1 and sys.argv[1] == "_child":
        _run_child(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]))
        return 0
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("profile")
    p.add_argument("input")
    p.add_argument("--top", type=int, default=25)
    r = sub.add_parser("runners")
    r.add_argument("input", help="a folder of sources")
    r.add_argument("--workers", type=int, default=2)
    r.add_argument("--repeats", type=int, default=1, help="2: run the plan forward then backward (ABBA)")
    pp = sub.add_parser("paired")
    pp.add_argument("input")
    pp.add_argument("--repeats", type=int, default=6)
    s = sub.add_parser("startup")
    s.add_argument("--repeats", type=int, default=3)
    for q in (p, r, s, pp):
        q.add_argument("--json", help="write the results as JSON here")
    args = parser.parse_args(argv)
    result = {"profile": profile, "runners": runners, "startup": startup, "paired": paired}[args.command](args)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
