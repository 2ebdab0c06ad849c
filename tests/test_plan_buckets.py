"""Shard planning and the index a key-range bucket per worker: contiguous shards that never cross a bucket, one
sorted index, and, with one bucket, exactly what planning and indexing the whole run at once gives."""

from __future__ import annotations

import dataclasses
import hashlib
import random
import tarfile
from pathlib import Path

import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import yaml

from avcurate import schemas
from avcurate.model import KEPT
from avcurate.sample import SampleSet
from avcurate.writers.buckets import bucket_count, bucket_range, key_bucket
from avcurate.writers.shards import BucketedLayout, plan_layout, shard_entry, shard_name
from avcurate.writers.tables import index_batch, merge_index, read_table, write_index_parts, write_table
from runs import DEMO_CONFIG, assert_same_outputs, curate_demo
from test_writers import synthetic, with_staged

PER_BUCKET = 3  # kept clips per bucket in the pipeline runs: the demo set's clips span several buckets


def test_buckets_are_key_ranges_in_key_order() -> None:
    rng = random.Random(0)
    keys = sorted(f"{rng.getrandbits(64):016x}-{rng.randrange(10**5):05d}" for _ in range(5000))
    odd = ["", "-", "0", "ffffffff", "ffffffffz", "A", "Z_1", "g", "zz"]  # not hex: still one bucket each, in order
    for buckets in (1, 2, 3, 7, 300):
        assigned = [key_bucket(k, buckets) for k in keys]
        assert assigned == [int(k[:8], 16) * buckets >> 32 for k in keys]
        assert set(assigned) == set(range(buckets))
        in_order = [key_bucket(k, buckets) for k in sorted(keys + odd)]
        assert in_order == sorted(in_order) and set(in_order) <= set(range(buckets))
        for key in keys + odd:
            first, end = bucket_range(key_bucket(key, buckets), buckets)
            assert first <= key and (end is None or key < end)
    assert [bucket_count(n, 3) for n in (0, 1, 3, 4, 9)] == [1, 1, 1, 2, 3]


def entries(n: int) -> list:
    return [shard_entry(c, "clips") for c in with_staged(synthetic(n, mp4_bytes=20000))]


def test_one_bucket_plans_what_plan_layout_plans() -> None:
    planned = plan_layout(entries(40), prefix="clips", max_clips=3, max_bytes=51200, start=5)
    layout = BucketedLayout.numbered([(0, planned)], 1, "clips", 5)
    assert layout.buckets == (planned,)
    for clip in with_staged(synthetic(40, mp4_bytes=20000)):
        (bucket, index), placed = layout.place(clip)
        assert (bucket, (index, placed)) == (0, planned.place(clip))


def test_buckets_number_their_shards_on_from_each_other() -> None:
    clips = with_staged(synthetic(60, mp4_bytes=20000))
    buckets = 4
    by_bucket: dict[int, list] = {}
    for clip in clips:
        by_bucket.setdefault(key_bucket(clip.key, buckets), []).append(shard_entry(clip, "clips"))
    del by_bucket[2]  # a bucket without clips
    planned = [(b, plan_layout(e, prefix="clips", max_clips=3, max_bytes=51200, start=7)) for b, e in by_bucket.items()]
    layout = BucketedLayout.numbered(reversed(planned), buckets, "clips", 7)

    starts = [bucket.start for bucket in layout.buckets]
    counts = [len(bucket.n_clips) for bucket in layout.buckets]
    assert counts[2] == 0 and starts == [7 + sum(counts[:b]) for b in range(buckets)]
    names = set()
    for clip in clips:
        if key_bucket(clip.key, buckets) == 2:
            continue
        where, placed = layout.place(clip)
        assert where[0] == key_bucket(clip.key, buckets)
        names.add(placed.shard)
    assert sorted(names) == [shard_name("clips", 7 + i) for i in range(sum(counts))]
    with pytest.raises(ValueError, match="names of another length"):  # numbers past 999999 grow the json
        BucketedLayout.numbered(planned, buckets, "clips", 999_990)


def test_index_parts_stream_into_one_index(tmp_path: Path) -> None:
    clips = [dataclasses.replace(c, shard="clips-000000.tar") if c.status == KEPT else c for c in synthetic(30)]
    batches = [index_batch(clips[i : i + 7]) for i in range(0, len(clips), 7)]
    write_table(merge_index(batches), str(tmp_path / "whole.parquet"))
    write_table(merge_index(batches), str(tmp_path / "part.parquet"))
    write_index_parts([str(tmp_path / "part.parquet")], str(tmp_path / "streamed.parquet"))
    assert sha(tmp_path / "streamed.parquet") == sha(tmp_path / "whole.parquet")  # one part: the same bytes

    write_table(merge_index([]), str(tmp_path / "empty.parquet"))
    write_index_parts([], str(tmp_path / "none.parquet"))
    assert sha(tmp_path / "none.parquet") == sha(tmp_path / "empty.parquet")

    whole = read_table(str(tmp_path / "whole.parquet"))
    keys = whole.column("key").to_pylist()
    for bucket in range(3):
        part = read_table(str(tmp_path / "whole.parquet"), keys=bucket_range(bucket, 3))
        write_table(merge_index([part]), str(tmp_path / f"{bucket}"))
    write_index_parts([str(tmp_path / f"{b}") for b in range(3)], str(tmp_path / "parts.parquet"))
    assert read_table(str(tmp_path / "parts.parquet")).equals(whole) and len(set(keys)) == len(keys)


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def bucketed_config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    config = yaml.safe_load(DEMO_CONFIG.read_text(encoding="utf-8"))
    config["output"]["plan_bucket_clips"] = PER_BUCKET
    path = tmp_path_factory.mktemp("config") / "buckets.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


@pytest.mark.slow
def test_a_run_planned_in_many_buckets(sample_set: SampleSet, bucketed_config: Path, tmp_path: Path) -> None:
    output = tmp_path / "out"
    curate_demo(sample_set.folder, output, "--config", str(bucketed_config))
    index = pq.read_table(output / "index.parquet")
    schemas.validate_index(index)
    schemas.validate_ledger(pq.read_table(output / "ledger.parquet"))
    keys = index.column("key").to_pylist()
    assert keys == sorted(set(keys))
    assert pq.ParquetFile(output / "index.parquet").metadata.num_row_groups > 1  # streamed from several parts

    kept = sorted(k for k, status in zip(keys, index.column("status").to_pylist()) if status == KEPT)
    buckets = bucket_count(len(kept), PER_BUCKET)
    assert len({key_bucket(k, buckets) for k in kept}) > 2
    shards = sorted((output / "shards").glob("*.tar"))
    assert [p.name for p in shards] == [shard_name("clips", i) for i in range(len(shards))]
    in_shards = []
    for path in shards:
        with tarfile.open(path) as tar:
            shard_keys = sorted({name.split(".")[0] for name in tar.getnames()})
        assert len({key_bucket(k, buckets) for k in shard_keys}) == 1  # no shard crosses a bucket
        in_shards += shard_keys
    assert sorted(in_shards) == kept  # every kept clip in exactly one shard
    shard_of = dict(zip(keys, index.column("shard").to_pylist()))
    assert all(shard_of[k] is not None for k in kept)

    again = tmp_path / "again"
    curate_demo(sample_set.folder, again, "--config", str(bucketed_config))
    assert_same_outputs(output, again)


@pytest.mark.slow
def test_an_incremental_run_adds_its_rows_to_each_bucket(
    sample_set: SampleSet, bucketed_config: Path, tmp_path: Path
) -> None:
    names = sorted(p.name for p in sample_set.folder.iterdir())
    halves = [tmp_path / "first", tmp_path / "rest"]
    for half, part in zip(halves, (names[: len(names) // 2], names[len(names) // 2 :])):
        half.mkdir()
        for name in part:
            (half / name).symlink_to(sample_set.folder / name)  # links: the set has a named pipe
    output = tmp_path / "out"
    curate_demo(halves[0], output, "--config", str(bucketed_config))
    base = pq.read_table(output / "index.parquet")
    curate_demo(halves[0], output, "--config", str(bucketed_config), "--incremental", "--input", str(halves[1]))

    index = pq.read_table(output / "index.parquet")
    schemas.validate_index(index)
    keys = index.column("key").to_pylist()
    assert keys == sorted(set(keys)) and set(base.column("key").to_pylist()) < set(keys)
    assert index.filter(pc.is_in(index.column("key"), base.column("key"))).equals(base)  # the base's rows, unchanged
    shards = sorted(p.name for p in (output / "shards").glob("*.tar"))
    assert shards == [shard_name("clips", i) for i in range(len(shards))]
