"""The Parquet index (one row per clip, kept or rejected) and ledger (one row per input), reproducibly written.

Schemas follow the model: a new ClipScores or ProbeInfo field becomes a column, and the committed
schemas/*.json (checked by a test) make such a change visible. Bump the version on any breaking change.
The index also gets a `{role}_embedding` column per retrieval embedding the run made: its size D comes from the
data, so those columns are optional and documented apart (`embedding_field`).
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from collections.abc import Collection
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems

from avcurate.filters import reason_name
from avcurate.model import KEPT, REJECTED, Clip, ClipScores, ProbeInfo, SourceResult
from avcurate.writers.embeddings import RETRIEVAL_ROLES, vector_dim
from avcurate.writers.shards import atomic_create

INDEX_SCHEMA_VERSION = 5
LEDGER_SCHEMA_VERSION = 3
VERSION_KEY = "avcurate.schema_version"

_ARROW_TYPES: dict[type, pa.DataType] = {str: pa.string(), float: pa.float64(), int: pa.int64(), bool: pa.bool_()}

# Fixed writer options: with no timestamps in Parquet, equal tables give byte-identical files.
_PARQUET_OPTIONS: dict[str, Any] = {
    "version": "2.6",
    "compression": "zstd",
    "compression_level": 3,
    "use_dictionary": True,
    "write_statistics": True,
    "data_page_version": "1.0",
    "row_group_size": 1 << 20,
    "store_schema": True,  # so the Arrow schema reads back exactly as written
}


def _arrow_type(annotation: Any) -> pa.DataType:
    """The Arrow type of a plain model field annotation such as `int` or `float | None`."""
    if isinstance(annotation, types.UnionType):
        (inner,) = [a for a in typing.get_args(annotation) if a is not type(None)]
        return _ARROW_TYPES[inner]
    return _ARROW_TYPES[annotation]


def _model_fields(cls: type, prefix: str = "") -> list[pa.Field]:
    """One nullable column per dataclass field; nullable because a missing score or probe is a null."""
    hints = typing.get_type_hints(cls)
    return [pa.field(prefix + f.name, _arrow_type(hints[f.name])) for f in dataclasses.fields(cls)]


PROBE_FIELDS = [f.name for f in dataclasses.fields(ProbeInfo)]


def _list_of(item: pa.DataType) -> pa.DataType:
    # "element" is the item name Parquet writes, so the schema reads back unchanged.
    return pa.list_(pa.field("element", item, nullable=False))


_SPAN = [pa.field("start_s", pa.float64(), nullable=False), pa.field("end_s", pa.float64(), nullable=False)]
# Speaker columns (schema v5): null when speakers were not run, so "no speech found" ([]) differs from "not asked".
SPEAKER_FIELDS = [
    pa.field("speech", _list_of(pa.struct(_SPAN))),
    pa.field("turns", _list_of(pa.struct([*_SPAN, pa.field("speaker", pa.string(), nullable=False)]))),
    pa.field("face_tracks", _list_of(pa.struct([
        pa.field("track", pa.int64(), nullable=False),
        pa.field("times_s", _list_of(pa.float64()), nullable=False),
        pa.field("boxes", _list_of(_list_of(pa.float64())), nullable=False),  # [x0, y0, x1, y1] at each time
    ]))),  # fmt: skip
    pa.field("speaker_on_screen", _list_of(pa.struct([
        *_SPAN, pa.field("speaker", pa.string()), pa.field("track", pa.int64()), pa.field("score", pa.float64()),
    ]))),  # fmt: skip
]

INDEX_SCHEMA = pa.schema(
    [
        pa.field("key", pa.string(), nullable=False),
        pa.field("source_id", pa.string(), nullable=False),
        pa.field("source_uri", pa.string(), nullable=False),
        pa.field("clip_index", pa.int64(), nullable=False),
        pa.field("start_s", pa.float64(), nullable=False),
        pa.field("end_s", pa.float64(), nullable=False),
        pa.field("duration_s", pa.float64(), nullable=False),
        pa.field("end_reason", pa.string(), nullable=False),
        pa.field("cut_score", pa.float64()),  # the shot detector's score at the cut that closed the clip
        pa.field("n_frames", pa.int64(), nullable=False),
        pa.field("fps", pa.float64(), nullable=False),
        pa.field("width", pa.int64(), nullable=False),
        pa.field("height", pa.int64(), nullable=False),
        pa.field("source_width", pa.int64(), nullable=False),  # the source's display size, before scaling
        pa.field("source_height", pa.int64(), nullable=False),
        pa.field("sample_rate", pa.int64(), nullable=False),
        pa.field("channels", pa.int64(), nullable=False),
        *_model_fields(ClipScores),
        pa.field("sync_correction_ms", pa.float64(), nullable=False),
        pa.field("status", pa.string(), nullable=False),
        # "element" is the item name Parquet writes, so the schema reads back unchanged.
        pa.field("reasons", pa.list_(pa.field("element", pa.string(), nullable=False)), nullable=False),
        pa.field("shard", pa.string()),  # set for kept clips only
        pa.field("source_meta", pa.string(), nullable=False),  # canonical JSON of the manifest's extra columns
        # Canonical JSON of rule name -> probability. Not a Parquet map: pyarrow reads a map back with its
        # entries renamed after the column, so the type would not match the committed schema.
        pa.field("zero_shot", pa.string(), nullable=False),
        pa.field("duplicate_of", pa.string()),  # key of the kept clip this one near-duplicates
        pa.field("models", pa.string(), nullable=False),  # canonical JSON of the model cards by role, "{}" if none
        *SPEAKER_FIELDS,
        pa.field("config_hash", pa.string(), nullable=False),
        pa.field("schema_version", pa.int64(), nullable=False),
    ],
    metadata={VERSION_KEY: str(INDEX_SCHEMA_VERSION)},
)

LEDGER_SCHEMA = pa.schema(
    [
        pa.field("source_id", pa.string(), nullable=False),
        pa.field("uri", pa.string(), nullable=False),
        pa.field("status", pa.string(), nullable=False),  # kept / rejected / failed / excluded
        pa.field("n_clips", pa.int64(), nullable=False),
        pa.field("n_kept", pa.int64(), nullable=False),
        pa.field("n_rejected", pa.int64(), nullable=False),
        pa.field("error", pa.string()),
        pa.field("error_type", pa.string()),
        pa.field("excluded_by", pa.string()),  # v3: the block list that excluded it (`error` says which entry)
        pa.field("note", pa.string()),
        # The rules that rejected any of its clips, by name ("source_short_side"): the index has each clip's text.
        pa.field("reasons", pa.list_(pa.field("element", pa.string(), nullable=False)), nullable=False),
        pa.field("sync_correction_ms", pa.float64(), nullable=False),
        *_model_fields(ProbeInfo, prefix="probe_"),  # all null when probing failed
    ],
    metadata={VERSION_KEY: str(LEDGER_SCHEMA_VERSION)},
)


def embedding_column(role: str) -> str:
    return f"{role}_embedding"


def embedding_field(role: str, dim: int) -> pa.Field:
    """The optional index column of a retrieval embedding: float32 [dim] per clip.

    Not null: a clip without that embedding (rejected before inference) has a row of `dim` null floats (NaN in
    NumPy and pandas). A null row would be the natural choice, but pyarrow cannot read a null fixed-size list
    back from Parquet (apache/arrow#35692), so the whole index would become unreadable.
    """
    return pa.field(embedding_column(role), _embedding_type(dim), nullable=False)


def _embedding_type(dim: int) -> pa.DataType:
    # "element" is the item name Parquet writes, so the type reads back unchanged.
    return pa.list_(pa.field("element", pa.float32()), dim)


def index_schema(dims: dict[str, int]) -> pa.Schema:
    """INDEX_SCHEMA plus an embedding column per role in `dims` (role -> D), in RETRIEVAL_ROLES order."""
    schema = INDEX_SCHEMA
    for role in RETRIEVAL_ROLES:
        if role in dims:
            schema = schema.append(embedding_field(role, dims[role]))
    return schema


def index_row(clip: Clip) -> dict[str, Any]:
    """The clip's index row, without its embedding columns (`index_batch` adds those column-wise)."""
    _check_shard(clip)
    return {
        "key": clip.key,
        "source_id": clip.source_id,
        "source_uri": clip.source_uri,
        "clip_index": clip.clip_index,
        "start_s": clip.start_s,
        "end_s": clip.end_s,
        "duration_s": clip.duration_s,
        "end_reason": clip.end_reason,
        "cut_score": clip.cut_score,
        "n_frames": clip.n_frames,
        "fps": clip.fps,
        "width": clip.width,
        "height": clip.height,
        "source_width": clip.source_width,
        "source_height": clip.source_height,
        "sample_rate": clip.sample_rate,
        "channels": clip.channels,
        **clip.scores.to_dict(),
        "sync_correction_ms": clip.sync_correction_ms,
        "status": clip.status,
        "reasons": list(clip.reasons),
        "shard": clip.shard,
        "source_meta": canonical_json(clip.source_meta),
        "zero_shot": canonical_json(clip.zero_shot),
        "duplicate_of": clip.duplicate_of,
        "models": canonical_json(clip.models),
        "speech": clip.speech,
        "turns": clip.turns,
        "face_tracks": clip.face_tracks,
        "speaker_on_screen": clip.speaker_on_screen,
        "config_hash": clip.config_hash,
        "schema_version": INDEX_SCHEMA_VERSION,
    }


def _check_shard(clip: Clip) -> None:
    if (clip.status == KEPT) != (clip.shard is not None):
        raise ValueError(
            f"clip {clip.key} is {clip.status} with shard {clip.shard!r}: kept clips need their shard, others none;"
            " name it with ShardLayout.place(clip), or index the clips with_shards(clips, plans) returns"
        )


def ledger_row(result: SourceResult) -> dict[str, Any]:
    probe = result.probe.to_dict() if result.probe is not None else {}
    return {
        "source_id": result.source.source_id,
        "uri": result.source.uri,
        "status": result.status,
        "n_clips": len(result.clips),
        "n_kept": sum(c.status == KEPT for c in result.clips),
        "n_rejected": sum(c.status == REJECTED for c in result.clips),
        "error": result.error,
        "error_type": result.error_type,
        "excluded_by": result.excluded_by,
        "note": result.note,
        "reasons": sorted({reason_name(r) for c in result.clips if c.status == REJECTED for r in c.reasons}),
        "sync_correction_ms": result.sync_correction_ms,
        **{f"probe_{name}": probe.get(name) for name in PROBE_FIELDS},
    }


def index_table(clips: list[Clip]) -> pa.Table:
    """One row per clip, kept or rejected, sorted by key."""
    return merge_index([index_batch(clips)])


def index_batch(clips: list[Clip]) -> pa.Table:
    """Index rows of some of the clips, in any order: Beam builds these in parallel, columnar (a few hundred
    bytes a row, where a row dict takes several KB), for `merge_index` to put together on one worker.
    Has an embedding column for each retrieval role some of these clips carry."""
    table = _table([index_row(c) for c in clips], INDEX_SCHEMA)
    for role in RETRIEVAL_ROLES:
        vectors = [c.embeddings.get(role) for c in clips]
        present = [v for v in vectors if v is not None]
        if present:
            dim = vector_dim(role, present)
            table = table.append_column(embedding_field(role, dim), _embedding_array(vectors, dim))
    return table


def merge_index(batches: list[pa.Table], dims: dict[str, int] | None = None) -> pa.Table:
    """The batches as one index: a batch without an embedding column others have (or `dims` names) gets it with
    empty rows."""
    dims = _embedding_dims([batch.schema for batch in batches]) if dims is None else dims
    schema = index_schema(dims)
    return _merge([_with_embedding_columns(batch, dims).select(schema.names) for batch in batches], schema, ["key"])


def _embedding_dims(schemas: list[pa.Schema]) -> dict[str, int]:
    """role -> D of the embedding columns in any batch; one model per role, so D must agree."""
    dims: dict[str, int] = {}
    for schema in schemas:
        for role in RETRIEVAL_ROLES:
            name = embedding_column(role)
            if name in schema.names:
                dim = schema.field(name).type.list_size
                if dims.setdefault(role, dim) != dim:
                    raise ValueError(f"index batches disagree on the size of {name}: {dims[role]} and {dim}")
    return dims


def _with_embedding_columns(batch: pa.Table, dims: dict[str, int]) -> pa.Table:
    for role, dim in dims.items():
        if embedding_column(role) not in batch.column_names:
            batch = batch.append_column(embedding_field(role, dim), _embedding_array([None] * batch.num_rows, dim))
    return batch


def _embedding_array(vectors: list[np.ndarray | None], dim: int) -> pa.FixedSizeListArray:
    """float32 [dim] per row; a missing vector is `dim` null floats (see `embedding_field`)."""
    values = np.zeros((len(vectors), dim), dtype=np.float32)
    missing = np.array([v is None for v in vectors], dtype=bool)
    for row, vector in enumerate(vectors):
        if vector is not None:
            values[row] = vector
    flat = pa.array(values.ravel(), mask=np.repeat(missing, dim))
    return pa.FixedSizeListArray.from_arrays(flat, type=_embedding_type(dim))


def ledger_table(results: list[SourceResult]) -> pa.Table:
    """One row per input, sorted by URI then source id."""
    return merge_ledger([ledger_batch(results)])


def ledger_batch(results: list[SourceResult]) -> pa.Table:
    """Ledger rows of some of the inputs, in any order (see `index_batch`)."""
    return _table([ledger_row(r) for r in results], LEDGER_SCHEMA)


def merge_ledger(batches: list[pa.Table]) -> pa.Table:
    return _merge(batches, LEDGER_SCHEMA, ["uri", "source_id"])


def upgraded_ledger(table: pa.Table) -> pa.Table:
    """An earlier run's ledger with this version's columns: those v3 added (`excluded_by`) are null, so an
    incremental run adds to a v2 ledger."""
    for i, field in enumerate(LEDGER_SCHEMA):
        if field.name not in table.column_names and field.nullable:
            table = table.add_column(i, field, pa.nulls(table.num_rows, field.type))
    return table


def write_table(table: pa.Table, path: str) -> None:
    """Write Parquet through FileSystems, atomically (temp name, then rename) and byte-reproducibly."""
    with atomic_create(path, "application/vnd.apache.parquet") as out:
        pq.write_table(table, out, **_PARQUET_OPTIONS)


def write_index_parts(parts: list[str], path: str) -> None:
    """One index file from parts (index files), each of a key range, given in key order; one part in memory at
    a time. From one part, the same bytes as `write_table` of its rows (what a one-part run wrote before parts).

    Each part's row groups end where it ends, so several parts give other bytes than one file of all rows would:
    reproducible still, as the parts are.
    """
    schemas = []
    for part in parts:
        with FileSystems.open(part) as f:
            schemas.append(pq.read_schema(f))
    dims = _embedding_dims(schemas)
    tables = (merge_index([read_table(part)], dims) for part in parts) if parts else iter([merge_index([])])
    options = {k: v for k, v in _PARQUET_OPTIONS.items() if k != "row_group_size"}
    with atomic_create(path, "application/vnd.apache.parquet") as out:
        # What pq.write_table does with one table, here with each part in turn.
        with pq.ParquetWriter(out, index_schema(dims), **options) as writer:
            for table in tables:
                writer.write_table(table, row_group_size=_PARQUET_OPTIONS["row_group_size"])


def count_rows(path: str) -> int:
    """How many rows a Parquet file has, from its footer."""
    with FileSystems.open(path) as f:
        return pq.ParquetFile(f).metadata.num_rows


def read_table(
    path: str, columns: list[str] | None = None, keys: tuple[str, str | None] | None = None
) -> pa.Table:
    """A table this module wrote (an earlier run's index or ledger), through FileSystems; with `keys` (first,
    end), only the index rows with first <= key < end (end None: no end), read from the row groups whose
    statistics allow such keys."""
    filters = None
    if keys is not None:
        first, end = keys
        filters = [("key", ">=", first)] + ([("key", "<", end)] if end is not None else [])
    with FileSystems.open(path) as f:
        return pq.read_table(f, columns=columns, filters=filters).replace_schema_metadata(None)


def without_sources(table: pa.Table, source_ids: Collection[str]) -> pa.Table:
    """An index's or ledger's rows but those of `source_ids` (sources excluded since they were curated)."""
    if not source_ids:
        return table
    listed = pc.is_in(table.column("source_id"), value_set=pa.array(sorted(source_ids), pa.string()))
    return table.filter(pc.invert(listed))


def kept_clips_of(index: str, source_ids: Collection[str]) -> list[tuple[str, str]]:
    """(shard, key) of every kept clip of `source_ids` in an index file: what a takedown removes from shards.
    Reads four short columns, filtered row group by row group, not the whole index."""
    if not source_ids:
        return []
    wanted = [("source_id", "in", sorted(source_ids)), ("status", "=", KEPT)]
    with FileSystems.open(index) as f:
        table = pq.read_table(f, columns=["shard", "key"], filters=wanted)
    return list(zip(table.column("shard").to_pylist(), table.column("key").to_pylist()))


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def _merge(batches: list[pa.Table], schema: pa.Schema, keys: list[str]) -> pa.Table:
    """The batches as one table in a canonical order, so the file does not depend on how rows were batched."""
    table = pa.concat_tables(batches) if batches else schema.empty_table()
    # The schema's own metadata (its version), whichever batch came first (one read back from a file has none).
    table = table.replace_schema_metadata(schema.metadata)
    return table.sort_by([(key, "ascending") for key in keys]).combine_chunks()


def _table(rows: list[dict[str, Any]], schema: pa.Schema) -> pa.Table:
    table = pa.Table.from_pylist(rows, schema=schema)
    # Arrow does not enforce non-null flags when building; catch a model bug here, not in a reader.
    for field in schema:
        if not field.nullable and table.column(field.name).null_count:
            raise ValueError(f"column {field.name!r} must not be null")
    return table
