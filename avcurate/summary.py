"""Summarise an output folder: inputs by outcome, clips kept and rejected by reason, failures, shards."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems

from .filters import reason_name


def summarize(output_dir: str) -> dict[str, Any]:
    out = output_dir.rstrip("/")
    ledger = _read(f"{out}/ledger.parquet")
    index = _read(f"{out}/index.parquet")
    statuses = Counter(ledger["status"])
    reasons: Counter[str] = Counter()
    for clip_reasons in index["reasons"]:
        reasons.update({reason_name(r) for r in clip_reasons or []})
    shards = FileSystems.match([f"{out}/shards/*.tar"])[0].metadata_list
    return {
        "inputs": len(ledger["status"]),
        "inputs_kept": statuses.get("kept", 0),
        "inputs_rejected": statuses.get("rejected", 0),
        "inputs_failed": statuses.get("failed", 0),
        "media_seconds": round(sum(d or 0.0 for d in ledger["probe_duration_s"]), 2),
        "clips": len(index["key"]),
        "clips_kept": sum(s == "kept" for s in index["status"]),
        "clips_rejected": sum(s == "rejected" for s in index["status"]),
        "kept_seconds": round(sum(d for d, s in zip(index["duration_s"], index["status"]) if s == "kept"), 2),
        "rejected_by_reason": dict(sorted(reasons.items())),
        "failures": [
            {"uri": uri, "error_type": kind, "error": error}
            for uri, kind, error, status in zip(ledger["uri"], ledger["error_type"], ledger["error"], ledger["status"])
            if status == "failed"
        ],
        "shards": len(shards),
        "shard_bytes": sum(m.size_in_bytes for m in shards),
    }


def _read(path: str) -> dict[str, list[Any]]:
    with FileSystems.open(path) as f:
        return pq.read_table(f).to_pydict()


def format_summary(summary: dict[str, Any], wall_s: float | None = None) -> str:
    lines = [
        f"inputs:           {summary['inputs']}  (kept {summary['inputs_kept']}, rejected "
        f"{summary['inputs_rejected']}, failed {summary['inputs_failed']}); {summary['media_seconds']:.1f} s of media",
        f"clips kept:       {summary['clips_kept']}  ({summary['kept_seconds']:.1f} s)",
        f"clips rejected:   {summary['clips_rejected']}",
    ]
    for reason, count in summary["rejected_by_reason"].items():
        lines.append(f"  {reason:<24}{count}")
    lines.append(f"inputs failed:    {summary['inputs_failed']}")
    for failure in summary["failures"]:
        lines.append(f"  [{failure['error_type']}] {failure['uri']}: {failure['error']}")
    lines.append(f"shards written:   {summary['shards']}  ({summary['shard_bytes'] / 1e6:.1f} MB)")
    if wall_s:
        lines.append(
            f"throughput:       {summary['media_seconds'] / wall_s:.1f} s of media per second "
            f"({wall_s:.1f} s wall clock)"
        )
    return "\n".join(lines)
