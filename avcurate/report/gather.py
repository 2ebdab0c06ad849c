"""What a report shows, read from an output folder alone: the run's record (`run.json`, when the run wrote one),
the ledger and the index (the columns a report needs, column-wise in Arrow) and the summary `inspect` prints.

An index has a row per clip, millions in a large run: only the few columns every clip is counted by are held for
the whole report (status, reasons, source id and the scores). The manifest columns and zero-shot probabilities
are read dictionary-encoded (one value per source, or per distinct value) when their part is drawn, and the
example clips' other columns for those rows alone (`indexfile`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from ..fsutil import filesystems
from ..model import FAILED, KEPT, REJECTED
from ..runrecord import read_run_record
from ..runstate import unfinished
from ..summary import summarize
from . import NotAnOutput
from .indexfile import read_columns
from .scores import INDEX_COLUMNS

_STATUS_ORDER = (KEPT, REJECTED, FAILED)  # then any other status (such as "excluded"), by name
_LEDGER_COLUMNS = ["uri", "status", "error_type", "error", "probe_duration_s", "excluded_by"]  # v2 has no excluded_by


@dataclass(frozen=True)
class Failure:
    uri: str
    error: str


@dataclass
class OutputData:
    output: str
    run: dict[str, Any] | None  # run.json; None for an output written before runs recorded it
    summary: dict[str, Any]  # what `avcurate inspect --json` prints
    inputs_by_status: dict[str, int]  # kept, rejected, failed first, then any other status
    media_s_by_status: dict[str, float]
    excluded_by: dict[str, int]  # why inputs were excluded, where the ledger says (its `excluded_by` column)
    failures: dict[str, list[Failure]]  # by error_type, each list in URI order
    index: pa.Table  # one row per clip: status, reasons, source_id and the score columns (`INDEX_COLUMNS`)

    @property
    def index_path(self) -> str:
        return f"{self.output}/index.parquet"

    @property
    def config(self) -> dict[str, Any] | None:
        return None if self.run is None else self.run.get("config")


def gather(output_dir: str, summary: dict[str, Any] | None = None) -> OutputData:
    """`summary`: what `summarize` gives for this output, when the caller has it already."""
    out = output_dir.rstrip("/")
    fs = filesystems()
    missing = [name for name in ("index.parquet", "ledger.parquet") if not fs.exists(f"{out}/{name}")]
    if missing:
        raise NotAnOutput(f"{out} is not a finished avcurate output: it has no {' or '.join(missing)}")
    if unfinished(out):
        raise NotAnOutput(f"{out} holds an unfinished run; finish it (run the same command again) before reporting on it")
    ledger = read_columns(f"{out}/ledger.parquet", _LEDGER_COLUMNS)
    inputs = {row["values"]: row["counts"] for row in pc.value_counts(ledger["status"]).to_pylist()}
    order = [s for s in _STATUS_ORDER if s in inputs] + sorted(s for s in inputs if s not in _STATUS_ORDER)
    return OutputData(
        output=out,
        run=read_run_record(out),
        summary=summary if summary is not None else summarize(out),
        inputs_by_status={status: inputs[status] for status in order},
        media_s_by_status=_media_seconds(ledger, order),
        excluded_by=_excluded_by(ledger),
        failures=_failures(ledger),
        index=read_columns(f"{out}/index.parquet", ["status", "reasons", "source_id", *INDEX_COLUMNS]),
    )


def _media_seconds(ledger: pa.Table, statuses: list[str]) -> dict[str, float]:
    seconds = {}
    for status in statuses:
        durations = pc.filter(ledger["probe_duration_s"], pc.equal(ledger["status"], status))
        seconds[status] = pc.sum(durations).as_py() or 0.0
    return seconds


def _excluded_by(ledger: pa.Table) -> dict[str, int]:
    if "excluded_by" not in ledger.column_names:
        return {}
    reasons = ledger["excluded_by"].drop_null()
    counts = {str(row["values"]): row["counts"] for row in pc.value_counts(reasons).to_pylist()} if len(reasons) else {}
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def _failures(ledger: pa.Table) -> dict[str, list[Failure]]:
    failed = ledger.filter(pc.equal(ledger["status"], FAILED)).select(["uri", "error_type", "error"])
    grouped: dict[str, list[Failure]] = {}
    for row in failed.to_pylist():
        grouped.setdefault(row["error_type"] or "unknown", []).append(Failure(row["uri"], row["error"] or ""))
    return dict(sorted(grouped.items(), key=lambda kv: (-len(kv[1]), kv[0])))
