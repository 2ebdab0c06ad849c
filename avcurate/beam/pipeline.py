"""Build and run the curation pipeline on any Beam runner; locally on a runner that never reaches the network."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Sequence

import apache_beam as beam
from apache_beam.options.pipeline_options import DirectOptions, PipelineOptions, StandardOptions
from apache_beam.runners.portability.fn_api_runner import FnApiRunner

from ..blocklist import Blocklist
from ..blocklist import load as load_blocklists
from ..config import Config
from ..learned import LearnedPlan, prepare_learned
from ..speakers.stage import prepare_speakers
from .dask import DASK, AvcurateDaskOptions, DaskRunner
from ..runstate import Base, staging_dir
from .blocklist import ApplyBlocklists
from .transforms import NAMESPACE, CurateSources, DropKnown, ListInputs, WriteOutputs

LOCAL = "local"


@dataclass
class RunReport:
    wall_s: float
    counters: dict[str, int]


def pipeline_options(runner: str, workers: int, beam_args: Sequence[str]) -> PipelineOptions:
    options = PipelineOptions(list(beam_args))
    if runner == LOCAL:
        direct = options.view_as(DirectOptions)
        # One Beam worker, in this process; the `workers` sources at a time run in the Curate step's own threads
        # (`CurateSources(parallel=...)`), each waiting on its own sandboxed decoder process. Beam's multi-process
        # mode costs a Beam worker process per core (about 5 s of CPU each to start); its multi-threading mode
        # corrupts data once a stage's output reaches some ten thousand elements (docs/architecture.md, Runners).
        direct.direct_num_workers = 1
        direct.direct_running_mode = "in_memory"
    elif runner == DASK:
        options.view_as(AvcurateDaskOptions).dask_workers = workers  # for the local cluster, when no address
    else:
        options.view_as(StandardOptions).runner = runner
    return options


def build(
    p: beam.Pipeline, inputs: Sequence[str], output_dir: str, cfg: Config, plan: LearnedPlan | None = None,
    parallel_sources: int = 1, base: Base | None = None, blocklist: Blocklist | None = None,
) -> Any:
    """The job graph. It carries the user's input strings only (see `ingest.check_inputs`); workers list them,
    so the graph stays the same size whether a manifest names ten videos or ten million.

    Configured models are loaded here once, before anything is decoded (`prepare_learned`, `prepare_speakers`):
    one that cannot be loaded stops the run with models.ModelUnavailable. A caller that prepared them already
    passes `plan`. With a `base` (an incremental run), only the sources it lacks are curated, and the outputs
    add to its own.

    Sources a block list names (`blocklist`, or the config's lists when None) are split off right after listing,
    never decoded, and recorded as excluded; on an incremental run, also taken out of the base's outputs."""
    staging = staging_dir(output_dir)
    if plan is None:
        plan = prepare_learned(cfg)
        prepare_speakers(cfg)
    blocklist = load_blocklists(cfg.blocklists) if blocklist is None else blocklist
    sources = p | "Inputs" >> beam.Create(list(enumerate(inputs))) | "List" >> ListInputs()
    excluded = None
    if blocklist:
        sources, excluded = sources | "BlockLists" >> ApplyBlocklists(blocklist, base.ledger if base else None)
    if base is not None:
        sources = sources | "NewSources" >> DropKnown(base.ledger)
    results = sources | "Curate" >> CurateSources(cfg, staging, plan, parallel_sources)
    if excluded is not None:
        results = (results, excluded) | "WithExcluded" >> beam.Flatten()
    return results | "Write" >> WriteOutputs(cfg, output_dir, staging, base)


def run(
    inputs: Sequence[str],
    output_dir: str,
    cfg: Config,
    *,
    runner: str = LOCAL,
    workers: int = 2,
    beam_args: Sequence[str] = (),
    plan: LearnedPlan | None = None,
    base: Base | None = None,
    blocklist: Blocklist | None = None,
) -> RunReport:
    """Run to completion on `runner` ("local", "dask", or any Beam runner name such as DataflowRunner)."""
    options = pipeline_options(runner, workers, beam_args)
    started = time.monotonic()
    # Beam's FnApiRunner, chosen explicitly: the DirectRunner would first try to download the Prism runner.
    pipeline = beam.Pipeline(runner=_runner(runner), options=options)
    build(pipeline, inputs, output_dir, cfg, plan, parallel_sources=workers if runner == LOCAL else 1, base=base,
          blocklist=blocklist)  # fmt: skip
    result = pipeline.run()
    result.wait_until_finish()
    counters: dict[str, int] = {}
    if getattr(result, "has_job", True) is False:  # a Dataflow template or job file was written; nothing ran
        return RunReport(wall_s=time.monotonic() - started, counters=counters)
    for counter in result.metrics().query(beam.metrics.MetricsFilter().with_namespace(NAMESPACE))["counters"]:
        name = counter.key.metric.name
        counters[name] = counters.get(name, 0) + (counter.committed or counter.attempted or 0)
    return RunReport(wall_s=time.monotonic() - started, counters=counters)


def _runner(name: str) -> Any:
    """Runners we build ourselves; None leaves the choice to Beam (`--runner` in the options)."""
    if name == LOCAL:
        return FnApiRunner()
    if name == DASK:
        return DaskRunner()
    return None
