"""The end-of-run summary, computed in Arrow from the index and the ledger."""

from __future__ import annotations

import dataclasses
import tracemalloc
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from avcurate import schemas
from avcurate.model import KEPT, REJECTED, VISUAL, Clip, ProbeInfo, Source, SourceResult
from avcurate.summary import format_summary, summarize
from avcurate.writers.tables import index_batch, ledger_batch, write_table


def _clip(status: str, reasons: list[str], seconds: float) -> Clip:
    return Clip(
        source_id="0123456789abcdef", source_uri="/v/a.mp4", clip_index=0, start_s=0.0, end_s=seconds,
        n_frames=round(25 * seconds), fps=25.0, width=96, height=64, source_width=192, source_height=128,
        sample_rate=16000, channels=1, status=status, reasons=reasons,
        shard="clips-000000.tar" if status == KEPT else None,
    )  # fmt: skip


def _output(folder: Path, repeats: int, clips: list[Clip] | None = None) -> None:
    """Three clips and three inputs, each written `repeats` times."""
    clips = clips or [
        _clip(KEPT, [], 2.0),
        _clip(REJECTED, ["silence_ratio: 0.9 > 0.5", "silence_ratio: again", "motion_score: 0"], 1.5),
        _clip(REJECTED, ["motion_score: 0.001"], 1.0),
    ]
    probe = ProbeInfo(format_name="mp4", duration_s=10.25, size_bytes=1, has_video=True, has_audio=True)
    results = [
        SourceResult(Source.from_uri("/v/a.mp4"), probe=probe, clips=clips[:1]),
        SourceResult(Source.from_uri("/v/b.mp4"), probe=probe, clips=clips[1:]),
        SourceResult(Source.from_uri("/v/c.mp4"), error="moov atom not found", error_type="probe"),
    ]
    (folder / "shards").mkdir(parents=True)
    write_table(pa.concat_tables([index_batch(clips)] * repeats), str(folder / "index.parquet"))
    write_table(pa.concat_tables([ledger_batch(results)] * repeats), str(folder / "ledger.parquet"))


def test_summary_counts(tmp_path: Path) -> None:
    _output(tmp_path, repeats=2)
    summary = summarize(str(tmp_path))
    assert {k: v for k, v in summary.items() if k not in ("failures", "rejected_by_reason")} == {
        "inputs": 6, "inputs_kept": 2, "inputs_rejected": 2, "inputs_failed": 2, "inputs_excluded": 0, "media_seconds": 41.0,
        "clips": 6, "clips_kept": 2, "clips_rejected": 4, "kept_seconds": 4.0, "shards": 0, "shard_bytes": 0,
        "models": {}, "near_duplicates": 0, "embedding_columns": [], "embedding_arrays": {},
    }  # fmt: skip
    # A clip that fails one rule twice counts once for it.
    assert summary["rejected_by_reason"] == {"motion_score": 4, "silence_ratio": 2}
    assert summary["failures"] == [{"uri": "/v/c.mp4", "error_type": "probe", "error": "moov atom not found"}] * 2


def test_summary_does_not_hold_the_index_as_python_objects(tmp_path: Path) -> None:
    _output(tmp_path, repeats=10_000)  # 30k clips
    tracemalloc.start()  # sees Python objects, not Arrow's own buffers
    try:
        summary = summarize(str(tmp_path))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert summary["clips"] == 30_000 and summary["rejected_by_reason"] == {"motion_score": 20_000, "silence_ratio": 10_000}
    # Every row as Python objects peaked at 49 MB here; now 5.6 MB, mostly the 10k failed inputs listed.
    assert peak < 8_000_000, peak


CARD = {"library": "open_clip", "library_version": "2.24.0", "name": "ViT-B-32", "pretrained": "laion2b", "dim": 4}


def test_summary_of_learned_outputs(tmp_path: Path) -> None:
    def learned(clip: Clip, duplicate_of: str | None) -> Clip:
        return dataclasses.replace(clip, models={VISUAL: CARD}, embeddings={VISUAL: np.ones(4, np.float32)},
                                   duplicate_of=duplicate_of)  # fmt: skip

    kept = _clip(KEPT, [], 2.0)
    clips = [learned(kept, None), learned(_clip(REJECTED, ["near_duplicate"], 1.5), kept.key),
             _clip(REJECTED, ["motion_score: 0.001"], 1.0)]  # fmt: skip
    _output(tmp_path, repeats=2, clips=clips)
    (tmp_path / "embeddings" / VISUAL).mkdir(parents=True)
    np.save(tmp_path / "embeddings" / VISUAL / "clips-000000.npy", np.ones((1, 4), np.float16))
    summary = summarize(str(tmp_path))
    assert summary["models"] == {VISUAL: [CARD]}
    assert summary["near_duplicates"] == 2
    assert summary["embedding_columns"] == ["visual_embedding"]
    assert summary["embedding_arrays"] == {VISUAL: 1}
    text = format_summary(summary)
    assert "open_clip ViT-B-32 (laion2b), dim 4" in text and "near-duplicates:  2" in text
    assert "index columns visual_embedding; per-shard arrays visual (1 files)" in text


def test_summary_of_a_version_3_index(tmp_path: Path) -> None:
    _output(tmp_path, repeats=1)
    v3_only = ["av_correspondence", "duplicate_similarity", "zero_shot", "duplicate_of", "models", "speech_ratio",
               "num_speakers", "dominant_speaker_share", "overlap_ratio", "num_faces", "speaker_visible_ratio",
               "lip_offset_ms", "lip_sync_confidence", "speech", "turns", "face_tracks", "speaker_on_screen"]  # fmt: skip
    index = pq.read_table(tmp_path / "index.parquet").drop_columns(v3_only)
    index = index.set_column(index.schema.get_field_index("schema_version"), index.schema.field("schema_version"),
                             pa.array([3] * index.num_rows, pa.int64()))  # fmt: skip
    index = index.replace_schema_metadata({"avcurate.schema_version": "3"})
    schemas.validate_index(index, version=3)  # written as version 3 wrote it
    write_table(index, str(tmp_path / "index.parquet"))
    summary = summarize(str(tmp_path))
    assert (summary["clips"], summary["clips_kept"], summary["rejected_by_reason"]) == (
        3, 1, {"motion_score": 2, "silence_ratio": 1})  # fmt: skip
    assert not {"models", "near_duplicates", "embedding_columns", "embedding_arrays"} & set(summary)
    assert "models:" not in format_summary(summary) and "embeddings:" not in format_summary(summary)
