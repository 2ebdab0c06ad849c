"""The Beam layer: thin PTransforms around the plain-Python stages, plus the pipeline's metrics."""

from __future__ import annotations

import argparse
import dataclasses
import queue
import shutil
import tempfile
from collections import defaultdict, deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Iterable, Iterator

import apache_beam as beam
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics
from apache_beam.transforms.window import GlobalWindows
from apache_beam.options.pipeline_options import (
    AzureOptions,
    GoogleCloudOptions,
    HadoopFileSystemOptions,
    PipelineOptions,
    S3Options,
)

from . import NAMESPACE
from .. import checkpoints, progress
from ..config import Config
from ..faults import fault_point
from ..filters import reason_name
from ..fsutil import delete_tree
from ..ingest import Listed, list_item, merge_metas, plan_input
from ..learned import LearnedPlan
from ..model import EXCLUDED, FAILED, KEPT, Clip, Source, SourceResult
from ..process import curate_source
from ..sandbox import Sandbox
from ..spans import Span, Split, merge_spans
from ..timings import count_times, timed, timed_iter
from ..writers.buckets import bucket_count, bucket_range, key_bucket
from ..writers.shards import BucketedLayout, ShardInfo, plan_layout, remove_samples, shard_entry, write_shard
from ..runstate import Base, finish_run, remove_temporaries
from ..writers.tables import (
    count_rows,
    index_batch,
    kept_clips_of,
    ledger_batch,
    merge_index,
    merge_ledger,
    read_table,
    upgraded_ledger,
    without_sources,
    write_index_parts,
    write_table,
)

_ROWS_PER_BATCH = 2000


class _CurateSourceFn(beam.DoFn):
    """Decode, cut, score, filter and stage sources, each in a sandboxed decoder process.

    `parallel` sources at a time (the local runner's workers; 1 on other runners, which bring their own
    parallelism), each on a sandbox of its own: the threads only wait on their decoder processes. Results go out
    in input order from the DoFn's own thread, where Beam's metrics live.

    With learned models, each kept clip also goes out on its own (output `CLIPS`) with its model inputs, read
    one at a time from the staging area: a long source's inputs are never all in memory.

    A finished source is saved in the staging area (`avcurate.checkpoints`); one saved by an interrupted run is
    loaded, not decoded again.
    """

    CLIPS = "clips"
    SPANS = "spans"
    expected_bundle_s = 60  # a hint for schedulers that place bundles by expected duration (avcurate/beam/dask.py)

    def __init__(
        self, cfg: Config, staging_dir: str, options: dict[str, Any], plan: LearnedPlan | None, parallel: int = 1
    ) -> None:
        self.cfg, self.staging_dir, self.options, self.plan, self.parallel = cfg, staging_dir, options, plan, parallel
        self.resumed = Metrics.counter(NAMESPACE, "resumed")  # sources or spans an interrupted run had finished

    def setup(self) -> None:
        self.sandboxes: queue.SimpleQueue[Sandbox] = queue.SimpleQueue()
        self.all_sandboxes = [Sandbox(self.cfg.decode.memory_limit_mb, filesystem_options=self.options)
                              for _ in range(self.parallel)]  # fmt: skip
        for sandbox in self.all_sandboxes:
            self.sandboxes.put(sandbox)
        self.pool = ThreadPoolExecutor(self.parallel, thread_name_prefix="avcurate-source")

    def start_bundle(self) -> None:
        self.pending: deque[Future[tuple[Source, SourceResult | Split, bool]]] = deque()

    def process(self, item: Source | tuple[Source, Span]) -> Iterator[Any]:
        source, span = item if isinstance(item, tuple) else (item, None)
        self.pending.append(self.pool.submit(self._curate, source, span))
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

    def _curate(self, source: Source, span: Span | None) -> tuple[Source, SourceResult | Split, bool]:
        """In a pool thread: one source (or span of one), from an interrupted run's checkpoint or on a free
        sandbox; whether it was resumed."""
        fault_point("curate")
        done = checkpoints.load(self.staging_dir, source, span)
        if done is not None:
            return source, done, True
        sandbox = self.sandboxes.get()
        inputs_dir = tempfile.mkdtemp(prefix="avcurate-inputs-") if self.plan is not None else None
        try:
            spec = self.plan.spec if self.plan is not None else None
            outcome = curate_source(source, self.cfg, self.staging_dir, sandbox, spec, inputs_dir, span)
            if isinstance(outcome, SourceResult):
                checkpoints.save(self.staging_dir, outcome, inputs_dir)
            return source, outcome, False
        finally:
            self.sandboxes.put(sandbox)
            if inputs_dir is not None:
                shutil.rmtree(inputs_dir, ignore_errors=True)

    def _outputs(self, source: Source, outcome: SourceResult | Split, resumed: bool) -> Iterator[Any]:
        if isinstance(outcome, Split):
            for span in outcome.spans:
                yield beam.pvalue.TaggedOutput(self.SPANS, (source, span))
            return
        count_times(NAMESPACE, outcome.times)  # each span's own, as it comes
        if outcome.span is None:  # a span's result is counted once merged with its source's others
            count_result(outcome)
        if resumed:
            self.resumed.inc()
        yield outcome
        if self.plan is None:
            return
        for clip in outcome.clips:
            if clip.status == KEPT:
                # Embedded before an interruption: it goes on with its embeddings, not its inputs.
                embedded = checkpoints.load_embedded(self.staging_dir, clip) if resumed else None
                inputs = checkpoints.load_inputs(self.staging_dir, clip.key) if embedded is None else None
                yield beam.pvalue.TaggedOutput(self.CLIPS, embedded or dataclasses.replace(clip, inputs=inputs))

    def teardown(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)
        for sandbox in self.all_sandboxes:
            sandbox.close()


def count_result(result: SourceResult) -> None:
    """The run's counters for one source's final result (and the local run's progress display)."""
    progress.finished(result)
    Metrics.counter(NAMESPACE, "inputs").inc()
    if result.status == FAILED:
        Metrics.counter(NAMESPACE, "inputs_failed").inc()
        Metrics.counter(NAMESPACE, f"failed_{result.error_type}").inc()
    if result.status == EXCLUDED:
        Metrics.counter(NAMESPACE, "inputs_excluded").inc()
    if result.probe is not None:
        Metrics.counter(NAMESPACE, "media_ms").inc(int(result.probe.duration_s * 1000))
    for clip in result.clips:
        if clip.status == KEPT:
            Metrics.counter(NAMESPACE, "clips_kept").inc()
        else:
            Metrics.counter(NAMESPACE, "clips_rejected").inc()
            for reason in clip.reasons:
                Metrics.counter(NAMESPACE, f"rejected_{reason_name(reason)}").inc()


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
    for row, (uri, meta, error) in enumerate(timed_iter(NAMESPACE, "list", list_item(item))):
        yield uri, ((*order, row), meta, error)


def _source(uri: str, listings: Iterable[tuple[Order, dict[str, Any], str | None]]) -> Source:
    in_order = sorted(listings, key=lambda listing: listing[0])
    error = next((error for _, _, error in in_order if error), None)
    return Source.from_uri(uri, merge_metas(meta for _, meta, _ in in_order), error)


class DropKnown(beam.PTransform):
    """PCollection[Source] -> the sources an incremental run's base does not have (by source id, from its
    ledger, read on a worker and joined: no list of known sources in the job graph or in any one process).
    A source the base excluded is not known: listed again once no block list names it, it is curated."""

    def __init__(self, base_ledger: str) -> None:
        super().__init__()
        self.base_ledger = base_ledger

    def expand(self, sources: Any) -> Any:
        known = (
            sources.pipeline
            | "BaseLedger" >> beam.Create([self.base_ledger])
            | "KnownIds" >> beam.FlatMap(_known_ids)
            | "Known" >> beam.Map(lambda source_id: (source_id, True))
        )
        return (
            {"source": sources | "ById" >> beam.Map(lambda s: (s.source_id, s)), "known": known}
            | "Join" >> beam.CoGroupByKey()
            | "New" >> beam.FlatMap(lambda joined: [] if joined[1]["known"] else joined[1]["source"])
        )


def _known_ids(ledger: str) -> list[str]:
    table = read_table(ledger, ["source_id", "status"])
    rows = zip(table.column("source_id").to_pylist(), table.column("status").to_pylist())
    return [source_id for source_id, status in rows if status != EXCLUDED]


class CurateSources(beam.PTransform):
    """PCollection[Source] -> PCollection[SourceResult]; kept clips are staged as MP4 under `staging_dir`.

    A source long enough to split (`avcurate.spans`) comes back from its first worker undecoded, as spans that
    are spread again, curated on as many workers and merged into the source's one result.

    With a learned plan, the clips the decoder kept go through the learned stages (`LearnedStages`) and
    come back to their source's result, so the ledger and index see the final verdicts.
    """

    def __init__(self, cfg: Config, staging_dir: str, plan: LearnedPlan | None = None, parallel: int = 1) -> None:
        super().__init__()
        self.cfg, self.staging_dir, self.plan, self.parallel = cfg, staging_dir, plan, parallel

    def expand(self, sources: Any) -> Any:
        # The reshuffles spread sources and spans over workers (a Create alone would keep them in one bundle).
        options = storage_options(sources.pipeline.options)
        curate = _CurateSourceFn(self.cfg, self.staging_dir, options, self.plan, self.parallel)
        tags = (_CurateSourceFn.SPANS, _CurateSourceFn.CLIPS)
        whole = (
            sources
            | "Counted" >> beam.Map(_listed_for_progress)
            | "Spread" >> beam.Reshuffle()
            | "Curate" >> beam.ParDo(curate).with_outputs(*tags, main="results")
        )
        spans = (
            whole[_CurateSourceFn.SPANS]
            | "SpreadSpans" >> beam.Reshuffle()
            | "CurateSpans" >> beam.ParDo(curate).with_outputs(*tags, main="results")
        )
        merged = (
            spans.results
            | "SpanBySource" >> beam.Map(lambda r: (r.source.source_id, r))
            | "SpansOfSource" >> beam.GroupByKey()
            | "MergeSpans" >> beam.MapTuple(_merge_spans)
        )
        results = (whole.results, merged) | "AllResults" >> beam.Flatten()
        if self.plan is None:
            return results
        from .inference import LearnedStages

        clips = (whole[_CurateSourceFn.CLIPS], spans[_CurateSourceFn.CLIPS]) | "AllClips" >> beam.Flatten()
        finished = clips | "Learned" >> LearnedStages(self.cfg, self.plan, self.staging_dir)
        return (
            {
                "result": results | "ResultBySource" >> beam.Map(lambda r: (r.source.source_id, r)),
                "finished": finished | "ClipBySource" >> beam.Map(lambda c: (c.source_id, c)),
            }
            | "Regroup" >> beam.CoGroupByKey()
            | "WithFinishedClips" >> beam.MapTuple(_with_finished_clips)
        )


def _listed_for_progress(source: Source) -> Source:
    progress.listed()
    return source


def _merge_spans(source_id: str, results: Iterable[SourceResult]) -> SourceResult:
    merged = merge_spans(list(results))
    count_result(merged)
    return merged


def _with_finished_clips(source_id: str, joined: dict[str, list[Any]]) -> SourceResult:
    (result,) = joined["result"]
    finished = {clip.key: clip for clip in joined["finished"]}
    clips = [finished.get(clip.key, clip) for clip in result.clips]
    return dataclasses.replace(result, clips=clips)


class WriteOutputs(beam.PTransform):
    """Shards (with their per-shard embedding arrays), the index and the ledger, byte-identical whatever the
    scheduling.

    No worker sees the whole run: kept clips are counted, and their keys cut into key-range buckets of about
    `output.plan_bucket_clips` clips (`avcurate.writers.buckets`). Each bucket's planning entries (a clip's key
    and sizes, about 200 bytes) meet on one worker, which plans its shards as consecutive key ranges; one small
    step numbers the buckets' shards on from each other, and every worker gets those per-bucket layouts as a side
    input. Clips travel to their shard by key, and the shards are written in parallel.

    The index is one Parquet file, written the same way: its rows are bucketed by key (a bucket's with the base's
    rows of its range), each bucket's sorted and written to a part in the staging area, then the parts are
    copied, one at a time and in key order, into the index. With one bucket (a run of up to plan_bucket_clips
    clips), every output is byte-identical to planning and indexing the whole run at once.

    Excluded sources (block lists) have no clips. On an incremental run they are taken out of the base too (a
    takedown): their index rows are left out, each base shard holding any of their clips is rewritten without
    them under its name (`remove_samples`: idempotent, so a resumed run redoes it), and their ledger rows are
    replaced, as is every base row of a source this run has a result for.
    """

    def __init__(self, cfg: Config, output_dir: str, staging_dir: str, base: Base | None = None) -> None:
        super().__init__()
        self.cfg, self.output_dir, self.staging_dir, self.base = cfg, output_dir.rstrip("/"), staging_dir, base

    def expand(self, results: Any) -> Any:
        out, shards_cfg, base = self.output_dir, self.cfg.output, self.base
        prefix, per_bucket = shards_cfg.shard_prefix, shards_cfg.plan_bucket_clips
        first_shard = base.shards if base is not None else 0
        kept = results | "Kept" >> beam.FlatMap(lambda r: [c for c in r.clips if c.status == KEPT])
        entries = kept | "ShardEntries" >> beam.Map(shard_entry, prefix)
        plan_buckets = (
            entries
            | "CountEntries" >> beam.combiners.Count.Globally()
            | "PlanBuckets" >> beam.Map(bucket_count, per_bucket)
        )
        layout = beam.pvalue.AsSingleton(
            entries
            | "EntryBucket" >> beam.Map(lambda e, n: (key_bucket(e.key, n), e), beam.pvalue.AsSingleton(plan_buckets))
            | "EntriesByBucket" >> beam.GroupByKey()
            | "PlanBucket"
            >> beam.MapTuple(
                lambda bucket, bucket_entries: (bucket, plan_layout(
                    bucket_entries, prefix=prefix, max_clips=shards_cfg.shard_max_clips,
                    max_bytes=shards_cfg.shard_max_bytes, start=first_shard,
                ))
            )  # fmt: skip
            | "AllBucketLayouts" >> beam.combiners.ToList()
            | "NumberShards"
            >> beam.Map(lambda planned, n: BucketedLayout.numbered(planned, n, prefix, first_shard),
                        beam.pvalue.AsSingleton(plan_buckets))  # fmt: skip
        )
        by_shard = kept | "Place" >> beam.Map(lambda clip, layout_: layout_.place(clip), layout)
        placed = by_shard | "Placed" >> beam.Values()
        shard_infos = (
            by_shard
            | "GroupShards" >> beam.GroupByKey()
            | "WriteShard" >> beam.Map(_write_shard, layout, f"{out}/shards", f"{out}/embeddings")
            | "AllShards" >> beam.combiners.ToList()
        )
        excluded = beam.pvalue.AsSingleton(
            results
            | "ExcludedIds" >> beam.FlatMap(lambda r: [r.source.source_id] if r.status == EXCLUDED else [])
            | "ExcludedSet" >> beam.combiners.ToSet()
        )
        others = results | "NotKept" >> beam.FlatMap(lambda r: [c for c in r.clips if c.status != KEPT])
        clips = (placed, others) | "AllClips" >> beam.Flatten()
        index_buckets = (
            clips
            | "CountClips" >> beam.combiners.Count.Globally()
            | "IndexBuckets" >> beam.Map(_index_buckets, base, per_bucket)
        )
        # Every bucket gets a marker (None), so one without new clips still gets its part: its base rows.
        markers = index_buckets | "EveryBucket" >> beam.FlatMap(lambda n: [(bucket, None) for bucket in range(n)])
        parts_dir = f"{self.staging_dir}/index-parts"
        by_bucket = clips | "ClipBucket" >> beam.Map(lambda c, n: (key_bucket(c.key, n), c),
                                                     beam.pvalue.AsSingleton(index_buckets))  # fmt: skip
        index = (
            (by_bucket, markers)
            | "ClipsAndMarkers" >> beam.Flatten()
            | "IndexRows" >> beam.CombinePerKey(_IndexRows())
            | "WriteIndexPart"
            >> beam.FlatMap(_write_index_part, beam.pvalue.AsSingleton(index_buckets), base, parts_dir, excluded)
            | "AllIndexParts" >> beam.combiners.ToList()
            | "WriteIndex" >> beam.Map(_write_index, f"{out}/index.parquet")
        )
        # The ledger's rows do meet on one worker: one a source, a thousand times fewer than the index's.
        ledger = (
            results
            | "BatchResults" >> beam.BatchElements(max_batch_size=_ROWS_PER_BATCH)
            | "LedgerBatches" >> beam.Map(ledger_batch)
            | "AllLedgerBatches" >> beam.combiners.ToList()
            | "WriteLedger" >> beam.Map(_write_ledger, base, f"{out}/ledger.parquet")
        )
        written = {"index_done": beam.pvalue.AsSingleton(index), "ledger_done": beam.pvalue.AsSingleton(ledger)}
        if base is not None:  # the base's shards holding clips of sources excluded now are rewritten without them
            written["taken_down"] = beam.pvalue.AsSingleton(
                results.pipeline
                | "BaseIndex" >> beam.Create([base.index])
                | "TakenDownShards" >> beam.FlatMap(_takedowns, excluded)
                | "SpreadTakedowns" >> beam.Reshuffle()
                | "RewriteBaseShard" >> beam.Map(_take_down, f"{out}/shards", f"{out}/embeddings")
                | "AllRewritten" >> beam.combiners.ToList()
            )
        # Staged clips are removed only once every shard is written (and the index, the ledger, any takedown).
        return shard_infos | "Cleanup" >> beam.Map(_cleanup, self.staging_dir, out, **written)


class _IndexRows(beam.CombineFn):
    """A bucket's clips as Arrow index batches, built where the clips are: columnar rows (a few hundred bytes
    each) cross the shuffle, not clips (several KB). None, a bucket's marker, adds no row."""

    def create_accumulator(self) -> tuple[list[Clip], list[Any]]:
        return [], []  # clips not in a batch yet, batches

    def add_input(self, rows: tuple[list[Clip], list[Any]], clip: Clip | None) -> tuple[list[Clip], list[Any]]:
        if clip is not None:
            rows[0].append(clip)
        return self.compact(rows) if len(rows[0]) >= _ROWS_PER_BATCH else rows

    def merge_accumulators(self, accumulators: Iterable[tuple[list[Clip], list[Any]]]) -> tuple[list[Clip], list[Any]]:
        clips, batches = [], []
        for more_clips, more_batches in accumulators:
            clips += more_clips
            batches += more_batches
        return clips, batches

    def compact(self, rows: tuple[list[Clip], list[Any]]) -> tuple[list[Clip], list[Any]]:
        clips, batches = rows
        return ([], [*batches, index_batch(clips)]) if clips else rows

    def extract_output(self, rows: tuple[list[Clip], list[Any]]) -> list[Any]:
        return self.compact(rows)[1]


def _write_index_part(
    bucket_rows: tuple[int, list[Any]], buckets: int, base: Base | None, parts_dir: str, excluded: set[str]
) -> list[tuple[int, str]]:
    """The bucket's index rows, with the base's of its key range but those of `excluded` sources, sorted into a
    part of the index; none if it has no rows."""
    with timed(NAMESPACE, "write:index"):
        return _index_part(bucket_rows, buckets, base, parts_dir, excluded)


def _index_part(
    bucket_rows: tuple[int, list[Any]], buckets: int, base: Base | None, parts_dir: str, excluded: set[str]
) -> list[tuple[int, str]]:
    bucket, batches = bucket_rows
    base_rows = [without_sources(read_table(base.index, keys=bucket_range(bucket, buckets)), excluded)] if base else []
    table = merge_index(batches + base_rows)
    if not table.num_rows:
        return []
    path = f"{parts_dir}/{bucket:06d}.parquet"
    write_table(table, path)
    return [(bucket, path)]


def _write_index(parts: list[tuple[int, str]], path: str) -> None:
    with timed(NAMESPACE, "write:index"):
        write_index_parts([part for _, part in sorted(parts)], path)


def _index_buckets(new_clips: int, base: Base | None, per_bucket: int) -> int:
    """The index's buckets: by its rows, the new clips' and the base's."""
    return bucket_count(new_clips + (count_rows(base.index) if base is not None else 0), per_bucket)


def _write_ledger(batches: list[Any], base: Base | None, path: str) -> None:
    with timed(NAMESPACE, "write:ledger"):
        write_table(merge_ledger(batches + _base_ledger(base, batches)), path)


def _base_ledger(base: Base | None, batches: list[Any]) -> list[Any]:
    """The finished run's ledger rows, which an incremental run keeps unchanged, but those of sources with a
    row in `batches` (this run's: excluded now, or curated again once no longer excluded)."""
    if base is None:
        return []
    replaced = {source_id for batch in batches for source_id in batch.column("source_id").to_pylist()}
    return [without_sources(upgraded_ledger(read_table(base.ledger)), replaced)]


def _takedowns(index: str, excluded: set[str]) -> list[tuple[str, tuple[list[str], list[str]]]]:
    """(shard, (every key it holds, the keys to take out)) of each base shard holding kept clips of `excluded`
    sources, from the base's index: a shard's kept rows are its samples, and sorted by key, in its order."""
    removed: dict[str, list[str]] = defaultdict(list)
    for shard, key in kept_clips_of(index, excluded):
        removed[shard].append(key)
    if not removed:
        return []
    with FileSystems.open(index) as f:
        table = pq.read_table(f, columns=["shard", "key"], filters=[("shard", "in", sorted(removed)),
                                                                    ("status", "=", KEPT)])  # fmt: skip
    held: dict[str, list[str]] = defaultdict(list)
    for shard, key in zip(table.column("shard").to_pylist(), table.column("key").to_pylist()):
        held[shard].append(key)
    return [(shard, (sorted(held[shard]), sorted(removed[shard]))) for shard in sorted(removed)]


def _take_down(
    shard_keys: tuple[str, tuple[list[str], list[str]]], shards_dir: str, embeddings_dir: str
) -> ShardInfo | None:
    name, (held, removed) = shard_keys
    return remove_samples(name, held, removed, shards_dir, embeddings_dir)


def _write_shard(
    shard: tuple[tuple[int, int], Iterable[Clip]], layout: BucketedLayout, shards_dir: str, embeddings_dir: str
) -> ShardInfo:
    where, clips = shard
    with timed(NAMESPACE, "write:shards"):
        return write_shard(layout.plan(where, clips), shards_dir, embeddings_dir)


def _cleanup(
    infos: Iterable[ShardInfo], staging_dir: str, output_dir: str, index_done: Any, ledger_done: Any,
    taken_down: Any = None,
) -> list[ShardInfo]:
    finish_run(output_dir)  # the run record goes first: a kill from here on leaves a finished run
    fault_point("finished")
    delete_tree(staging_dir)
    remove_temporaries(output_dir)  # of writers that died (a lost worker) before their task was rerun
    return sorted(infos, key=lambda i: i.name)
