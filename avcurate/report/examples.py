"""Which clips a report shows: a few kept ones and, for each rule that rejected clips, a few it rejected.

Deterministic and spread out, computed in Arrow and numpy (an index can have millions of rows): the index is in
key order, and a key starts with its source id, a hash of the source's URI, so clips evenly spaced in that order
come from sources spread at random. The first pass takes one clip per source (its first), so a handful of long
sources cannot fill every slot; only if there are too few sources do more clips of the same ones follow.
Choosing needs only each clip's source id, status and reasons; the chosen clips' other columns are then read
for those rows alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .indexfile import read_rows

from ..model import KEPT, REJECTED

KEPT_EXAMPLES = 6
REJECTED_PER_RULE = 3
_COLUMNS = ["key", "source_id", "source_uri", "clip_index", "start_s", "end_s", "n_frames", "fps", "sample_rate",
            "channels", "status", "reasons", "shard"]  # fmt: skip


@dataclass(frozen=True)
class Example:
    key: str
    source_uri: str
    clip_index: int  # its first frame on the source's timeline
    start_s: float
    end_s: float
    n_frames: int
    fps: float
    sample_rate: int
    channels: int
    status: str
    reasons: tuple[str, ...]
    shard: str | None

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Example:
        return cls(**{name: row[name] for name in _COLUMNS if name != "source_id"} | {"reasons": tuple(row["reasons"])})


@dataclass(frozen=True)
class Examples:
    kept: list[Example]
    rejected: dict[str, list[Example]]  # rule name -> clips it rejected, rules by name


def choose_examples(index: pa.Table, path: str | None = None) -> Examples:
    """From an index with (at least) source_id, status and reasons; the chosen rows' other columns come from
    `index` where it has them all, else from the index file at `path`."""
    sources = pc.dictionary_encode(index["source_id"]).combine_chunks().indices.to_numpy()
    kept = _pick(np.flatnonzero(pc.equal(index["status"], KEPT).to_numpy(zero_copy_only=False)), sources, KEPT_EXAMPLES)
    rejected = {
        rule: _pick(rows, sources, REJECTED_PER_RULE) for rule, rows in sorted(rejected_rows_by_rule(index).items())
    }
    rows = sorted({row for picked in [kept, *rejected.values()] for row in picked})
    if all(name in index.column_names for name in _COLUMNS):
        table = index.select(_COLUMNS).take(pa.array(rows, pa.int64()))
    else:
        assert path is not None, "an index without the examples' columns needs its file"
        table = read_rows(path, rows, _COLUMNS)
    by_row = dict(zip(rows, (Example.from_row(row) for row in table.to_pylist())))
    return Examples([by_row[row] for row in kept], {rule: [by_row[row] for row in picked] for rule, picked in rejected.items()})


def rejected_rows_by_rule(table: pa.Table) -> dict[str, np.ndarray]:
    """Rule name -> rows of the rejected clips that failed it (the name as `filters.reason_name` takes it)."""
    rows = np.flatnonzero(pc.equal(table["status"], REJECTED).to_numpy(zero_copy_only=False))
    reasons = table["reasons"].take(pa.array(rows, pa.int64()))
    flat = pc.list_flatten(reasons)
    if len(flat) == 0:
        return {}
    rules = pc.list_element(pc.split_pattern(flat, ":", max_splits=1), 0).to_numpy(zero_copy_only=False)
    parents = rows[pc.list_parent_indices(reasons).to_numpy()]
    return {str(rule): np.unique(parents[rules == rule]) for rule in np.unique(rules)}


def _pick(rows: np.ndarray, sources: np.ndarray, count: int) -> list[int]:
    """`count` of `rows` (ascending), evenly spaced: first among each source's first row, then among the rest."""
    _, first_of_source = np.unique(sources[rows], return_index=True)
    firsts = rows[np.sort(first_of_source)]
    picked = _spread(firsts, count)
    if len(picked) < count:
        picked += _spread(np.setdiff1d(rows, firsts), count - len(picked))
    return sorted(picked)


def _spread(rows: np.ndarray, count: int) -> list[int]:
    if len(rows) <= count:
        return rows.tolist()
    return rows[(2 * np.arange(count) + 1) * len(rows) // (2 * count)].tolist()
