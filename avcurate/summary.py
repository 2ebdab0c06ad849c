"""Summarise an output folder: inputs by outcome, clips kept and rejected by reason, failures, shards, for
index v4 and later the models used, near-duplicates found and the embeddings written, and for v5 with speakers
on, the kept speech."""

from __future__ import annotations

import json
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems

# Computed column-wise in Arrow: a run's index has a row per clip, too many to hold as Python objects.
_LEDGER_COLUMNS = ["uri", "status", "error_type", "error", "probe_duration_s"]
_INDEX_COLUMNS = ["status", "duration_s", "reasons"]
_LEARNED_COLUMNS = ["models", "duplicate_of"]  # index v4 and later
_SPEAKER_COLUMNS = ["speech_ratio", "num_speakers", "speaker_visible_ratio"]  # index v5 and later


def summarize(output_dir: str) -> dict[str, Any]:
    out = output_dir.rstrip("/")
    ledger = _read(f"{out}/ledger.parquet", _LEDGER_COLUMNS)
    index, index_columns = _read_index(f"{out}/index.parquet")
    inputs = _counts(ledger["status"])
    clips = _counts(index["status"])
    kept = pc.equal(index["status"], "kept")
    failed = ledger.filter(pc.equal(ledger["status"], "failed"))
    shards = FileSystems.match([f"{out}/shards/*.tar"])[0].metadata_list
    summary = {
        "inputs": ledger.num_rows,
        "inputs_kept": inputs.get("kept", 0),
        "inputs_rejected": inputs.get("rejected", 0),
        "inputs_failed": inputs.get("failed", 0),
        "inputs_excluded": inputs.get("excluded", 0),  # on a block list (ledger v3)
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
    if "models" in index.column_names:  # older indexes have none of this: their lines are left out
        summary.update(_learned(index, index_columns, out))
    if "speech_ratio" in index.column_names and index["speech_ratio"].null_count < index.num_rows:
        summary["speakers"] = _speakers(index, kept)
    return summary


def _read(path: str, columns: list[str]) -> pa.Table:
    with FileSystems.open(path) as f:
        return pq.read_table(f, columns=columns)


def _read_index(path: str) -> tuple[pa.Table, list[str]]:
    """The columns the summary needs (the learned ones where this index version has them), and all names."""
    with FileSystems.open(path) as f:
        parquet = pq.ParquetFile(f)
        names = parquet.schema_arrow.names
        wanted = _INDEX_COLUMNS + [c for c in _LEARNED_COLUMNS + _SPEAKER_COLUMNS if c in names]
        return parquet.read(columns=wanted), names


def _speakers(index: pa.Table, kept: pa.ChunkedArray) -> dict[str, Any]:
    """Of the kept clips: seconds of speech, how many have each number of speakers, and how much of their
    speech has its speaker on screen."""
    clips = index.filter(kept)
    speech_s = pc.sum(pc.multiply(clips["speech_ratio"], clips["duration_s"])).as_py() or 0.0
    counts = _counts(clips["num_speakers"]) if clips.num_rows else {}
    return {
        "kept_speech_seconds": round(speech_s, 2),
        "kept_by_num_speakers": {str(k): v for k, v in sorted(counts.items(), key=lambda kv: (kv[0] is None, kv[0] or 0))},
        "kept_mean_speaker_visible_ratio": None if clips.num_rows == 0 else pc.mean(clips["speaker_visible_ratio"]).as_py(),
    }


def _learned(index: pa.Table, index_columns: list[str], out: str) -> dict[str, Any]:
    """The distinct model cards by role, the near-duplicates found, and which embeddings were written."""
    models: dict[str, list[dict[str, Any]]] = {}
    for text in sorted(pc.unique(index["models"]).to_pylist()):  # a handful of distinct values, however many rows
        for role, card in json.loads(text).items():
            if card not in models.setdefault(role, []):
                models[role].append(card)
    arrays: dict[str, int] = {}
    for meta in FileSystems.match([f"{out}/embeddings/*/*.npy"])[0].metadata_list:
        role = FileSystems.split(FileSystems.split(meta.path)[0])[1]
        arrays[role] = arrays.get(role, 0) + 1
    return {
        "models": dict(sorted(models.items())),
        "near_duplicates": len(index) - index["duplicate_of"].null_count,
        "embedding_columns": [name for name in index_columns if name.endswith("_embedding")],
        "embedding_arrays": dict(sorted(arrays.items())),  # role -> per-shard .npy files
    }


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
        f"{summary['inputs_rejected']}, failed {summary['inputs_failed']}{_excluded(summary)}); "
        f"{summary['media_seconds']:.1f} s of media",
        f"clips kept:       {summary['clips_kept']}  ({summary['kept_seconds']:.1f} s)",
        f"clips rejected:   {summary['clips_rejected']}",
    ]
    for reason, count in summary["rejected_by_reason"].items():
        lines.append(f"  {reason:<24}{count}")
    lines.append(f"inputs failed:    {summary['inputs_failed']}")
    for failure in summary["failures"]:
        lines.append(f"  [{failure['error_type']}] {failure['uri']}: {failure['error']}")
    lines.append(f"shards written:   {summary['shards']}  ({summary['shard_bytes'] / 1e6:.1f} MB)")
    if "models" in summary:
        lines += _learned_lines(summary)
    if "speakers" in summary:
        speakers = summary["speakers"]
        by_count = ", ".join(f"{n}: {c}" for n, c in speakers["kept_by_num_speakers"].items()) or "none"
        visible = speakers["kept_mean_speaker_visible_ratio"]
        lines.append(f"kept speech:      {speakers['kept_speech_seconds']:.1f} s; clips by speakers {by_count}"
                     + ("" if visible is None else f"; speaker on screen {visible:.0%} of speech on average"))
    if wall_s:
        lines.append(
            f"throughput:       {summary['media_seconds'] / wall_s:.1f} s of media per second "
            f"({wall_s:.1f} s wall clock)"
        )
    return "\n".join(lines)


def _excluded(summary: dict[str, Any]) -> str:
    """Said only when a block list excluded some: most outputs have none to mention."""
    return f", excluded {summary['inputs_excluded']}" if summary["inputs_excluded"] else ""


def _learned_lines(summary: dict[str, Any]) -> list[str]:
    lines = ["models:           none" if not summary["models"] else "models:"]
    for role, cards in summary["models"].items():
        for card in cards:
            pretrained = f" ({card['pretrained']})" if card.get("pretrained") else ""
            lines.append(f"  {role:<24}{card.get('library')} {card.get('name')}{pretrained}, dim {card.get('dim')}")
    lines.append(f"near-duplicates:  {summary['near_duplicates']}")
    columns = ", ".join(summary["embedding_columns"]) or "none"
    arrays = ", ".join(f"{role} ({n} files)" for role, n in summary["embedding_arrays"].items()) or "none"
    lines.append(f"embeddings:       index columns {columns}; per-shard arrays {arrays}")
    return lines
