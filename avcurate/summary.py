"""Summarise an output folder: inputs by outcome, clips kept and rejected by reason, failures, shards."""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems

# Computed column-wise in Arrow: a run's index has a row per clip, too many to hold as Python objects.
_LEDGER_COLUMNS = ["uri", "status", "error_type", "error", "probe_duration_s"]
_INDEX_COLUMNS = ["status", "duration_s", "reasons"]


def summarize(output_dir: str) -> dict[str, Any]:
    out = output_dir.rstrip("/")
    ledger = _read(f"{out}/ledger.parquet", _LEDGER_COLUMNS)
    index = _read(f"{out}/index.parquet", _INDEX_COLUMNS)
    inputs = _counts(ledger["status"])
    clips = _counts(index["status"])
    kept = pc.equal(index["status"], "kept")
    failed = ledger.filter(pc.equal(ledger["status"], "failed"))
    shards = FileSystems.match([f"{out}/shards/*.tar"])[0].metadata_list
    return {
        "inputs": ledger.num_rows,
        "inputs_kept": inputs.get("kept", 0),
        "inputs_rejected": inputs.get("rejected", 0),
        "inputs_failed": inputs.get("failed", 0),
        "media_seconds": round(_sum(ledger["probe_duration_s"]), 2),
        "clips": index.num_rows,
        "clips_kept": clips.get("kept", 0),
        "clips_rejected": clips.get("rejected", 0),
        "kept_seconds": round(_sum(pc.filter(index["duration_s"], kept)), 2),
        "rejected_by_reason": _clips_by_reason(index["reasons"]),
        "failures": [
            {"uri": row["uri"], "error_type": row["error_type"], "error": row["error"]}
            for row in failed.select(["uri", "error_type", "error"]).to_pylist()
        ],
        "shards": len(shards),
        "shard_bytes": sum(m.size_in_bytes for m in shards),
    }


def _read(path: str, columns: list[str]) -> pa.Table:
    with FileSystems.open(path) as f:
        return pq.read_table(f, columns=columns)


def _counts(values: pa.ChunkedArray) -> dict[str, int]:
    return {row["values"]: row["counts"] for row in pc.value_counts(values).to_pylist()}


def _sum(values: pa.ChunkedArray) -> float:
    return pc.sum(values).as_py() or 0.0  # None when empty or all null


def _clips_by_reason(reasons: pa.ChunkedArray) -> dict[str, int]:
    """How many clips each rule rejected: a clip failing one rule twice counts once (rule names as `filters.reason_name` takes them)."""
    flat = pc.list_flatten(reasons)
    if len(flat) == 0:
        return {}
    rules = pc.list_element(pc.split_pattern(flat, ":", max_splits=1), 0)
    pairs = pa.table({"clip": pc.list_parent_indices(reasons), "rule": rules})
    per_clip = pairs.group_by(["clip", "rule"]).aggregate([])
    return dict(sorted(_counts(per_clip["rule"]).items()))


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
