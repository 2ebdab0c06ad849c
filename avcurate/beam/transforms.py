"""The Beam layer: thin PTransforms around the plain-Python stages, plus the pipeline's metrics."""

from __future__ import annotations

from typing import Any, Iterable, Iterator

import apache_beam as beam
from apache_beam.metrics import Metrics

from ..config import Config
from ..filters import reason_name
from ..fsutil import delete_tree
from ..model import FAILED, KEPT, Clip, Source, SourceResult
from ..process import curate_source
from ..sandbox import Sandbox
from ..writers.shards import ShardInfo, ShardPlan, plan_shards, with_shards, write_shard
from ..writers.tables import index_table, ledger_table, write_table

NAMESPACE = "avcurate"


class _CurateSourceFn(beam.DoFn):
    """Decode, cut, score, filter and stage one source. One sandboxed decoder process per worker."""

    def __init__(self, cfg: Config, staging_dir: str) -> None:
        self.cfg, self.staging_dir = cfg, staging_dir
        self.inputs = Metrics.counter(NAMESPACE, "inputs")
        self.failed = Metrics.counter(NAMESPACE, "inputs_failed")
        self.kept = Metrics.counter(NAMESPACE, "clips_kept")
        self.rejected = Metrics.counter(NAMESPACE, "clips_rejected")
        self.media_seconds = Metrics.counter(NAMESPACE, "media_ms")

    def setup(self) -> None:
        self.sandbox = Sandbox(self.cfg.decode.memory_limit_mb)

    def process(self, source: Source) -> Iterator[SourceResult]:
        result = curate_source(source, self.cfg, self.staging_dir, self.sandbox)
        self.inputs.inc()
        if result.status == FAILED:
            self.failed.inc()
            Metrics.counter(NAMESPACE, f"failed_{result.error_type}").inc()
        if result.probe is not None:
            self.media_seconds.inc(int(result.probe.duration_s * 1000))
        for clip in result.clips:
            if clip.status == KEPT:
                self.kept.inc()
            else:
                self.rejected.inc()
                for reason in clip.reasons:
                    Metrics.counter(NAMESPACE, f"rejected_{reason_name(reason)}").inc()
        yield result

    def teardown(self) -> None:
        self.sandbox.close()


class CurateSources(beam.PTransform):
    """PCollection[Source] -> PCollection[SourceResult]; kept clips are staged as MP4 under `staging_dir`."""

    def __init__(self, cfg: Config, staging_dir: str) -> None:
        super().__init__()
        self.cfg, self.staging_dir = cfg, staging_dir

    def expand(self, sources: Any) -> Any:
        # The reshuffle spreads sources over workers (a Create alone would keep them in one bundle).
        return sources | "Spread" >> beam.Reshuffle() | "Curate" >> beam.ParDo(_CurateSourceFn(self.cfg, self.staging_dir))


def _plan(results: list[SourceResult], cfg: Config) -> tuple[list[ShardPlan], list[Clip]]:
    clips = [clip for result in results for clip in result.clips]
    plans = plan_shards(
        clips,
        prefix=cfg.output.shard_prefix,
        max_clips=cfg.output.shard_max_clips,
        max_bytes=cfg.output.shard_max_bytes,
    )
    return plans, with_shards(clips, plans)


class WriteOutputs(beam.PTransform):
    """Shards (planned globally for determinism, written in parallel), the index and the ledger."""

    def __init__(self, cfg: Config, output_dir: str, staging_dir: str) -> None:
        super().__init__()
        self.cfg, self.output_dir, self.staging_dir = cfg, output_dir.rstrip("/"), staging_dir

    def expand(self, results: Any) -> Any:
        cfg, out = self.cfg, self.output_dir
        everything = results | "AllResults" >> beam.combiners.ToList()
        planned = everything | "PlanShards" >> beam.Map(_plan, cfg)
        shard_infos = (
            planned
            | "ShardPlans" >> beam.FlatMap(lambda planned_: planned_[0])
            | "SpreadShards" >> beam.Reshuffle()
            | "WriteShard" >> beam.Map(write_shard, f"{out}/shards")
            | "AllShards" >> beam.combiners.ToList()
        )
        index = planned | "WriteIndex" >> beam.Map(lambda p: write_table(index_table(p[1]), f"{out}/index.parquet"))
        ledger = everything | "WriteLedger" >> beam.Map(lambda r: write_table(ledger_table(r), f"{out}/ledger.parquet"))
        # Staged clips are removed only once every shard is written.
        return (
            shard_infos
            | "Cleanup"
            >> beam.Map(
                _cleanup,
                self.staging_dir,
                index_done=beam.pvalue.AsSingleton(index),
                ledger_done=beam.pvalue.AsSingleton(ledger),
            )
        )


def _cleanup(infos: Iterable[ShardInfo], staging_dir: str, index_done: Any, ledger_done: Any) -> list[ShardInfo]:
    delete_tree(staging_dir)
    return sorted(infos, key=lambda i: i.name)
