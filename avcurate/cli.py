"""avcurate command line: `avcurate run` curates videos into shards, `avcurate inspect` summarises an output,
`avcurate report` rebuilds its report.html."""

from __future__ import annotations

import argparse
import atexit
import json
import logging
import os
import sys
import time
from typing import Sequence

from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import GoogleCloudOptions

from . import progress
from .beam.dask import DASK
from .beam.pipeline import LOCAL, pipeline_options, run
from .blocklist import load as load_blocklists
from .config import Config, ConfigError
from .fsutil import StorageError
from .ingest import IngestError, check_inputs
from .learned import prepare_learned
from .report import NotAnOutput, write_report
from .runrecord import run_record, write_run_record
from .runstate import OutputError, prepare_output
from .speakers.stage import prepare_speakers
from .sandbox import exception_chain
from .summary import format_summary, summarize


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="avcurate", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser(
        "run",
        help="curate raw videos into WebDataset shards, a Parquet index and a ledger",
        description="Curate raw videos into clean AV clips. Arguments avcurate does not know are passed to Beam "
        "(e.g. --project, --region, --temp_location for --runner DataflowRunner).",
    )
    run.add_argument("--config", help="YAML config (default: built-in defaults; see pipelines/configs/)")
    run.add_argument(
        "--input",
        action="append",
        required=True,
        help="a file, folder, glob, gs:// or s3:// path, or a .csv/.parquet/.jsonl manifest with a 'uri' column; "
        "repeatable",
    )
    run.add_argument("--output", required=True, help="output folder (local, gs:// or s3://)")
    run.add_argument(
        "--runner", default="local",
        help="'local' (default: Beam's FnApiRunner, no network), 'dask' (a Dask cluster: --dask-address, or a local "
        "one of --workers processes) or any Beam runner (DataflowRunner, FlinkRunner, SparkRunner, PrismRunner)",
    )  # fmt: skip
    run.add_argument(
        "--workers", type=int, default=2,
        help="local workers (or local Dask worker processes), each driving its own sandboxed decoder (default 2)",
    )  # fmt: skip
    run.add_argument(
        "--dask-address", help="with --runner dask: the scheduler, e.g. tcp://HOST:8786 (default: a local cluster)"
    )
    run.add_argument("--overwrite", action="store_true", help="replace the shards, index and ledger of an earlier run")
    run.add_argument(
        "--incremental", action="store_true",
        help="add to the finished run in --output only the inputs it does not have yet: its shards stay, new clips go "
        "to new shards numbered after them, the index and ledger gain the new rows (same config required)",
    )  # fmt: skip
    run.add_argument(
        "--blocklist", action="append", default=[], metavar="FILE",
        help="a block list (opt-outs, takedowns): one URI, source id or sha256:<hex> per line, # comments; its "
        "sources are never decoded and are recorded as excluded (with --incremental, taken out of the output). "
        "Named after the file; repeatable",
    )  # fmt: skip
    run.add_argument("--json", action="store_true", help="print the summary as JSON")
    run.add_argument(
        "--quiet", action="store_true",
        help="no progress display (by default: live on a terminal, a line a minute otherwise; local runner)",
    )  # fmt: skip
    run.add_argument(
        "--progress-every", type=_positive_seconds, default=progress.LOG_EVERY_S, metavar="SECONDS",
        help="seconds between progress lines when stderr is not a terminal (default %(default)g)",
    )  # fmt: skip
    inspect = commands.add_parser("inspect", help="summarise an output folder")
    inspect.add_argument("output")
    inspect.add_argument("--json", action="store_true", help="print the summary as JSON")
    report = commands.add_parser("report", help="rebuild an output folder's report.html (and report_files/)")
    report.add_argument("output")
    return parser


def _positive_seconds(text: str) -> float:
    seconds = float(text)
    if not seconds > 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number of seconds")
    return seconds


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args, beam_args = parser.parse_known_args(argv)
    if getattr(args, "dask_address", None):
        if args.runner != DASK:
            parser.error("--dask-address needs --runner dask")
        beam_args = [*beam_args, f"--dask_client_address={args.dask_address}"]
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.command == "inspect":
        if beam_args:
            parser.error(f"unrecognised arguments: {' '.join(beam_args)}")
        summary = summarize(args.output)
        print(json.dumps(summary, indent=2, ensure_ascii=False) if args.json else format_summary(summary))
        return 0
    if args.command == "report":
        if beam_args:
            parser.error(f"unrecognised arguments: {' '.join(beam_args)}")
        try:
            print(write_report(args.output))
        except NotAnOutput as e:
            print(f"avcurate: {e}", file=sys.stderr)
            return 2
        return 0
    # Listing inputs and checking the output happen before the pipeline exists: give Beam's FileSystems its
    # options now (an S3 endpoint and keys, a GCP project, ...).
    FileSystems.set_options(pipeline_options(args.runner, args.workers, beam_args))
    try:
        cfg = Config.load(args.config)
        inputs = check_inputs(args.input)
        blocklist = load_blocklists(cfg.blocklists, args.blocklist)
    except (ConfigError, IngestError, OSError) as e:
        print(f"avcurate: {e}", file=sys.stderr)
        return 2
    try:
        plan = prepare_learned(cfg)  # before the output is touched or anything decoded
        prepare_speakers(cfg)
    except Exception as e:
        if type(e).__name__ != "ModelUnavailable":  # not imported here: avcurate.models imports torch
            raise
        print(f"avcurate: {e}", file=sys.stderr)
        return 2
    output = args.output.rstrip("/")
    template = pipeline_options(args.runner, args.workers, beam_args).view_as(GoogleCloudOptions).template_location
    if template:  # Dataflow translates the job and writes it there; nothing runs, --output is not touched
        run(inputs, output, cfg, runner=args.runner, workers=args.workers, beam_args=beam_args, plan=plan,
            blocklist=blocklist)  # fmt: skip
        print(f"avcurate: Dataflow job written to {template}; nothing ran (launch it with gcloud dataflow jobs run)")
        return 0
    try:
        prepared = prepare_output(output, cfg.hash, inputs, overwrite=args.overwrite, incremental=args.incremental,
                                  blocklists=blocklist.digest)  # fmt: skip
    except (OutputError, StorageError) as e:
        print(f"avcurate: {e}", file=sys.stderr)
        return 2
    if prepared.resumed:
        print(f"avcurate: resuming the unfinished run in {output}: finished sources are not decoded again",
              file=sys.stderr)  # fmt: skip
    started = time.time()
    # The local runner runs every stage in this process, so they can report to a live display; other runners
    # keep the same numbers as Beam counters (docs/distributed.md, "Watching a run").
    mode = progress.display_mode(sys.stderr, args.quiet) if args.runner == LOCAL else "quiet"
    try:
        with progress.RunProgress(mode, every_s=args.progress_every) as shown:
            progress.activate(shown)
            report = run(inputs, output, cfg, runner=args.runner, workers=args.workers, beam_args=beam_args,
                         plan=plan, base=prepared.base, blocklist=blocklist)  # fmt: skip
    except Exception as e:
        problem = _storage_problem(e)
        if problem is None:
            raise
        print(f"avcurate: the run failed: {problem}", file=sys.stderr)
        return 1
    finally:
        progress.activate(None)
    record = run_record(
        command=["avcurate", *(argv if argv is not None else sys.argv[1:])], runner=args.runner,
        workers=args.workers, inputs=inputs, started=started, wall_s=report.wall_s, resumed=prepared.resumed,
        incremental=args.incremental, cfg=cfg, counters=report.counters,
    )  # fmt: skip
    write_run_record(output, record)
    if args.runner != LOCAL:
        # Beam stops the job servers it started (a Prism runner process, for one) in exit handlers, which
        # exit_after skips; the local runner starts none.
        atexit._run_exitfuncs()
    summary = summarize(output)
    try:
        page = write_report(output, summary=summary)
    except Exception as e:  # the data is written and complete: say what failed rather than lose the run's status
        logging.exception("writing the report failed")
        print(f"avcurate: the run finished, but its report could not be written ({type(e).__name__}: {e}); rebuild "
              f"it with `avcurate report {output}`", file=sys.stderr)  # fmt: skip
    else:
        print(f"avcurate: report written to {page}", file=sys.stderr)
    if args.json:
        print(json.dumps({**summary, "wall_s": round(report.wall_s, 2), "counters": report.counters}, indent=2))
    else:
        print(format_summary(summary, report.wall_s))
    if summary["inputs"] and summary["inputs_failed"] == summary["inputs"]:
        print(f"avcurate: every input failed ({summary['inputs']} of {summary['inputs']}); see the failures above",
              file=sys.stderr)  # fmt: skip
        return 1
    return 0


def _storage_problem(error: BaseException) -> str | None:
    """The message of a StorageError that stopped the run, however the runner wrapped it (some re-raise it as
    is, others as text in a RuntimeError)."""
    for e in exception_chain(error):
        if isinstance(e, StorageError):
            return str(e)
        text = str(e)
        marker = f"{StorageError.__name__}: "
        if marker in text:
            return text[text.rindex(marker) + len(marker) :].strip().splitlines()[0]
    return None


def exit_after(code: int) -> None:
    """Leave without interpreter teardown once the work is done and reported.

    The local runner's gRPC threads can abort the process at teardown ("terminate called without an active
    exception", exit 134) after a fully successful run; exiting directly keeps the real exit status.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def entry() -> None:
    exit_after(main())


if __name__ == "__main__":
    entry()
