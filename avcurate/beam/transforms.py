"""The Beam layer: thin PTransforms around the plain-Python stages, plus the pipeline's metrics."""

from __future__ import annotations

import argparse
import dataclasses
import queue
import shutil
import tempfile
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Iterable, Iterator

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.transforms.window import GlobalWindows
from apache_beam.options.pipeline_options import (
    AzureOptions,
    GoogleCloudOptions,
    HadoopFileSystemOptions,
    PipelineOptions,
    S3Options,
)

from ..config import Config
from ..filters import reason_name
from ..fsutil import delete_tree
from ..ingest import Listed, list_item, merge_metas, plan_input
from ..inputs import load_inputs
from ..learned import LearnedPlan
from ..model import FAILED, KEPT, Clip, Source, SourceResult
from ..process import curate_source
from ..sandbox import Sandbox
from ..writers.shards import ShardInfo, ShardLayout, plan_layout, shard_entry, write_shard
from ..writers.tables import index_batch, ledger_batch, merge_index, merge_ledger, write_table

NAMESPACE = "avcurate"
_ROWS_PER_BATCH = 2000


class _CurateSourceFn(beam.DoFn):
    """Decode, cut, score, filter and stage sources, each in a sandboxed decoder process.

    `parallel` sources at a time (the local runner's workers; 1 on other runners, which bring their own
    parallelism), each on a sandbox of its own: the threads only wait on their decoder processes. Results go out
    in input order from the DoFn's own thread, where Beam's metrics live.

    With learned models, each kept clip also goes out on its own (output `CLIPS`) with its model inputs, read
    one at a time from the folder the decoder left them in: a long source's inputs are never all in memory.
    """

    CLIPS = "clips"

    def __init__(
        self, cfg: Config, staging_dir: str, options: dict[str, Any], plan: LearnedPlan | None, parallel: int = 1
    ) -> None:
        self.cfg, self.staging_dir, self.options, self.plan, self.parallel = cfg, staging_dir, options, plan, parallel
        self.inputs = Metrics.counter(NAMESPACE, "inputs")
        self.failed = Metrics.counter(NAMESPACE, "inputs_failed")
        self.kept = Metrics.counter(NAMESPACE, "clips_kept")
        self.rejected = Metrics.counter(NAMESPACE, "clips_rejected")
        self.media_seconds = Metrics.counter(NAMESPACE, "media_ms")

    def setup(self) -> None:
        self.sandboxes: queue.SimpleQueue[Sandbox] = queue.SimpleQueue()
        self.all_sandboxes = [Sandbox(self.cfg.decode.memory_limit_mb, filesystem_options=self.options)
                              for _ in range(self.parallel)]  # fmt: skip
        for sandbox in self.all_sandboxes:
            self.sandboxes.put(sandbox)
        self.pool = ThreadPoolExecutor(self.parallel, thread_name_prefix="avcurate-source")

    def start_bundle(self) -> None:
        self.pending: deque[Future[tuple[SourceResult, str | None]]] = deque()

    def process(self, source: Source) -> Iterator[Any]:
        self.pending.append(self.pool.submit(self._curate, source))
        # At most two sources waiting per sandbox; finished ones leave in order as soon as they can.
        while self.pending and (len(self.pending) > 2 * self.parallel or self.pending[0].done()):
            yield from self._outputs(*self.pending.popleft().result())

    def finish_bundle(self) -> Iterator[Any]:
        while self.pending:
            for output in self._outputs(*self.pending.popleft().result()):
                if isinstance(output, beam.pvalue.TaggedOutput):
                    yield beam.pvalue.TaggedOutput(output.tag, GlobalWindows.windowed_value(output.value))
                else:
                    yield GlobalWindows.windowed_value(output)

    def _curate(self, source: Source) -> tuple[SourceResult, str | None]:
        """In a pool thread: one source on a free sandbox."""
        sandbox = self.sandboxes.get()
        inputs_dir = tempfile.mkdtemp(prefix="avcurate-inputs-") if self.plan is not None else None
        try:
            spec = self.plan.spec if self.plan is not None else None
            return curate_source(source, self.cfg, self.staging_dir, sandbox, spec, inputs_dir), inputs_dir
        except BaseException:
            if inputs_dir is not None:
                shutil.rmtree(inputs_dir, ignore_errors=True)
            raise
        finally:
            self.sandboxes.put(sandbox)

    def _outputs(self, result: SourceResult, inputs_dir: str | None) -> Iterator[Any]:
        self._count(result)
        yield result
        if inputs_dir is None:
            return
        try:
            for clip in result.clips:
                if clip.status == KEPT:
                    with_inputs = dataclasses.replace(clip, inputs=load_inputs(inputs_dir, clip.key))
                    yield beam.pvalue.TaggedOutput(self.CLIPS, with_inputs)
        finally:
            shutil.rmtree(inputs_dir, ignore_errors=True)

    def _count(self, result: SourceResult) -> None:
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

    def teardown(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)
        for sandbox in self.all_sandboxes:
            sandbox.close()


def storage_options(options: PipelineOptions) -> dict[str, Any]:
    """The options set for Beam's filesystems (S3, GCS, Azure, HDFS): what a sandboxed decoder needs to read
    remote sources. Only these: with none set, a decoder of local files never imports Beam at all."""
    parser = argparse.ArgumentParser()
    for view in (S3Options, GoogleCloudOptions, AzureOptions, HadoopFileSystemOptions):
        view._add_argparse_args(parser)  # the documented hook through which each view declares its options
    names = set(vars(parser.parse_args([])))
    return {k: v for k, v in options.get_all_options(drop_default=True).items() if k in names}


class ListInputs(beam.PTransform):
    """PCollection[(position, input)] of the user's inputs -> PCollection[Source], listed on the workers.

    Matching and folder walks happen where each input lands, then manifest parts (Parquet row groups) are
    spread and read in parallel; sources are de-duplicated by uri, merging metas in listing order (input
    position, then order within it), so the result does not depend on scheduling.
    """

    def expand(self, inputs: Any) -> Any:
        return (
            inputs
            | "Plan" >> beam.FlatMap(_planned)
            | "SpreadParts" >> beam.Reshuffle()
            | "List" >> beam.FlatMap(_listed)
            | "ByUri" >> beam.GroupByKey()
            | "Source" >> beam.MapTuple(_source)
        )


Order = tuple[int, ...]  # where a listing came from: (input position, item in it[, manifest row])


def _planned(numbered: tuple[int, str]) -> Iterator[tuple[Order, Listed]]:
    position, raw = numbered
    for n, item in enumerate(plan_input(raw)):
        yield (position, n), item


def _listed(planned: tuple[Order, Listed]) -> Iterator[tuple[str, tuple[Order, dict[str, Any], str | None]]]:
    order, item = planned
    for row, (uri, meta, error) in enumerate(list_item(item)):
        yield uri, ((*order, row), meta, error)


def _source(uri: str, listings: Iterable[tuple[Order, dict[str, Any], str | None]]) -> Source:
    in_order = sorted(listings, key=lambda listing: listing[0])
    error = next((error for _, _, error in in_order if error), None)
    return Source.from_uri(uri, merge_metas(meta for _, meta, _ in in_order), error)


class CurateSources(beam.PTransform):
    """PCollection[Source] -> PCollection[SourceResult]; kept clips are staged as MP4 under `staging_dir`.

    With a learned plan, the clips the decoder kept go through the learned stages (`LearnedStages`) and
    come back to their source's result, so the ledger and index see the final verdicts.
    """

    def __init__(self, cfg: Config, staging_dir: str, plan: LearnedPlan | None = None, parallel: int = 1) -> None:
        super().__init__()
        self.cfg, self.staging_dir, self.plan, self.parallel = cfg, staging_dir, plan, parallel

    def expand(self, sources: Any) -> Any:
        # The reshuffle spreads sources over workers (a Create alone would keep them in one bundle).
        options = storage_options(sources.pipeline.options)
        curate = _CurateSourceFn(self.cfg, self.staging_dir, options, self.plan, self.parallel)
        spread = sources | "Spread" >> beam.Reshuffle()
        if self.plan is None:
            return spread | "Curate" >> beam.ParDo(curate)
        from .inference import LearnedStages

        curated = spread | "Curate" >> beam.ParDo(curate).with_outputs(_CurateSourceFn.CLIPS, main="results")
        finished = curated[_CurateSourceFn.CLIPS] | "Learned" >> LearnedStages(self.cfg, self.plan)
        return (
            {
                "result": curated.results | "ResultBySource" >> beam.Map(lambda r: (r.source.source_id, r)),
                "finished": finished | "ClipBySource" >> beam.Map(lambda c: (c.source_id, c)),
            }
            | "Regroup" >> beam.CoGroupByKey()
            | "WithFinishedClips" >> beam.MapTuple(_with_finished_clips)
        )


def _with_finished_clips(source_id: str, joined: dict[str, list[Any]]) -> SourceResult:
    (result,) = joined["result"]
    finished = {clip.key: clip for clip in joined["finished"]}
    clips = [finished.get(clip.key, clip) for clip in result.clips]
    return dataclasses.replace(result, clips=clips)


class WriteOutputs(beam.PTransform):
    """Shards (with their per-shard embedding arrays), the index and the ledger, byte-identical whatever the
    scheduling.

    One worker sees each kept clip's planning entry (its key and sizes, about 200 bytes) and plans the shards as
    consecutive key ranges; every worker gets that plan as a side input, clips travel to their shard by key,
    and the shards are written in parallel. The index and the ledger are single Parquet files, so their rows
    do meet on one worker, as Arrow batches built in parallel.
    """

    def __init__(self, cfg: Config, output_dir: str, staging_dir: str) -> None:
        super().__init__()
        self.cfg, self.output_dir, self.staging_dir = cfg, output_dir.rstrip("/"), staging_dir

    def expand(self, results: Any) -> Any:
        out, shards_cfg = self.output_dir, self.cfg.output
        prefix = shards_cfg.shard_prefix
        kept = results | "Kept" >> beam.FlatMap(lambda r: [c for c in r.clips if c.status == KEPT])
        layout = beam.pvalue.AsSingleton(
            kept
            | "ShardEntries" >> beam.Map(shard_entry, prefix)
            | "AllEntries" >> beam.combiners.ToList()
            | "PlanShards"
            >> beam.Map(
                lambda entries: plan_layout(
                    entries, prefix=prefix, max_clips=shards_cfg.shard_max_clips, max_bytes=shards_cfg.shard_max_bytes
                )
            )
        )
        by_shard = kept | "Place" >> beam.Map(lambda clip, layout_: layout_.place(clip), layout)
        placed = by_shard | "Placed" >> beam.Values()
        shard_infos = (
            by_shard
            | "GroupShards" >> beam.GroupByKey()
            | "WriteShard" >> beam.Map(_write_shard, layout, f"{out}/shards", f"{out}/embeddings")
            | "AllShards" >> beam.combiners.ToList()
        )
        others = results | "NotKept" >> beam.FlatMap(lambda r: [c for c in r.clips if c.status != KEPT])
        # Rows travel to the one writer as columnar batches: a few hundred bytes a row instead of several KB.
        index = (
            (placed, others)
            | "AllClips" >> beam.Flatten()
            | "BatchClips" >> beam.BatchElements(max_batch_size=_ROWS_PER_BATCH)
            | "IndexBatches" >> beam.Map(index_batch)
            | "AllIndexBatches" >> beam.combiners.ToList()
            | "WriteIndex" >> beam.Map(lambda batches: write_table(merge_index(batches), f"{out}/index.parquet"))
        )
        ledger = (
            results
            | "BatchResults" >> beam.BatchElements(max_batch_size=_ROWS_PER_BATCH)
            | "LedgerBatches" >> beam.Map(ledger_batch)
            | "AllLedgerBatches" >> beam.combiners.ToList()
            | "WriteLedger" >> beam.Map(lambda batches: write_table(merge_ledger(batches), f"{out}/ledger.parquet"))
        )
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


def _write_shard(
    shard: tuple[int, Iterable[Clip]], layout: ShardLayout, shards_dir: str, embeddings_dir: str
) -> ShardInfo:
    index, clips = shard
    return write_shard(layout.plan(index, clips), shards_dir, embeddings_dir)


def _cleanup(infos: Iterable[ShardInfo], staging_dir: str, index_done: Any, ledger_done: Any) -> list[ShardInfo]:
    delete_tree(staging_dir)
    return sorted(infos, key=lambda i: i.name)
