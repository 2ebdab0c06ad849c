"""Reading parts of an index (or a ledger): some columns, or some rows. An index has a row per clip, millions in
a large run."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ..fsutil import filesystems


def read_columns(path: str, columns: Sequence[str], dictionary: Sequence[str] = ()) -> pa.Table:
    """Those of `columns` the file has (an older one lacks some), those in `dictionary` dictionary-encoded."""
    with filesystems().open(path) as f:
        parquet = pq.ParquetFile(f, read_dictionary=list(dictionary))
        names = parquet.schema_arrow.names
        return parquet.read(columns=[c for c in dict.fromkeys(columns) if c in names])


def read_rows(path: str, rows: Sequence[int], columns: Sequence[str]) -> pa.Table:
    """Those `rows` (ascending) of the index, with `columns`: only the row groups holding them are read."""
    with filesystems().open(path) as f:
        parquet = pq.ParquetFile(f)
        sizes = [parquet.metadata.row_group(i).num_rows for i in range(parquet.metadata.num_row_groups)]
        starts = np.cumsum([0, *sizes])
        wanted = np.asarray(rows, dtype=np.int64)
        groups = np.searchsorted(starts, wanted, side="right") - 1
        parts = []
        for group in np.unique(groups).tolist():
            table = parquet.read_row_group(group, columns=list(columns))
            parts.append(table.take(pa.array(wanted[groups == group] - starts[group], pa.int64())))
    if not parts:
        return parquet.schema_arrow.empty_table().select(list(columns))
    return pa.concat_tables(parts)
