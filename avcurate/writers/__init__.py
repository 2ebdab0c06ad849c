"""Output writers: WebDataset tar shards, and the Parquet index and ledger."""

from avcurate.writers.shards import ShardInfo, ShardPlan, plan_shards, with_shards, write_shard
from avcurate.writers.tables import index_table, ledger_table, write_table

__all__ = [
    "ShardInfo",
    "ShardPlan",
    "index_table",
    "ledger_table",
    "plan_shards",
    "with_shards",
    "write_shard",
    "write_table",
]
