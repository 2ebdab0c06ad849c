"""Shard planning and writing, the Parquet index and ledger, and the committed output schemas."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import pickle
import subprocess
import tarfile
from pathlib import Path

import jsonschema
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import webdataset as wds

from avcurate import schemas
from avcurate.model import (
    AUDIO,
    FAILED,
    KEPT,
    REJECTED,
    VISUAL,
    VISUAL_FRAMES,
    Clip,
    ClipScores,
    ProbeInfo,
    Source,
    SourceResult,
)
from avcurate.writers import (
    index_batch,
    index_table,
    ledger_batch,
    ledger_table,
    merge_index,
    merge_ledger,
    plan_layout,
    plan_shards,
    shard_entry,
    with_shards,
    write_shard,
    write_table,
)
from avcurate.writers import shards
from avcurate.writers.shards import SAFE_KEY, ShardInfo, ShardPlan

# Source URIs with spaces, unicode, '#', '?', dots: keys must still be tar- and WebDataset-safe.
ODD_URIS = [
    "gs://bucket/my video #1.mp4",
    "s3://b/vidéo/ファイル.v2.final.mp4",
    "/data/a.b.c/x y.MOV",
    "https://host/path/clip.mp4?t=1&x=y#frag",
]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Three small real MP4s (1 s of test pattern and a tone each), different content and sizes."""
    folder = tmp_path_factory.mktemp("media")
    paths = []
    for i, freq in enumerate((220, 440, 880)):
        path = folder / f"staged-{i}.mp4"
        subprocess.run(
            ["ffmpeg", "-v", "error", "-nostdin", "-y",
             "-f", "lavfi", "-i", f"testsrc2=size={96 + 32 * i}x64:rate=25:duration=1",
             "-f", "lavfi", "-i", f"sine=frequency={freq}:sample_rate=16000:duration=1",
             "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-threads", "1",
             "-c:a", "aac", "-shortest", "-fflags", "+bitexact", str(path)],
            check=True,
        )  # fmt: skip
        paths.append(path)
    return paths


def make_clip(uri: str, index: int, staged: Path | None, *, status: str = KEPT, mp4_bytes: int | None = None) -> Clip:
    source = Source.from_uri(uri, {"title": f"vidéo {index}", "tags": ["a", "b"]})
    return Clip(
        source_id=source.source_id,
        source_uri=uri,
        clip_index=index,
        start_s=2.0 * index,
        end_s=2.0 * index + 1.0,
        n_frames=25,
        fps=25.0,
        width=96,
        height=64,
        source_width=192,
        source_height=128,
        sample_rate=16000,
        channels=1,
        scores=ClipScores(loudness_dbfs=-20.5, silence_ratio=0.0, motion_score=0.03, av_offset_ms=40.0),
        end_reason="shot",
        status=status,
        reasons=[] if status == KEPT else ["silence_ratio", "motion_score"],
        source_meta=source.meta,
        config_hash="0123456789ab",
        staged_path=str(staged) if staged is not None else None,
        mp4_bytes=mp4_bytes if mp4_bytes is not None else (staged.stat().st_size if staged else 0),
    )


@pytest.fixture
def real_clips(media: list[Path]) -> list[Clip]:
    """Kept clips from the odd URIs over the real MP4s, plus one rejected clip."""
    clips = [make_clip(uri, i, media[i % len(media)]) for i, uri in enumerate(ODD_URIS)]
    clips.append(make_clip(ODD_URIS[0], 7, media[0], status=REJECTED))
    return clips


def synthetic(n: int, mp4_bytes: int = 1000) -> list[Clip]:
    return [make_clip(f"file:///v/{i}.mp4", i, None, mp4_bytes=mp4_bytes) for i in range(n)]


def with_staged(clips: list[Clip]) -> list[Clip]:
    return [dataclasses.replace(c, staged_path="/unused.mp4") for c in clips]


def write_all(plans: list[ShardPlan], folder: Path) -> dict[str, str]:
    return {info.name: info.sha256 for info in (write_shard(p, str(folder)) for p in plans)}


# --- planning ---------------------------------------------------------------------------------------------


def test_plan_by_count_sorted_and_named() -> None:
    clips = with_staged(synthetic(5))
    clips.append(dataclasses.replace(clips[0], clip_index=99, status=REJECTED))
    plans = plan_shards(list(reversed(clips)), prefix="clips", max_clips=2, max_bytes=1 << 30)

    assert [p.name for p in plans] == ["clips-000000.tar", "clips-000001.tar", "clips-000002.tar"]
    assert [len(p.clips) for p in plans] == [2, 2, 1]
    keys = [c.key for p in plans for c in p.clips]
    assert keys == sorted(c.key for c in clips if c.status == KEPT)  # rejected clips are not sharded
    assert all(c.shard == p.name for p in plans for c in p.clips)
    assert all(c.shard is None for c in clips)  # the caller's clips are left alone
    assert plans == plan_shards(clips, prefix="clips", max_clips=2, max_bytes=1 << 30)  # input order is moot
    assert pickle.loads(pickle.dumps(plans)) == plans  # Beam ships plans between workers


def test_plan_by_bytes_and_oversized_clip_alone() -> None:
    # Each clip: 2 headers + 20480 mp4 + one json block = 22016 bytes; two fit in a 51200-byte tar, three don't.
    clips = with_staged(synthetic(5, mp4_bytes=20000))
    big_key = sorted(c.key for c in clips)[2]
    clips = [dataclasses.replace(c, mp4_bytes=10**6) if c.key == big_key else c for c in clips]
    plans = plan_shards(clips, prefix="x", max_clips=100, max_bytes=51200)

    assert [len(p.clips) for p in plans] == [2, 1, 2]
    assert plans[1].clips[0].key == big_key
    assert plans[1].n_bytes > 51200
    assert all(p.n_bytes <= 51200 for p in (plans[0], plans[2]))
    assert all(p.n_bytes % tarfile.RECORDSIZE == 0 for p in plans)


def test_plan_refuses_bad_input() -> None:
    clip = synthetic(1)[0]
    with pytest.raises(ValueError, match="staged_path"):
        plan_shards([clip], prefix="c", max_clips=1, max_bytes=1 << 20)
    staged = with_staged([clip])[0]
    with pytest.raises(ValueError, match="duplicate"):
        plan_shards([staged, staged], prefix="c", max_clips=9, max_bytes=1 << 20)
    for bad_id in ("a.b", "a/b", "ü", "a b"):
        with pytest.raises(ValueError, match="safe"):
            plan_shards([dataclasses.replace(staged, source_id=bad_id)], prefix="c", max_clips=9, max_bytes=1 << 20)
    with pytest.raises(ValueError, match="positive"):
        plan_shards([staged], prefix="c", max_clips=0, max_bytes=1 << 20)
    nan_scores = dataclasses.replace(staged, scores=ClipScores(loudness_dbfs=float("nan")))
    with pytest.raises(ValueError):  # NaN is not JSON: fail at planning, not in a reader
        plan_shards([nan_scores], prefix="c", max_clips=9, max_bytes=1 << 20)


def test_odd_uris_give_safe_keys(real_clips: list[Clip]) -> None:
    for clip in real_clips:
        assert SAFE_KEY.fullmatch(clip.key)
        assert "." not in clip.key and "/" not in clip.key


def test_layout_routes_clips_as_the_in_memory_plan_does(real_clips: list[Clip]) -> None:
    """What the Beam layer does (entries -> layout -> place -> group -> plan per shard), clip by clip."""
    clips = with_staged(synthetic(7, mp4_bytes=20000)) + real_clips
    plans = plan_shards(clips, prefix="clips", max_clips=3, max_bytes=51200)
    kept = [c for c in clips if c.status == KEPT]
    entries = [pickle.loads(pickle.dumps(shard_entry(c, "clips"))) for c in reversed(kept)]
    assert all(len(pickle.dumps(e)) < 200 for e in entries)  # what the planning worker holds per clip
    layout = plan_layout(entries, prefix="clips", max_clips=3, max_bytes=51200)
    assert len(layout.first_keys) == len(plans) > 2

    groups: dict[int, list[Clip]] = {}
    for clip in kept:  # arrival order is whatever the runner makes it
        index, placed = layout.place(clip)
        assert placed.shard == with_shards([clip], plans)[0].shard == plans[index].name
        groups.setdefault(index, []).append(placed)
    assert [layout.plan(i, reversed(groups[i])) for i in sorted(groups)] == plans
    with pytest.raises(ValueError, match="elsewhere"):  # a clip routed to the wrong shard is caught
        layout.plan(0, groups[0][:-1] + groups[1][:1])
    with pytest.raises(ValueError, match="elsewhere"):  # and so is a shard missing a clip
        layout.plan(1, groups[1][1:])


# --- shards -----------------------------------------------------------------------------------------------


def test_shards_read_back_with_webdataset_and_tarfile(real_clips: list[Clip], tmp_path: Path) -> None:
    plans = plan_shards(real_clips, prefix="clips", max_clips=3, max_bytes=1 << 30)
    assert [len(p.clips) for p in plans] == [3, 1]
    infos = [write_shard(p, str(tmp_path)) for p in plans]
    assert sorted(os.listdir(tmp_path)) == ["clips-000000.tar", "clips-000001.tar"]

    by_key = {c.key: c for p in plans for c in p.clips}
    expected_keys = sorted(by_key)
    for plan, info in zip(plans, infos):
        path = tmp_path / plan.name
        assert (info.name, info.n_clips) == (plan.name, len(plan.clips))
        assert info.n_bytes == path.stat().st_size == plan.n_bytes  # the plan's size estimate is exact
        assert info.sha256 == sha256(path)

    url = str(tmp_path / "clips-{000000..000001}.tar")
    samples = list(wds.WebDataset(url, shardshuffle=False))
    assert [s["__key__"] for s in samples] == expected_keys
    for sample in samples:
        clip = by_key[sample["__key__"]]
        assert set(sample) >= {"mp4", "json"}
        assert sample["mp4"] == Path(clip.staged_path or "").read_bytes()
        meta = json.loads(sample["json"])
        assert meta == {**clip.metadata(), "shard": clip.shard}
        schemas.validate_sample_metadata(meta)
        canonical = json.dumps(meta, sort_keys=True, separators=(",", ":"), ensure_ascii=False) + "\n"
        assert sample["json"] == canonical.encode("utf-8")

    with tarfile.open(tmp_path / plans[0].name) as tar:
        members = tar.getmembers()
    assert [m.name for m in members] == [f"{k}.{ext}" for k in expected_keys[:3] for ext in ("mp4", "json")]
    for m in members:
        assert (m.mtime, m.uid, m.gid, m.uname, m.gname, m.mode, m.type) == (0, 0, 0, "", "", 0o644, tarfile.REGTYPE)


def test_shards_are_byte_identical_across_runs(real_clips: list[Clip], tmp_path: Path) -> None:
    plans = plan_shards(real_clips, prefix="clips", max_clips=2, max_bytes=1 << 30)
    first = write_all(plans, tmp_path / "a")
    replanned = plan_shards(list(reversed(real_clips)), prefix="clips", max_clips=2, max_bytes=1 << 30)
    again = write_all(replanned, tmp_path / "b")
    rewritten = write_all(plans, tmp_path / "a")  # overwriting in place
    assert first == again == rewritten
    assert {n: sha256(tmp_path / "b" / n) for n in first} == first
    assert sorted(os.listdir(tmp_path / "a")) == sorted(first)


def test_final_name_appears_only_when_complete(
    real_clips: list[Clip], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (plan,) = plan_shards(real_clips, prefix="clips", max_clips=10, max_bytes=1 << 30)
    seen: list[list[str]] = []
    add_clip = shards._add_clip

    def spying_add_clip(tar: tarfile.TarFile, clip: Clip, shard: str) -> None:
        seen.append(sorted(os.listdir(tmp_path)))
        add_clip(tar, clip, shard)

    monkeypatch.setattr(shards, "_add_clip", spying_add_clip)
    write_shard(plan, str(tmp_path))
    assert len(seen) == len(plan.clips)
    for listing in seen:  # mid-write: only the hidden temporary, which a `clips-*.tar` glob skips
        assert len(listing) == 1 and listing[0].startswith(".clips-000000.tar.tmp-")
    assert os.listdir(tmp_path) == ["clips-000000.tar"]
    assert list(tmp_path.glob("clips-*.tar")) == [tmp_path / "clips-000000.tar"]


@pytest.mark.parametrize("fault", ["missing", "shorter", "longer"])
def test_failed_shard_leaves_no_file(real_clips: list[Clip], tmp_path: Path, fault: str) -> None:
    (plan,) = plan_shards(real_clips, prefix="clips", max_clips=10, max_bytes=1 << 30)
    second = plan.clips[1]
    if fault == "missing":
        broken = dataclasses.replace(second, staged_path=str(tmp_path / "gone.mp4"))
    else:  # the staged file disagrees with the size the plan was made with
        broken = dataclasses.replace(second, mp4_bytes=second.mp4_bytes + (1 if fault == "shorter" else -1))
    plan.clips[1] = broken
    out = tmp_path / "shards"
    out.mkdir()
    with pytest.raises(Exception):
        write_shard(plan, str(out))
    assert os.listdir(out) == []  # neither the final name nor a temporary file


# --- index and ledger -------------------------------------------------------------------------------------


def sources_and_results(real_clips: list[Clip]) -> tuple[list[Clip], list[SourceResult]]:
    clips = with_shards(real_clips, plan_shards(real_clips, prefix="clips", max_clips=2, max_bytes=1 << 30))
    probe = ProbeInfo(format_name="mov,mp4", duration_s=12.5, size_bytes=1234, has_video=True, has_audio=True,
                      video_codec="h264", width=96, height=64, fps=25.0, sample_rate=16000, channels=1)  # fmt: skip
    results = [
        SourceResult(Source.from_uri(uri), probe=probe, clips=[c for c in clips if c.source_uri == uri])
        for uri in ODD_URIS
    ]
    results.append(SourceResult(Source.from_uri("gs://bucket/empty.mp4"), probe=probe, note="too short"))
    results.append(SourceResult(Source.from_uri("/broken #2.mp4"), error="moov atom not found", error_type="probe"))
    return clips, results


def test_index_table(real_clips: list[Clip], tmp_path: Path) -> None:
    clips, _ = sources_and_results(real_clips)
    path = tmp_path / "index.parquet"
    write_table(index_table(clips), str(path))
    schemas.validate_index(pq.read_table(path))

    df = pd.read_parquet(path)
    assert list(df["key"]) == sorted(c.key for c in clips)
    by_key = {c.key: c for c in clips}
    for row in df.to_dict("records"):
        clip = by_key[row["key"]]
        assert row["status"] == clip.status
        assert list(row["reasons"]) == clip.reasons
        assert json.loads(row["source_meta"]) == clip.source_meta
        assert row["duration_s"] == pytest.approx(clip.duration_s)
        assert row["loudness_dbfs"] == clip.scores.loudness_dbfs
        assert pd.isna(row["black_ratio"])  # a missing score is a null, not a zero
        if clip.status == KEPT:
            assert row["shard"] == clip.shard and row["shard"].startswith("clips-")
        else:
            assert pd.isna(row["shard"])
        assert row["schema_version"] == 5


def test_ledger_table(real_clips: list[Clip], tmp_path: Path) -> None:
    _, results = sources_and_results(real_clips)
    path = tmp_path / "ledger.parquet"
    write_table(ledger_table(list(reversed(results))), str(path))
    schemas.validate_ledger(pq.read_table(path))

    df = pd.read_parquet(path).set_index("uri", drop=False)
    assert list(df["uri"]) == sorted(r.source.uri for r in results)
    kept = df.loc[ODD_URIS[0]]
    assert (kept["status"], kept["n_clips"], kept["n_kept"], kept["n_rejected"]) == (KEPT, 2, 1, 1)
    assert (kept["probe_width"], kept["probe_has_audio"], kept["probe_video_codec"]) == (96, True, "h264")
    assert pd.isna(kept["probe_audio_codec"])
    empty = df.loc["gs://bucket/empty.mp4"]
    assert (empty["status"], empty["n_clips"], empty["note"]) == (REJECTED, 0, "too short")
    failed = df.loc["/broken #2.mp4"]
    assert (failed["status"], failed["error_type"], failed["error"]) == (FAILED, "probe", "moov atom not found")
    assert pd.isna(failed["probe_format_name"]) and pd.isna(failed["probe_duration_s"])


def test_tables_are_byte_identical_and_atomic(real_clips: list[Clip], tmp_path: Path) -> None:
    clips, results = sources_and_results(real_clips)
    # Beam builds the tables from batches of rows made in parallel, in whatever grouping and order it likes.
    index_batches = [index_batch(clips[i : i + 2]) for i in reversed(range(0, len(clips), 2))]
    ledger_batches = [ledger_batch(results[i : i + 3]) for i in reversed(range(0, len(results), 3))]
    assert len(index_batches) > 1 and len(ledger_batches) > 1
    for name, table, shuffled in [
        ("index.parquet", index_table(clips), merge_index(index_batches)),
        ("ledger.parquet", ledger_table(results), merge_ledger(pickle.loads(pickle.dumps(ledger_batches)))),
    ]:
        write_table(table, str(tmp_path / "a" / name))
        write_table(shuffled, str(tmp_path / "b" / name))
        assert sha256(tmp_path / "a" / name) == sha256(tmp_path / "b" / name)
        first = sha256(tmp_path / "a" / name)
        write_table(table, str(tmp_path / "a" / name))
        assert sha256(tmp_path / "a" / name) == first
    assert sorted(os.listdir(tmp_path / "a")) == ["index.parquet", "ledger.parquet"]  # no temp files left


def test_empty_tables_keep_their_schema(tmp_path: Path) -> None:
    write_table(index_table([]), str(tmp_path / "i.parquet"))
    write_table(ledger_table([]), str(tmp_path / "l.parquet"))
    schemas.validate_index(pq.read_table(tmp_path / "i.parquet"))
    schemas.validate_ledger(pq.read_table(tmp_path / "l.parquet"))


def test_index_refuses_inconsistent_rows(real_clips: list[Clip]) -> None:
    rejected = real_clips[-1]
    assert rejected.status == REJECTED
    with pytest.raises(ValueError, match="config_hash"):
        index_table([dataclasses.replace(rejected, config_hash=None)])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="with_shards"):  # a kept clip must name its shard
        index_table(real_clips)
    with pytest.raises(ValueError, match="with_shards"):
        index_table([dataclasses.replace(rejected, shard="clips-000000.tar")])


def test_with_shards_keeps_order_and_rejected_clips(real_clips: list[Clip]) -> None:
    plans = plan_shards(real_clips, prefix="clips", max_clips=2, max_bytes=1 << 30)
    clips = with_shards(real_clips, plans)
    assert [c.key for c in clips] == [c.key for c in real_clips]
    assert [c.shard is not None for c in clips] == [c.status == KEPT for c in real_clips]
    assert {c.key: c.shard for c in clips if c.shard} == {c.key: p.name for p in plans for c in p.clips}


# --- schemas ----------------------------------------------------------------------------------------------


def test_committed_table_schemas_match_code() -> None:
    for filename, doc in schemas.generated().items():
        committed = (schemas.SCHEMAS_DIR / filename).read_text(encoding="utf-8")
        assert committed == schemas.dump(doc), f"schemas/{filename} is stale: run `python -m avcurate.schemas`"


def test_table_validators_catch_drift(real_clips: list[Clip]) -> None:
    table = index_table(sources_and_results(real_clips)[0])
    schemas.validate_index(table)
    with pytest.raises(schemas.SchemaMismatch, match="missing column 'shard'"):
        schemas.validate_index(table.drop_columns(["shard"]))
    retyped = table.set_column(table.schema.get_field_index("width"), "width", table["width"].cast(pa.int32()))
    with pytest.raises(schemas.SchemaMismatch, match="'width' is int32"):
        schemas.validate_index(retyped)
    with pytest.raises(schemas.SchemaMismatch, match="schema_version"):
        schemas.validate_index(table.replace_schema_metadata(None))
    with pytest.raises(schemas.SchemaMismatch):
        schemas.validate_ledger(table)


def test_sample_schema_matches_model(real_clips: list[Clip]) -> None:
    doc = schemas.load(schemas.SAMPLE_METADATA_FILE)
    jsonschema.Draft202012Validator.check_schema(doc)
    assert set(doc["required"]) == set(doc["properties"]) == set(real_clips[0].metadata()) | {"shard"}
    score_fields = [f.name for f in dataclasses.fields(ClipScores)]
    assert doc["properties"]["scores"]["required"] == score_fields
    assert set(doc["properties"]["scores"]["properties"]) == set(score_fields)
    assert doc["properties"]["key"]["pattern"] == f"^{SAFE_KEY.pattern}$"


@pytest.mark.parametrize(
    "change",
    [
        {"extra": 1},
        {"shard": None},
        {"clip_index": "3"},
        {"scores": {**ClipScores().to_dict(), "motion_score": "high"}},
        {"scores": {"loudness_dbfs": None}},
        {"key": "abc.def-00001"},
        {"end_reason": "sunset"},
    ],
)
def test_sample_schema_is_strict(real_clips: list[Clip], change: dict) -> None:
    meta = {**real_clips[0].metadata(), "shard": "clips-000000.tar"}
    schemas.validate_sample_metadata(meta)
    with pytest.raises(jsonschema.ValidationError):
        schemas.validate_sample_metadata({**meta, **change})


def test_sample_schema_requires_every_key(real_clips: list[Clip]) -> None:
    meta = {**real_clips[0].metadata(), "shard": "clips-000000.tar"}
    for name in meta:
        with pytest.raises(jsonschema.ValidationError):
            schemas.validate_sample_metadata({k: v for k, v in meta.items() if k != name})


# --- embeddings (schema v4) -------------------------------------------------------------------------------

DIM = 512  # big enough that a shard's .npy members outgrow the tar's 10240-byte record padding


def unit_vectors(seed: int, shape: tuple[int, ...]) -> np.ndarray:
    vectors = np.random.default_rng(seed).standard_normal(shape).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=-1, keepdims=True)


CARDS = {
    VISUAL: {"library": "open_clip", "library_version": "2.24.0", "name": "ViT-B-32", "pretrained": "laion2b",
             "dim": DIM, "image_size": 224},
    AUDIO: {"library": "transformers", "library_version": "4.40.0", "name": "laion/clap-htsat-unfused",
            "pretrained": None, "dim": DIM, "sample_rate": 48000},
}  # fmt: skip


def embedded(clips: list[Clip]) -> list[Clip]:
    """Kept clips with visual, per-frame and audio embeddings, except the second kept one (no audio), and learned
    scores; rejected clips with none, as when rejected before inference."""
    out = []
    for n, clip in enumerate(clips):
        if clip.status != KEPT:
            out.append(clip)
            continue
        embeddings = {VISUAL: unit_vectors(n, (DIM,)), VISUAL_FRAMES: unit_vectors(100 + n, (3, DIM))}
        if n != 1:
            embeddings[AUDIO] = unit_vectors(200 + n, (DIM,))
        scores = dataclasses.replace(clip.scores, av_correspondence=0.25 * n, duplicate_similarity=0.97 if n else None)
        out.append(dataclasses.replace(
            clip, embeddings=embeddings, models={r: CARDS[r] for r in (VISUAL, AUDIO) if r in embeddings},
            zero_shot={"talking": 0.5 + 0.1 * n, "music": 0.25}, scores=scores, duplicate_of=out[0].key if n else None,
        ))  # fmt: skip
    return out


@pytest.fixture
def embedded_clips(real_clips: list[Clip]) -> list[Clip]:
    return embedded(real_clips)


def write_output(clips: list[Clip], folder: Path, max_clips: int = 3) -> tuple[list[ShardPlan], list[ShardInfo]]:
    plans = plan_shards(clips, prefix="clips", max_clips=max_clips, max_bytes=1 << 30)
    infos = [write_shard(p, str(folder / "shards"), str(folder / "embeddings")) for p in plans]
    write_table(index_table(with_shards(clips, plans)), str(folder / "index.parquet"))
    return plans, infos


def test_embeddings_are_sample_members(embedded_clips: list[Clip], tmp_path: Path) -> None:
    plans, infos = write_output(embedded_clips, tmp_path)
    by_key = {c.key: c for p in plans for c in p.clips}
    for plan, info in zip(plans, infos):
        assert info.n_bytes == (tmp_path / "shards" / plan.name).stat().st_size == plan.n_bytes  # caps stay exact
        with tarfile.open(tmp_path / "shards" / plan.name) as tar:
            names = tar.getnames()
            expected = [
                f"{c.key}.{ext}" for c in plan.clips for ext in ["mp4", "json"] + [f"{r}.npy" for r in sorted(c.embeddings)]
            ]
            assert names == expected
            for clip in plan.clips:
                for role, array in clip.embeddings.items():
                    data = tar.extractfile(f"{clip.key}.{role}.npy").read()  # type: ignore[union-attr]
                    loaded = np.load(io.BytesIO(data), allow_pickle=False)
                    assert loaded.dtype == np.dtype("<f4") and np.array_equal(loaded, array)
                    saved = io.BytesIO()
                    np.save(saved, array)
                    assert data == saved.getvalue()  # exactly np.save's bytes: header of dtype, order, shape

    samples = list(wds.WebDataset(str(tmp_path / "shards" / "clips-{000000..000001}.tar"), shardshuffle=False))
    assert [s["__key__"] for s in samples] == sorted(by_key)
    for sample in samples:
        clip = by_key[sample["__key__"]]
        assert np.array_equal(np.load(io.BytesIO(sample["visual.npy"])), clip.embeddings[VISUAL])
        assert np.array_equal(np.load(io.BytesIO(sample["visual_frames.npy"])), clip.embeddings[VISUAL_FRAMES])
        assert ("audio.npy" in sample) == (AUDIO in clip.embeddings)
        meta = json.loads(sample["json"])
        schemas.validate_sample_metadata(meta)
        assert meta["embeddings"] == {role: list(a.shape) for role, a in clip.embeddings.items()}
        assert (meta["models"], meta["zero_shot"], meta["duplicate_of"]) == (clip.models, clip.zero_shot, clip.duplicate_of)
        assert meta["scores"]["av_correspondence"] == clip.scores.av_correspondence


def test_byte_caps_count_npy_members(embedded_clips: list[Clip]) -> None:
    kept = [c for c in embedded_clips if c.status == KEPT]
    (two,) = plan_shards(kept[:2], prefix="clips", max_clips=2, max_bytes=1 << 30)
    plain = [dataclasses.replace(c, embeddings={}) for c in kept[:2]]
    (two_plain,) = plan_shards(plain, prefix="clips", max_clips=2, max_bytes=1 << 30)
    assert two.n_bytes - two_plain.n_bytes >= sum(a.nbytes for c in kept[:2] for a in c.embeddings.values())
    plans = plan_shards(kept, prefix="clips", max_clips=100, max_bytes=two.n_bytes)  # exactly two clips fit
    assert len(plans[0].clips) == 2 and plans[0].n_bytes == two.n_bytes
    assert all(p.n_bytes <= two.n_bytes or len(p.clips) == 1 for p in plans)


def test_index_embedding_columns(embedded_clips: list[Clip], tmp_path: Path) -> None:
    plans, _ = write_output(embedded_clips, tmp_path)
    table = pq.read_table(tmp_path / "index.parquet")
    schemas.validate_index(table)
    assert table.column_names[-2:] == ["audio_embedding", "visual_embedding"]
    assert table.schema.field("visual_embedding").type == pa.list_(pa.field("element", pa.float32()), DIM)
    clips = {c.key: c for c in with_shards(embedded_clips, plans)}
    for row in table.to_pylist():
        clip = clips[row["key"]]
        for role in (VISUAL, AUDIO):
            if role in clip.embeddings:
                assert np.array_equal(np.array(row[f"{role}_embedding"], dtype=np.float32), clip.embeddings[role])
            else:  # rejected before inference, or no audio embedding: a row of nulls (see embedding_field)
                assert row[f"{role}_embedding"] == [None] * DIM
        assert json.loads(row["zero_shot"]) == clip.zero_shot and json.loads(row["models"]) == clip.models
        assert (row["duplicate_of"], row["duplicate_similarity"]) == (clip.duplicate_of, clip.scores.duplicate_similarity)
    rejected = next(r for r in table.to_pylist() if r["status"] == REJECTED)
    assert (rejected["models"], rejected["zero_shot"], rejected["duplicate_of"]) == ("{}", "{}", None)
    vectors = table["visual_embedding"].combine_chunks().flatten().to_numpy(zero_copy_only=False).reshape(-1, DIM)
    assert np.isnan(vectors[[r["status"] == REJECTED for r in table.to_pylist()]]).all()  # NaN rows for numpy


def test_shard_arrays_align_with_index_rows(embedded_clips: list[Clip], tmp_path: Path) -> None:
    plans, infos = write_output(embedded_clips, tmp_path)
    index = pq.read_table(tmp_path / "index.parquet")
    assert sorted(os.listdir(tmp_path / "embeddings")) == [AUDIO, VISUAL]
    for plan, info in zip(plans, infos):
        stem = plan.name.removesuffix(".tar")
        assert sorted(info.embedding_files) == [str(tmp_path / "embeddings" / r / f"{stem}.npy") for r in (AUDIO, VISUAL)]
        rows = index.filter(pa.compute.equal(index["shard"], plan.name))
        assert rows["key"].to_pylist() == [c.key for c in plan.clips]  # the shard's sample order
        for role in (VISUAL, AUDIO):
            array = np.load(tmp_path / "embeddings" / role / f"{stem}.npy")
            assert array.dtype == np.dtype("<f2") and array.shape == (len(plan.clips), DIM)
            expected = rows[f"{role}_embedding"].combine_chunks().flatten().to_numpy(zero_copy_only=False)
            assert np.array_equal(array, expected.reshape(-1, DIM).astype(np.float16), equal_nan=True)
    no_audio = next(c for c in embedded_clips if c.status == KEPT and AUDIO not in c.embeddings)
    plan = next(p for p in plans if no_audio.key in [c.key for c in p.clips])
    row = [c.key for c in plan.clips].index(no_audio.key)
    assert np.isnan(np.load(tmp_path / "embeddings" / AUDIO / plan.name.replace(".tar", ".npy"))[row]).all()


def test_embedding_outputs_are_byte_identical(embedded_clips: list[Clip], tmp_path: Path) -> None:
    write_output(embedded_clips, tmp_path / "a")
    write_output(list(reversed(embedded_clips)), tmp_path / "b")

    def digests(root: Path) -> dict[str, str]:
        return {str(p.relative_to(root)): sha256(p) for p in sorted(root.rglob("*")) if p.is_file()}

    first = digests(tmp_path / "a")
    assert any(name.startswith("embeddings/") for name in first) and first == digests(tmp_path / "b")
    # The index from batches where some lack an embedding column (only rejected or audio-less clips).
    clips = with_shards(embedded_clips, plan_shards(embedded_clips, prefix="clips", max_clips=3, max_bytes=1 << 30))
    batches = [index_batch([c]) for c in reversed(clips)]
    assert {tuple(b.column_names[-2:]) for b in batches} > {("audio_embedding", "visual_embedding")}
    write_table(merge_index(batches), str(tmp_path / "batched.parquet"))
    assert sha256(tmp_path / "batched.parquet") == first["index.parquet"]


def test_embedding_inputs_are_checked(embedded_clips: list[Clip]) -> None:
    kept = [dataclasses.replace(c, shard="clips-000000.tar") for c in embedded_clips if c.status == KEPT]
    with pytest.raises(ValueError, match="role 'vis.ual'"):
        shard_entry(dataclasses.replace(kept[0], embeddings={"vis.ual": np.zeros(4, np.float32)}), "clips")
    odd = dataclasses.replace(kept[0], embeddings={VISUAL: np.zeros(DIM // 2, np.float32)})
    with pytest.raises(ValueError, match="visual embeddings have shapes"):
        index_batch([odd, kept[1]])
    with pytest.raises(ValueError, match="disagree on the size of visual_embedding"):
        merge_index([index_batch([odd]), index_batch([kept[1]])])


def test_index_validator_knows_optional_embedding_columns(embedded_clips: list[Clip]) -> None:
    clips = with_shards(embedded_clips, plan_shards(embedded_clips, prefix="clips", max_clips=3, max_bytes=1 << 30))
    table = index_table(clips)
    schemas.validate_index(table)
    schemas.validate_index(table.drop_columns(["audio_embedding"]))  # optional: present only when made
    with pytest.raises(schemas.SchemaMismatch, match="out of order"):
        schemas.validate_index(table.select([*table.column_names[:-2], "visual_embedding", "audio_embedding"]))
    with pytest.raises(schemas.SchemaMismatch, match="unexpected column 'text_embedding'"):
        schemas.validate_index(table.append_column("text_embedding", table["visual_embedding"]))
    as_list = table["visual_embedding"].cast(pa.list_(pa.field("element", pa.float32())))
    with pytest.raises(schemas.SchemaMismatch, match="'visual_embedding' is list<element: float>"):
        schemas.validate_index(table.set_column(table.num_columns - 1, "visual_embedding", as_list))


V4_INDEX_COLUMNS = ["av_correspondence", "duplicate_similarity", "zero_shot", "duplicate_of", "models"]
V5_SCORES = ["speech_ratio", "num_speakers", "dominant_speaker_share", "overlap_ratio", "num_faces",
             "speaker_visible_ratio", "lip_offset_ms", "lip_sync_confidence"]  # fmt: skip
V5_INDEX_COLUMNS = [*V5_SCORES, "speech", "turns", "face_tracks", "speaker_on_screen"]


def v3_index(clips: list[Clip]) -> pa.Table:
    """An index as version 3 wrote it: without the v4 columns, declaring version 3."""
    table = index_table(clips).drop_columns(V4_INDEX_COLUMNS + V5_INDEX_COLUMNS)
    table = table.set_column(table.schema.get_field_index("schema_version"), table.schema.field("schema_version"),
                             pa.array([3] * table.num_rows, pa.int64()))  # fmt: skip
    return table.replace_schema_metadata({"avcurate.schema_version": "3"})


def test_version_3_outputs_still_validate(real_clips: list[Clip]) -> None:
    table = v3_index(sources_and_results(real_clips)[0])
    assert schemas.describe(table.schema, "index")["fields"] == schemas.load("index.v3.json")["fields"]
    schemas.validate_index(table, version=3)
    with pytest.raises(schemas.SchemaMismatch, match="missing column 'models'"):
        schemas.validate_index(table)
    meta = {**real_clips[0].metadata(), "shard": "clips-000000.tar", "schema_version": 3}
    for key in ("zero_shot", "models", "duplicate_of", "embeddings", "speech", "turns", "face_tracks", "speaker_on_screen"):
        del meta[key]
    for score in ("av_correspondence", "duplicate_similarity", *V5_SCORES):
        del meta["scores"][score]
    schemas.validate_sample_metadata(meta, version=3)
    with pytest.raises(jsonschema.ValidationError):
        schemas.validate_sample_metadata(meta)
