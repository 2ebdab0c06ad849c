"""Output writers: WebDataset tar shards, and the Parquet index and ledger."""

from avcurate.writers.shards import (
    ShardEntry,
    ShardInfo,
    ShardLayout,
    ShardPlan,
    plan_layout,
    plan_shards,
    shard_entry,
    with_shards,
    write_shard,
)
from avcurate.writers.tables import (
    index_batch,
    index_row,
    index_table,
    ledger_batch,
    ledger_row,
    ledger_table,
    merge_index,
    merge_ledger,
    write_table,
)

__all__ = [
    "ShardEntry",
    "ShardInfo",
    "ShardLayout",
    "ShardPlan",
    "index_batch",
    "index_row",
    "index_table",
    "ledger_batch",
    "ledger_row",
    "ledger_table",
    "merge_index",
    "merge_ledger",
    "plan_layout",
    "plan_shards",
    "shard_entry",
    "with_shards",
    "write_shard",
    "write_table",
]
