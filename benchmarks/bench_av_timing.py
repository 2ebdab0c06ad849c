"""Audio-visual timing of the output clips against the source and against `ffmpeg -vf fps=25`.

    PYTHONPATH=. .venv/bin/python benchmarks/bench_av_timing.py [--jobs 2] [--keep DIR]

For each source of `tests/test_av_timing.py` (flashes and tone bursts that start together, at 23.976 to 60 fps
and at a changing rate), measures with `tests/avmeter.py` (ffmpeg/ffprobe CLI only) the mean offset of: the
source itself, avcurate's kept clips (`process_source`, default config), and the peer reference `ffmpeg -vf
fps=25` (default rounding). Positive: audio lags video. "rule" is what FFmpeg's rounding rule alone adds to the
source's offset for these event times (ties go to the later output frame); "events" counts flash/beep pairs
found in avcurate's clips (of the source's).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import avmeter  # noqa: E402
from avcurate.config import Config  # noqa: E402
from avcurate.model import KEPT, Source  # noqa: E402
from avcurate.process import process_source  # noqa: E402


def run_one(name: str, folder: Path) -> tuple[str, float, float, float, float, int, int]:
    work = folder / name
    (work / "staging").mkdir(parents=True)
    (work / "scratch").mkdir()
    source = work / "source.mp4"
    times = avmeter.make_source(source, avmeter.RATES[name], seed=sorted(avmeter.RATES).index(name) + 1)
    own = avmeter.measure(source)
    result = process_source(Source.from_uri(str(source)), Config(), str(work / "staging"), str(work / "scratch"))
    ours = avmeter.measure_all([c.staged_path for c in result.clips if c.status == KEPT and c.staged_path])
    peer = avmeter.measure(avmeter.ffmpeg_fps(source, work / "ffmpeg_fps25.mp4"))
    rule = avmeter.rounding_bias_ms(times, 25)
    return name, own.mean_ms, ours.mean_ms, peer.mean_ms, rule, ours.events, own.events


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--keep", help="write the media here and keep it (default: a temporary folder)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-av-timing-") as tmp:
        folder = Path(args.keep or tmp)
        with ThreadPoolExecutor(args.jobs) as pool:
            rows = list(pool.map(lambda name: run_one(name, folder), avmeter.RATES))
    print(f"{'fps':>7} | {'source ms':>9} | {'avcurate ms':>11} | {'ffmpeg fps=25 ms':>16} | {'rule ms':>7} | events")
    print(f"{'-' * 7}-|-{'-' * 9}-|-{'-' * 11}-|-{'-' * 16}-|-{'-' * 7}-|-------")
    for name, own, ours, peer, rule, events, source_events in rows:
        print(f"{name:>7} | {own:+9.1f} | {ours:+11.1f} | {peer:+16.1f} | {rule:+7.1f} | {events}/{source_events}")


if __name__ == "__main__":
    main()
