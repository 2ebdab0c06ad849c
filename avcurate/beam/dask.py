"""Beam on a Dask cluster: Beam's DaskRunner, with the translations the curation pipeline needs.

Beam 2.77's DaskRunner (`apache_beam.runners.dask`) runs simple pipelines; ours needs more, and gets it here,
translating the same Beam primitives to Dask bags:

- a DoFn's `finish_bundle` outputs are kept (Beam's drops them: it collects a bundle's outputs before calling
  finish_bundle), so `BatchElements` and our Curate step, which emit there, lose nothing;
- tagged outputs go to their own PCollection (Beam's mixes every tag into each consumer);
- a side input is computed once, in the graph, and sent to the tasks that read it (Beam's recomputes the side
  input's whole upstream graph inside every task that reads it: here that would decode every source again);
- `Reshuffle` spreads elements over `dask_npartitions` partitions (Beam's is a no-op, leaving a whole run's
  sources in the one partition its inputs were created in, so on one worker, and a long source's spans in the
  partition that found them);
- DoFn instances are set up once per worker process and kept for its later bundles, one bundle at a time each
  (tasks that share a worker process never share an instance);
- failed tasks are retried (`dask_retries`); a lost worker's tasks are rerun elsewhere by Dask itself;
- every leaf of the graph is computed (Beam's computes the last transform visited only);
- Beam metrics are collected from the bundles that succeeded, so a retried task counts once.
"""

from __future__ import annotations

import atexit
import collections
import re
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import apache_beam as beam
from apache_beam import pvalue
from apache_beam.internal import pickler
from apache_beam.metrics.execution import MetricKey, MetricResult, MetricsContainer
from apache_beam.metrics.metric import MetricResults
from apache_beam.metrics.metricbase import MetricName
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.pipeline import AppliedPTransform, PipelineVisitor
from apache_beam.runners.common import DoFnContext, DoFnInvoker, DoFnSignature, Receiver, _OutputHandler
from apache_beam.runners.dask.dask_runner import DaskOptions
from apache_beam.runners.dask.overrides import (
    _Create,
    _Flatten,
    _GroupAlsoByWindow,
    _GroupByKeyOnly,
    _Reshuffle,
    dask_overrides,
)
from apache_beam.runners.runner import PipelineResult, PipelineRunner, PipelineState
from apache_beam.runners.worker import statesampler
from apache_beam.transforms.sideinputs import SideInputMap
from apache_beam.transforms.window import GlobalWindows
from apache_beam.utils.counters import CounterFactory
from apache_beam.utils.windowed_value import WindowedValue

DASK = "dask"


class AvcurateDaskOptions(PipelineOptions):
    @classmethod
    def _add_argparse_args(cls, parser: Any) -> None:
        parser.add_argument(
            "--dask_retries", type=int, default=2,
            help="times a failed Dask task (a bundle) is retried before the run fails",
        )  # fmt: skip
        parser.add_argument(
            "--dask_workers", type=int, default=2,
            help="worker processes of the local Dask cluster started when no --dask_client_address is given",
        )  # fmt: skip


@dataclass
class _Collect(Receiver):
    """A bundle's outputs for one tag."""

    values: list[Any] = field(default_factory=list)

    def receive(self, windowed_value: WindowedValue) -> None:
        self.values.append(windowed_value.value)


class _Receivers(dict):
    def __missing__(self, tag: str | None) -> _Collect:
        self[tag] = _Collect()
        return self[tag]


@dataclass
class _BundleOutputs:
    """What one bundle made: its outputs by tag and its metric updates, (namespace, name) -> count."""

    by_tag: dict[str | None, list[Any]]
    counters: dict[tuple[str, str], int]


def _windowed(value: Any) -> WindowedValue:
    return value if isinstance(value, WindowedValue) else GlobalWindows.windowed_value(value)


class _DoFnPool:
    """Set-up DoFn instances of this worker process, kept between bundles as Beam runners keep them: a DoFn's
    setup (our Curate step starts a sandboxed decoder there) is paid once per process, not once per bundle.
    An instance serves one bundle at a time; the least recently used go (torn down) past `keep`."""

    def __init__(self, keep: int = 16) -> None:
        self.keep = keep
        self.lock = threading.Lock()
        self.idle: collections.OrderedDict[tuple[str, int], list[Any]] = collections.OrderedDict()
        atexit.register(self.close)

    def take(self, step: str, fn: bytes) -> tuple[Any, ...]:
        key = (step, hash(fn))
        with self.lock:
            if key in self.idle:
                instances = self.idle[key]
                instance = instances.pop()
                if not instances:
                    del self.idle[key]
                return (*instance, False)
        return (*pickler.loads(fn), True)

    def give_back(self, step: str, fn: bytes, instance: tuple[Any, ...]) -> None:
        evicted = []
        with self.lock:
            self.idle.setdefault((step, hash(fn)), []).append(instance)
            self.idle.move_to_end((step, hash(fn)))
            while sum(map(len, self.idle.values())) > self.keep:
                _, instances = next(iter(self.idle.items()))
                evicted.append(instances.pop(0))
                if not instances:
                    self.idle.popitem(last=False)
        for do_fn, *_ in evicted:
            _teardown(do_fn)

    def close(self) -> None:
        with self.lock:
            instances = [i for group in self.idle.values() for i in group]
            self.idle.clear()
        for do_fn, *_ in instances:
            _teardown(do_fn)


def _teardown(do_fn: Any) -> None:
    """Best effort: a DoFn that fails to tear down (or never finished its setup) must not fail the bundle that
    used it, nor hide that bundle's own error."""
    try:
        do_fn.teardown()
    except Exception:
        pass


_POOL = _DoFnPool()


def _run_bundle(items: Iterable[Any], fn: bytes, step: str, *sides: list[Any]) -> list[_BundleOutputs]:
    """One Dask partition through one DoFn, as one Beam bundle: start, process each, finish."""
    do_fn, args, kwargs, side_views, fresh = _POOL.take(step, fn)
    receivers = _Receivers()
    handler = _OutputHandler(
        window_fn=GlobalWindows(), main_receivers=receivers[None], tagged_receivers=receivers,
        per_element_output_counter=None, output_batch_converter=None, process_yields_batches=False,
        process_batch_yields_elements=False,
    )  # fmt: skip
    side_inputs = [
        SideInputMap(view, options, [_windowed(v) for v in values]) for (view, options), values in zip(side_views, sides)
    ]
    invoker = DoFnInvoker.create_invoker(
        DoFnSignature(do_fn), handler, context=DoFnContext(step), side_inputs=side_inputs, input_args=list(args),
        input_kwargs=kwargs, bundle_finalizer_param=beam.DoFn.BundleFinalizerParam(),
    )  # fmt: skip
    container = MetricsContainer(step)
    sampler = statesampler.StateSampler(step, CounterFactory())  # Beam's metrics reach the container through it
    statesampler.set_current_tracker(sampler)
    try:
        with sampler.scoped_state(step, "process", metrics_container=container):
            if fresh:
                invoker.invoke_setup()
            invoker.invoke_start_bundle()
            for item in items:
                invoker.invoke_process(_windowed(item))
            invoker.invoke_finish_bundle()
    except BaseException:
        _teardown(do_fn)  # a failed bundle may leave the instance half-way: it is not reused
        raise
    finally:
        statesampler.set_current_tracker(None)
    _POOL.give_back(step, fn, (do_fn, args, kwargs, side_views))
    counters = {
        (key.metric.namespace, key.metric.name): value for key, value in container.get_cumulative().counters.items()
    }
    return [_BundleOutputs({tag: receiver.values for tag, receiver in receivers.items()}, counters)]


def _outputs(partition: list[_BundleOutputs], tag: str | None) -> list[Any]:
    (bundle,) = partition
    return bundle.by_tag.get(tag, [])


def _counters(partition: list[_BundleOutputs]) -> list[dict[tuple[str, str], int]]:
    return [bundle.counters for bundle in partition]


def _concat(parts: list[list[Any]]) -> list[Any]:
    return [item for part in parts for item in part]


def _key(item: tuple[Any, Any]) -> Any:
    return item[0]


def _split_to(partition: Iterable[Any], first: int, partitions: int) -> list[list[Any]]:
    """A partition's elements by the new partition each moves to: round robin from `first` (the partition's own
    number), so that the few elements of one partition (a long source's spans) never share a new one, and a
    partition Dask computes again (after a lost worker) sends every element where it did the first time."""
    parts: list[list[Any]] = [[] for _ in range(partitions)]
    for i, value in enumerate(partition):
        parts[(first + i) % partitions].append(value)
    return parts


def _part(splits: list[list[list[Any]]], j: int) -> list[Any]:
    return [value for split in splits for value in split[j]]


def _values(partition: Iterable[tuple[Any, list[tuple[Any, Any]]]]) -> list[tuple[Any, list[Any]]]:
    # Elements reach the grouping as Beam's ReifyWindows left them: (key, windowed value); windows are global.
    return [(key, [pair[1].value if isinstance(pair[1], WindowedValue) else pair[1] for pair in pairs])
            for key, pairs in partition]  # fmt: skip


class _Translator(PipelineVisitor):
    """Beam's primitive transforms -> Dask bags, one bag per PCollection."""

    def __init__(self, partitions: int) -> None:
        self.partitions = partitions
        self.bags: dict[pvalue.PCollection, Any] = {}
        self.consumed: set[pvalue.PCollection] = set()
        self.counters: list[Any] = []  # one bag of per-bundle counters per ParDo
        self.expected_durations: dict[str, str] = {}  # task name prefix -> Dask duration, for long steps

    def visit_transform(self, node: AppliedPTransform) -> None:
        import dask.bag as db

        transform = node.transform
        main_inputs = [pcoll for pcoll in node.main_inputs.values() if isinstance(pcoll, pvalue.PCollection)]
        inputs = [self.bags[pcoll] for pcoll in main_inputs]
        self.consumed.update(main_inputs)
        if isinstance(transform, _Create):
            values = list(transform.values)
            self._set(node, db.from_sequence(values, npartitions=max(1, len(values))))
        elif isinstance(transform, _Reshuffle):
            (bag,) = inputs
            self._set(node, self._spread(bag))
        elif isinstance(transform, _GroupByKeyOnly):
            (bag,) = inputs
            grouped = bag.groupby(_key, npartitions=max(bag.npartitions, self.partitions), shuffle="tasks")
            self._set(node, grouped.map_partitions(_values))
        elif isinstance(transform, _Flatten):
            self._set(node, db.concat(inputs) if inputs else db.from_sequence([], npartitions=1))
        elif isinstance(transform, _GroupAlsoByWindow):  # a ParDo, but with global windows the groups are final
            (bag,) = inputs
            self._set(node, bag)
        elif isinstance(transform, beam.ParDo):
            self._par_do(node, transform, inputs)
        elif len(inputs) == 1:  # window assignments: the pipeline is batch, in the global window
            self._set(node, inputs[0])
        elif node.outputs:
            raise NotImplementedError(
                f"avcurate's DaskRunner cannot run {node.full_label} ({type(transform).__name__}); run this pipeline "
                "on --runner local or a portable runner"
            )

    def _spread(self, bag: Any) -> Any:
        """Every element of `bag` sent to one of `partitions` new partitions, all to all. (Dask's own shuffle
        chooses partitions by hash, and sends several of a few elements, a long source's spans, to one.)"""
        import dask.bag as db
        from dask.base import tokenize
        from dask.highlevelgraph import HighLevelGraph

        name = f"beam-reshuffle-{tokenize(bag.name, self.partitions)}"
        layer: dict[Any, Any] = {}
        for i in range(bag.npartitions):
            layer[(f"{name}-split", i)] = (_split_to, (bag.name, i), i, self.partitions)
        for j in range(self.partitions):
            layer[(name, j)] = (_part, [(f"{name}-split", i) for i in range(bag.npartitions)], j)
        return db.Bag(HighLevelGraph.from_collections(name, layer, dependencies=[bag]), name, self.partitions)

    def _set(self, node: AppliedPTransform, bag: Any) -> None:
        for output in node.outputs.values():
            self.bags[output] = bag

    def _par_do(self, node: AppliedPTransform, transform: beam.ParDo, inputs: list[Any]) -> None:
        """The ParDo's bundles as a graph layer of our own: Dask's helpers (delayed arguments, bag reductions)
        would optimise the graph behind each side input, copying every task upstream of it under new names."""
        import dask.bag as db
        from dask.base import tokenize
        from dask.highlevelgraph import HighLevelGraph

        (bag,) = inputs
        args, kwargs = transform.raw_side_inputs
        side_bags = [self.bags[side.pvalue] for side in node.side_inputs]
        self.consumed.update(side.pvalue for side in node.side_inputs)
        views = [(type(side), side._view_options()) for side in node.side_inputs]
        fn = pickler.dumps((transform.fn, args, kwargs, views))
        # Named by step: Dask keeps task durations per name prefix, to place tasks and to steal queued ones for
        # idle workers. A step whose bundles take long (decoding) says so before its first one finishes:
        # Dask never moves a task whose duration it does not know yet (two spans of one source would wait in
        # line on one worker while another idles).
        step = re.sub(r"[^A-Za-z0-9]+", "_", node.full_label).strip("_")
        name = f"{step}-{tokenize(node.full_label, fn, bag.name, *(b.name for b in side_bags))}"
        expected_s = getattr(transform.fn, "expected_bundle_s", None)
        if expected_s is not None:
            self.expected_durations[step] = f"{expected_s}s"
        layer: dict[Any, Any] = {f"{name}-fn": fn}  # the DoFn (config, model plans, ...) once, not per partition
        sides = []
        for i, side in enumerate(side_bags):  # each side input computed once, sent to every task reading it
            layer[(f"{name}-side", i)] = (_concat, [(side.name, j) for j in range(side.npartitions)])
            sides.append((f"{name}-side", i))
        for i in range(bag.npartitions):
            layer[(name, i)] = (_run_bundle, (bag.name, i), f"{name}-fn", node.full_label, *sides)
        graph = HighLevelGraph.from_collections(name, layer, dependencies=[bag, *side_bags])
        bundles = db.Bag(graph, name, bag.npartitions)
        self.counters.append(bundles.map_partitions(_counters))
        for tag, output in node.outputs.items():
            self.bags[output] = bundles.map_partitions(_outputs, None if tag in (None, "None") else tag)

    def leaves(self) -> list[Any]:
        return [bag for pcoll, bag in self.bags.items() if pcoll not in self.consumed]


class DaskRunner(PipelineRunner):
    """Runs a batch pipeline on a Dask cluster: the scheduler at `--dask_client_address` (or named in
    `--dask_scheduler_file`), or a local cluster of `--dask_workers` processes started for the run."""

    def is_fnapi_compatible(self) -> bool:
        return False

    def run_pipeline(self, pipeline: beam.Pipeline, options: PipelineOptions) -> "DaskRunnerResult":
        import dask.bag as db
        from dask.distributed import Client, LocalCluster

        dask_options = options.view_as(DaskOptions)
        ours = options.view_as(AvcurateDaskOptions)
        cluster = None
        if dask_options.address or dask_options.scheduler_file:
            connect = {"timeout": dask_options.timeout} if dask_options.timeout is not None else {}
            client = Client(
                address=dask_options.address, scheduler_file=dask_options.scheduler_file, name=dask_options.name,
                set_as_default=False, **connect,
            )  # fmt: skip
        else:
            # One thread per worker process: each runs one bundle at a time, driving one sandboxed decoder.
            cluster = LocalCluster(
                n_workers=ours.dask_workers, threads_per_worker=1, processes=True, dashboard_address=None
            )
            client = Client(cluster, set_as_default=False)

        def close() -> None:
            client.close()
            if cluster is not None:
                cluster.close()

        try:
            threads = sum(client.nthreads().values()) or 1
            partitions = dask_options.npartitions or 4 * threads  # small bundles, so a lost worker costs little
            pipeline.replace_all(dask_overrides())
            translator = _Translator(partitions)
            pipeline.visit(translator)
            client.run_on_scheduler(_expect_durations, translator.expected_durations)
            counters = db.concat(translator.counters) if translator.counters else db.from_sequence([], npartitions=1)
            # Unoptimised: Dask's optimisation renames the tasks of each collection it fuses, and a step that
            # several outputs share (Curate) would then run once per output.
            futures = client.compute(
                [*translator.leaves(), counters], retries=ours.dask_retries, optimize_graph=False
            )
        except BaseException:
            close()
            raise
        return DaskRunnerResult(futures[:-1], futures[-1], close)


def _expect_durations(durations: dict[str, str], dask_scheduler: Any = None) -> None:
    """On the scheduler: the durations to assume for task name prefixes it has not seen yet."""
    import dask

    known = dict(dask.config.get("distributed.scheduler.default-task-durations", {}))
    dask.config.set({"distributed.scheduler.default-task-durations": {**known, **durations}})


class DaskRunnerResult(PipelineResult):
    def __init__(self, futures: list[Any], counters: Any, close: Callable[[], None]) -> None:
        super().__init__(PipelineState.RUNNING)
        self.futures, self.counter_future, self.close = futures, counters, close
        self.counters: dict[tuple[str, str], int] = collections.Counter()

    def wait_until_finish(self, duration: int | None = None) -> str:
        try:
            for future in self.futures:
                future.result()  # a task's error is raised here, in the launcher
            for bundle_counters in self.counter_future.result():
                self.counters.update(bundle_counters)
            self._state = PipelineState.DONE
        except BaseException:
            self._state = PipelineState.FAILED
            raise
        finally:
            self.close()
        return self._state

    def cancel(self) -> str:
        for future in self.futures:
            future.cancel()
        self.close()
        self._state = PipelineState.CANCELLED
        return self._state

    def metrics(self) -> "_Counters":
        return _Counters(dict(self.counters))


class _Counters(MetricResults):
    """The counters of the bundles that succeeded (a retried task counts once)."""

    def __init__(self, counters: dict[tuple[str, str], int]) -> None:
        self.counters = counters

    def query(self, filter: Any = None) -> dict[str, list[Any]]:
        results = []
        for (namespace, name), value in sorted(self.counters.items()):
            key = MetricKey("", MetricName(namespace, name))
            if self.matches(filter, key):
                results.append(MetricResult(key, value, value))
        return {self.COUNTERS: results, self.DISTRIBUTIONS: [], self.GAUGES: [], self.STRINGSETS: [],
                self.BOUNDED_TRIES: []}  # fmt: skip
