"""Memory of the output steps that see a whole run on one worker: shard planning and the index.

    .venv/bin/python benchmarks/bench_outputs.py [--clips 200000] [--json out.json]

WriteOutputs sends one planning entry per kept clip to a single worker (PlanShards) and every clip's row, in
Arrow batches, to the index writer. This measures, per clip, what those hold (tracemalloc peak while each runs,
on clips with realistic metadata: a 60-character URI, eight scores, two manifest columns), and the time each
takes, so the scale note in docs/architecture.md rests on figures. No media is involved.
"""

from __future__ import annotations

import argparse
import json
import pickle
import time
import tracemalloc
from typing import Any, Callable

import pyarrow as pa

from avcurate.model import KEPT, REJECTED, Clip, ClipScores, Source
from avcurate.writers import index_batch, merge_index, plan_layout, shard_entry

PREFIX = "clips"
BATCH = 2000  # rows per index batch, as avcurate.beam.transforms sends them


def make_clips(n: int) -> list[Clip]:
    clips = []
    for i in range(n):
        source = Source.from_uri(f"gs://my-bucket/raw/videos/part-{i // 20:06d}/video_{i // 20:08d}.mp4",
                                 {"lang": "en", "split": "train"})  # fmt: skip
        clips.append(Clip(
            source_id=source.source_id, source_uri=source.uri, clip_index=(i % 20) * 250,
            start_s=(i % 20) * 10.0, end_s=(i % 20) * 10.0 + 10.0, n_frames=250, fps=25.0, width=456, height=256,
            source_width=1920, source_height=1080, sample_rate=16000, channels=1,
            scores=ClipScores(loudness_dbfs=-20.0 - i % 7, silence_ratio=0.1, clipping_ratio=0.0,
                              motion_score=0.01 + i % 5 / 100, static_ratio=0.0, black_ratio=0.0,
                              av_offset_ms=float(i % 80 - 40), sync_confidence=0.6),
            end_reason="shot", status=KEPT if i % 10 else REJECTED, reasons=[] if i % 10 else ["motion_score"],
            source_meta=source.meta, config_hash="0123456789abcdef",
            staged_path=f"gs://my-bucket/out/_staging/{source.source_id}-{(i % 20) * 250:05d}.mp4",
            mp4_bytes=400_000 + i % 1000,
        ))  # fmt: skip
    return clips


def measure(step: Callable[[], Any]) -> tuple[Any, int, float]:
    """(result, peak bytes allocated while it ran, seconds): Python objects (tracemalloc) plus Arrow buffers
    (Arrow's memory pool, which tracemalloc does not see; its growth in allocated bytes, as a lower bound of
    its peak)."""
    pool = pa.default_memory_pool()
    arrow_before = pool.bytes_allocated()
    tracemalloc.start()
    tracemalloc.reset_peak()
    started = time.perf_counter()
    result = step()
    seconds = time.perf_counter() - started
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return result, peak + max(0, pool.bytes_allocated() - arrow_before), seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=200_000)
    parser.add_argument("--json", help="write the results as JSON here")
    args = parser.parse_args(argv)

    clips = make_clips(args.clips)
    kept = [c for c in clips if c.status == KEPT]
    # What a worker receives is unpickled: measure the objects as they arrive, one pickle per element.
    entries_wire = [pickle.dumps(shard_entry(c, PREFIX)) for c in kept]
    clip_wire = sum(len(pickle.dumps(c)) for c in clips[:1000]) / 1000

    entries, entries_peak, _ = measure(lambda: [pickle.loads(b) for b in entries_wire])
    layout, plan_peak, plan_s = measure(
        lambda: plan_layout(entries, prefix=PREFIX, max_clips=1000, max_bytes=2 << 30)
    )
    placed = [layout.place(c)[1] if c.status == KEPT else c for c in clips]
    batches_wire = [pickle.dumps(index_batch(placed[i : i + BATCH])) for i in range(0, len(placed), BATCH)]
    batches, rows_peak, _ = measure(lambda: [pickle.loads(b) for b in batches_wire])
    _, table_peak, table_s = measure(lambda: merge_index(batches))

    results = {
        "clips": len(clips),
        "kept": len(kept),
        "shards": len(layout.first_keys),
        "clip_pickled_bytes": round(clip_wire),
        "planning": {
            "entry_pickled_bytes": round(sum(map(len, entries_wire)) / len(kept)),
            "entries_in_memory_bytes_per_clip": round(entries_peak / len(kept)),
            "plan_peak_bytes_per_clip": round(plan_peak / len(kept)),
            "plan_seconds": round(plan_s, 3),
        },
        "index": {
            "batch_pickled_bytes_per_clip": round(sum(map(len, batches_wire)) / len(clips)),
            "rows_in_memory_bytes_per_clip": round(rows_peak / len(clips)),
            "table_build_peak_bytes_per_clip": round(table_peak / len(clips)),
            "table_seconds": round(table_s, 3),
        },
    }
    planning, index = results["planning"], results["index"]
    print(f"{len(clips)} clips ({len(kept)} kept, {results['shards']} shards); a Clip pickles to {clip_wire:.0f} B")
    print(f"planning worker: {planning['entries_in_memory_bytes_per_clip']} B/clip of entries "
          f"+ {planning['plan_peak_bytes_per_clip']} B/clip while planning ({plan_s:.2f} s)")  # fmt: skip
    print(f"index writer:    {index['rows_in_memory_bytes_per_clip']} B/clip of row batches "
          f"+ {index['table_build_peak_bytes_per_clip']} B/clip while merging them ({table_s:.2f} s)")  # fmt: skip
    for millions in (1, 10):
        n = millions * 1_000_000
        plan_gb = n * (planning["entries_in_memory_bytes_per_clip"] + planning["plan_peak_bytes_per_clip"]) / 1e9
        index_gb = n * (index["rows_in_memory_bytes_per_clip"] + index["table_build_peak_bytes_per_clip"]) / 1e9
        print(f"  {millions:>2} M clips: planning worker ~{plan_gb:.1f} GB, index writer ~{index_gb:.1f} GB")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
