"""Where the kept data came from: the manifest columns each clip carries in `source_meta` (license, uploader,
origin URL, ...), as kept clips and kept time per value: the commonest values, then the rest as "other".

Computed per distinct `source_meta` (one per source at most), not per clip: the column is read dictionary-encoded
and numpy sums the clips per distinct value first.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..model import KEPT, REJECTED

TOP_VALUES = 8
# A column with more distinct values than this, and than half its sources, is an id or a title: not summarised.
MAX_DISTINCT = 50
NONE = "(none)"
OTHER = "other"
_URL = re.compile(r"^[a-z][a-z0-9+.-]*://", re.IGNORECASE)
# What provenance reads of the index, source_meta and source_id dictionary-encoded (few distinct values).
INDEX_COLUMNS = ("source_meta", "source_id", "status", "duration_s")
DICTIONARY_COLUMNS = ("source_meta", "source_id")


@dataclass
class ValueShare:
    value: str
    sources: int = 0
    kept_clips: int = 0
    kept_s: float = 0.0
    rejected_clips: int = 0

    def add(self, other: ValueShare) -> None:
        self.sources += other.sources
        self.kept_clips += other.kept_clips
        self.kept_s += other.kept_s
        self.rejected_clips += other.rejected_clips


@dataclass(frozen=True)
class MetaColumn:
    name: str
    by_domain: bool  # its values are URLs, shown by domain
    distinct: int
    values: list[ValueShare]  # the top ones by kept time, then "other"


@dataclass(frozen=True)
class Provenance:
    columns: list[MetaColumn]
    not_summarised: list[str]  # columns with a value per source, or nearly


def provenance(index: pa.Table) -> Provenance:
    """From the index's `INDEX_COLUMNS` (source_meta and source_id plain or dictionary-encoded)."""
    by_column: dict[str, dict[str, ValueShare]] = {}
    urls: set[str] = set()
    per_meta = _per_meta(index)
    metas = [json.loads(text) for text, _ in per_meta]
    names = sorted({name for meta in metas for name in meta})
    for meta, (_, counts) in zip(metas, per_meta):
        for name in names:
            label, is_url = _label(name, meta.get(name))
            if is_url:
                urls.add(name)
            share = by_column.setdefault(name, {}).setdefault(label, ValueShare(label))
            share.add(counts)
    columns, skipped = [], []
    for name in names:
        values = by_column[name]
        sources = sum(v.sources for v in values.values())
        if len(values) > MAX_DISTINCT and len(values) > sources / 2:
            skipped.append(name)
            continue
        columns.append(MetaColumn(name, name in urls, len(values), _top(list(values.values()))))
    return Provenance(columns, skipped)


def _per_meta(index: pa.Table) -> list[tuple[str, ValueShare]]:
    """Per distinct source_meta text, in text order: its sources, kept clips, kept seconds and rejected clips."""
    if index.num_rows == 0:
        return []
    texts, meta = _codes(index["source_meta"], "{}")
    _, source = _codes(index["source_id"], "")
    kept = pc.equal(index["status"], KEPT).to_numpy(zero_copy_only=False)
    rejected = pc.equal(index["status"], REJECTED).to_numpy(zero_copy_only=False)
    seconds = pc.fill_null(pc.cast(index["duration_s"], pa.float64()), 0.0).to_numpy(zero_copy_only=False)
    n = len(texts)
    kept_clips = np.bincount(meta, weights=kept, minlength=n)
    kept_s = np.bincount(meta, weights=np.where(kept, seconds, 0.0), minlength=n)
    rejected_clips = np.bincount(meta, weights=rejected, minlength=n)
    pairs = np.unique(meta.astype(np.int64) * (int(source.max()) + 1) + source)
    sources = np.bincount(pairs // (int(source.max()) + 1), minlength=n)
    return [
        (text, ValueShare("", int(sources[i]), int(kept_clips[i]), float(kept_s[i]), int(rejected_clips[i])))
        for i, text in enumerate(texts) if sources[i]
    ]  # fmt: skip


def _codes(column: pa.ChunkedArray, null: str) -> tuple[list[str], np.ndarray]:
    """The distinct texts of a column (nulls as `null`) in sorted order, and each row's number among them."""
    encoded = (column if pa.types.is_dictionary(column.type) else pc.dictionary_encode(column)).combine_chunks()
    entries = [null if text is None else text for text in encoded.dictionary.to_pylist()]
    texts = sorted(set(entries) | ({null} if encoded.null_count else set()))
    number = {text: i for i, text in enumerate(texts)}
    remap = np.array([number[text] for text in entries] + [number.get(null, 0)], dtype=np.int64)
    return texts, remap[encoded.indices.fill_null(len(entries)).to_numpy(zero_copy_only=False)]


def _label(name: str, value: Any) -> tuple[str, bool]:
    """How a value is shown and counted, and whether it is a URL (counted by its domain)."""
    if value is None:
        return NONE, False
    if isinstance(value, str):
        if _URL.match(value) or ("url" in name.lower() and "." in value):
            try:
                host = urlsplit(value if _URL.match(value) else f"//{value}").hostname or value
            except ValueError:  # not a URL after all ("http://[x"): counted as it is
                return value.strip() or NONE, False
            return host.removeprefix("www."), True
        return value.strip() or NONE, False
    return json.dumps(value, sort_keys=True, ensure_ascii=False), False


def _top(values: list[ValueShare]) -> list[ValueShare]:
    ranked = sorted(values, key=lambda v: (-v.kept_s, -v.kept_clips, -v.sources, v.value))
    if len(ranked) <= TOP_VALUES + 1:  # "other" standing for one value would hide its name for nothing
        return ranked
    other = ValueShare(OTHER)
    for share in ranked[TOP_VALUES:]:
        other.add(share)
    return [*ranked[:TOP_VALUES], other]
