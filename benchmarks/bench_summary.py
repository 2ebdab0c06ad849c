"""The end-of-run summary on a synthetic output of 200k clips: `avcurate.summary.summarize` (Arrow compute) against
the approach it replaced (every column of the index and the ledger as Python lists, `to_pydict`), each in a fresh
process, measured in the same run: wall time and the peak resident memory the summary added.

    python benchmarks/bench_summary.py [--clips 200000] [--repeats 3] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from avcurate.filters import reason_name
from avcurate.model import KEPT, REJECTED, Clip, ClipScores, ProbeInfo, Source, SourceResult
from avcurate.summary import summarize
from avcurate.writers.tables import index_batch, ledger_batch, write_table

CLIPS_PER_SOURCE = 10


def synthetic_output(folder: Path, n_clips: int) -> None:
    """index.parquet and ledger.parquet with the real schemas: a tenth of the clips rejected for two reasons,
    ten clips per source, one source in a hundred failed. Rows repeat a few templates (keys are not unique,
    which the summary does not read)."""
    kept, rejected = _clip(KEPT), _clip(REJECTED)
    index = index_batch([kept] * 9 + [rejected])
    n_sources = n_clips // CLIPS_PER_SOURCE
    probe = ProbeInfo(format_name="mov,mp4", duration_s=31.5, size_bytes=4_000_000, has_video=True, has_audio=True)
    good = SourceResult(Source.from_uri("gs://bucket/videos/some-long-name-0001.mp4"), probe=probe, clips=[kept])
    bad = SourceResult(Source.from_uri("gs://bucket/videos/broken.mp4"), error="moov atom not found", error_type="probe")
    ledger = ledger_batch([good] * 99 + [bad])
    (folder / "shards").mkdir(parents=True, exist_ok=True)
    write_table(pa.concat_tables([index] * (n_clips // index.num_rows)), str(folder / "index.parquet"))
    write_table(pa.concat_tables([ledger] * (n_sources // ledger.num_rows)), str(folder / "ledger.parquet"))


def _clip(status: str) -> Clip:
    return Clip(
        source_id="0123456789abcdef", source_uri="gs://bucket/videos/some-long-name-0001.mp4", clip_index=3,
        start_s=12.0, end_s=17.0, n_frames=125, fps=25.0, width=456, height=256, source_width=1920,
        source_height=1080, sample_rate=16000, channels=1,
        scores=ClipScores(loudness_dbfs=-20.5, silence_ratio=0.0, motion_score=0.03, av_offset_ms=40.0),
        end_reason="shot", status=status, reasons=[] if status == KEPT else ["silence_ratio: 0.9", "motion_score: 0"],
        shard="clips-000001.tar" if status == KEPT else None, source_meta={"title": "a video", "tags": ["a", "b"]},
        config_hash="0123456789ab",
    )  # fmt: skip


def old_summarize(output_dir: str) -> dict[str, Any]:
    """The summary as it was: the whole index and ledger as Python lists (its counting part)."""
    ledger, index = (pq.read_table(f"{output_dir}/{name}").to_pydict() for name in ("ledger.parquet", "index.parquet"))
    statuses = Counter(ledger["status"])
    reasons: Counter[str] = Counter()
    for clip_reasons in index["reasons"]:
        reasons.update({reason_name(r) for r in clip_reasons or []})
    return {
        "inputs": len(ledger["status"]),
        "inputs_failed": statuses.get("failed", 0),
        "media_seconds": round(sum(d or 0.0 for d in ledger["probe_duration_s"]), 2),
        "clips": len(index["key"]),
        "clips_kept": sum(s == "kept" for s in index["status"]),
        "kept_seconds": round(sum(d for d, s in zip(index["duration_s"], index["status"]) if s == "kept"), 2),
        "rejected_by_reason": dict(sorted(reasons.items())),
        "failures": [(u, k, e) for u, k, e, s in zip(ledger["uri"], ledger["error_type"], ledger["error"],
                                                     ledger["status"]) if s == "failed"],  # fmt: skip
    }


def _child(mode: str, folder: str) -> None:
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    summary = (old_summarize if mode == "old" else summarize)(folder)
    wall = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    picked = {k: summary[k] for k in ("inputs", "clips", "clips_kept", "kept_seconds", "rejected_by_reason")}
    print(json.dumps({"wall_s": wall, "added_rss_mb": (peak - before) / 1024, "summary": picked}))


def _measure(mode: str, folder: Path) -> dict[str, Any]:
    done = subprocess.run([sys.executable, __file__, "--child", mode, str(folder)], capture_output=True, text=True,
                          check=True)  # fmt: skip
    return json.loads(done.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=200_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument("--child", nargs=2, metavar=("MODE", "FOLDER"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(*args.child)
        return
    folder = Path(tempfile.mkdtemp(prefix="bench-summary-"))
    synthetic_output(folder, args.clips)
    runs = {mode: [_measure(mode, folder) for _ in range(args.repeats)] for mode in ("old", "arrow")}
    assert runs["old"][0]["summary"] == runs["arrow"][0]["summary"], "the two summaries disagree"
    results: dict[str, Any] = {"clips": args.clips, "index_bytes": (folder / "index.parquet").stat().st_size}
    for mode, measured in runs.items():
        results[mode] = {
            "wall_s": round(statistics.median(m["wall_s"] for m in measured), 3),
            "added_rss_mb": round(statistics.median(m["added_rss_mb"] for m in measured), 1),
        }
    results["ratio_old_over_arrow"] = {
        key: round(results["old"][key] / max(results["arrow"][key], 1e-9), 1) for key in ("wall_s", "added_rss_mb")
    }
    print(json.dumps(results, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
