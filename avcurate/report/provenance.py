"""Where the kept data came from: the manifest columns each clip carries in `source_meta` (license, uploader,
origin URL, ...), as kept clips and kept time per value: the commonest values, then the rest as "other".

Computed per distinct `source_meta` (one per source at most), not per clip: Arrow sums the clips first.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import pyarrow as pa
import pyarrow.compute as pc

from ..model import KEPT, REJECTED

TOP_VALUES = 8
# A column with more distinct values than this, and than half its sources, is an id or a title: not summarised.
MAX_DISTINCT = 50
NONE = "(none)"
OTHER = "other"
_URL = re.compile(r"^[a-z][a-z0-9+.-]*://", re.IGNORECASE)


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
    per_meta = _per_meta(index)
    by_column: dict[str, dict[str, ValueShare]] = {}
    urls: set[str] = set()
    metas = [json.loads(text) for text in per_meta["source_meta"].to_pylist()]
    names = sorted({name for meta in metas for name in meta})
    for meta, counts in zip(metas, per_meta.drop_columns(["source_meta"]).to_pylist()):
        for name in names:
            label, is_url = _label(name, meta.get(name))
            if is_url:
                urls.add(name)
            share = by_column.setdefault(name, {}).setdefault(label, ValueShare(label))
            share.add(ValueShare(label, counts["sources"], counts["kept_clips"], counts["kept_s"], counts["rejected_clips"]))
    columns, skipped = [], []
    for name in names:
        values = by_column[name]
        sources = sum(v.sources for v in values.values())
        if len(values) > MAX_DISTINCT and len(values) > sources / 2:
            skipped.append(name)
            continue
        columns.append(MetaColumn(name, name in urls, len(values), _top(list(values.values()))))
    return Provenance(columns, skipped)


def _per_meta(index: pa.Table) -> pa.Table:
    """Per distinct source_meta: its sources, kept clips, kept seconds and rejected clips."""
    kept = pc.equal(index["status"], KEPT)
    table = pa.table({
        "source_meta": index["source_meta"],
        "source_id": index["source_id"],
        "kept_clips": pc.cast(kept, pa.int64()),
        "kept_s": pc.if_else(kept, index["duration_s"], 0.0),
        "rejected_clips": pc.cast(pc.equal(index["status"], REJECTED), pa.int64()),
    })  # fmt: skip
    grouped = table.group_by("source_meta").aggregate([
        ("source_id", "count_distinct"), ("kept_clips", "sum"), ("kept_s", "sum"), ("rejected_clips", "sum"),
    ])  # fmt: skip
    names = {"source_id_count_distinct": "sources", "kept_clips_sum": "kept_clips", "kept_s_sum": "kept_s",
             "rejected_clips_sum": "rejected_clips"}  # fmt: skip
    grouped = grouped.rename_columns([names.get(name, name) for name in grouped.column_names])
    return grouped.sort_by("source_meta")


def _label(name: str, value: Any) -> tuple[str, bool]:
    """How a value is shown and counted, and whether it is a URL (counted by its domain)."""
    if value is None:
        return NONE, False
    if isinstance(value, str):
        if _URL.match(value) or ("url" in name.lower() and "." in value):
            host = urlsplit(value if _URL.match(value) else f"//{value}").hostname or value
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
