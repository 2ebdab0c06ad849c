"""Block lists in the pipeline (avcurate/blocklist.py): the sources they name are split off right after listing,
before anything is probed or decoded, and become `excluded` results. What an incremental run then takes out of
the finished run it adds to is `WriteOutputs`' part (its shards, index rows and ledger rows)."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import stat
from typing import Any, Iterable, Iterator

import apache_beam as beam
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from ..blocklist import Blocklist, Match
from ..fsutil import is_local
from ..model import EXCLUDED, Source, SourceResult
from ..timings import timed
from ..writers.tables import read_table
from . import NAMESPACE
from .transforms import count_result

_CHUNK = 1 << 20


class ApplyBlocklists(beam.PTransform):
    """PCollection[Source] -> (the sources to curate, PCollection[SourceResult] of those excluded).

    Applied before an incremental run drops the sources its base already has, so a source curated earlier that
    a list now names is excluded too. With a base (`base_ledger`), its ledger rows that a list names by URI or
    source id are excluded as well, whether or not the source is listed this time: a takedown of a file deleted
    since. sha256 entries can only match the files listed this time, the only ones at hand.

    The lists travel as an attribute of the steps that apply them (see `Blocklist`), not as a side input: even a
    long one is a few MB, and it is read once, where the run starts.
    """

    def __init__(self, blocklist: Blocklist, base_ledger: str | None = None) -> None:
        super().__init__()
        self.blocklist, self.base_ledger = blocklist, base_ledger

    def expand(self, sources: Any) -> tuple[Any, Any]:
        split = sources | "Match" >> beam.ParDo(_MatchFn(self.blocklist)).with_outputs(EXCLUDED, main="sources")
        excluded = split[EXCLUDED]
        if self.base_ledger is not None:
            from_base = (
                sources.pipeline
                | "BaseLedger" >> beam.Create([self.base_ledger])
                | "ExcludedFromBase" >> beam.FlatMap(_excluded_base_rows, self.blocklist)
            )
            excluded = (
                (excluded, from_base)
                | "AllExcluded" >> beam.Flatten()
                | "BySource" >> beam.Map(lambda result: (result.source.source_id, result))
                | "SameSource" >> beam.GroupByKey()
                # Listed and in the base: both rows say the same (the same list and entry kind), keep one.
                | "OnePerSource" >> beam.MapTuple(lambda _, results: next(iter(results)))
            )
        return split.sources, excluded | "CountExcluded" >> beam.Map(_counted)


class _MatchFn(beam.DoFn):
    """A listed source on no list goes on; one on a list goes out (`EXCLUDED`) as its excluded result. With sha256
    entries, each source not named otherwise is read and hashed here, on the workers."""

    def __init__(self, blocklist: Blocklist) -> None:
        self.blocklist = blocklist

    def process(self, source: Source) -> Iterator[Any]:
        match = self.blocklist.match(source.uri, source.source_id)
        if match is None and self.blocklist.hashes_content and source.listing_error is None:
            with timed(NAMESPACE, "exclude"):  # reading and hashing the whole file
                digest, problem = content_sha256(source.uri)
            if problem is not None:
                # Fail closed: a file whose bytes cannot be checked is not curated (recorded as failed, nothing
                # decoded). A source the base already has keeps its row, as any known source does.
                yield dataclasses.replace(source, listing_error=problem)
                return
            match = self.blocklist.match_content(digest) if digest is not None else None
        if match is None:
            yield source
        else:
            yield beam.pvalue.TaggedOutput(EXCLUDED, excluded_result(source, match))


def excluded_result(source: Source, match: Match) -> SourceResult:
    return SourceResult(source=source, error=match.reason, excluded_by=match.list_name)


def content_sha256(uri: str) -> tuple[str | None, str | None]:
    """(SHA-256 hex of the file's bytes, None), streamed through Beam's FileSystems (gs://, s3://, local); (None,
    None) for a local file that does not exist (curation records it as not found: there are no bytes to check);
    (None, why) when it cannot be read."""
    if is_local(uri):
        try:
            mode = os.stat(uri.removeprefix("file://")).st_mode
        except FileNotFoundError:
            return None, None
        except OSError as e:
            return None, _unreadable(e)
        if not stat.S_ISREG(mode):  # a pipe would block for ever, a device never end
            return None, ("not a regular file (a pipe, a device or a folder), so its content cannot be compared with "
                          "the block lists' sha256 entries; it was not curated")  # fmt: skip
    digest = hashlib.sha256()
    try:
        with FileSystems.open(uri, compression_type=CompressionTypes.UNCOMPRESSED) as f:
            while chunk := f.read(_CHUNK):
                digest.update(chunk)
    except Exception as e:  # remote filesystems fail with their client's own exceptions
        return None, _unreadable(e)
    return digest.hexdigest(), None


def _unreadable(error: BaseException) -> str:
    return (f"could not read it to compare with the block lists' sha256 entries ({type(error).__name__}: {error}); "
            "it was not curated")  # fmt: skip


def _excluded_base_rows(ledger: str, blocklist: Blocklist) -> Iterator[SourceResult]:
    """The base's sources that a list names by URI or source id (the ledger has no content hash), except those
    an earlier run excluded already."""
    table = read_table(ledger, ["source_id", "uri", "status"])
    rows: Iterable[tuple[str, str, str]] = zip(*(table.column(name).to_pylist() for name in table.column_names))
    for source_id, uri, status in rows:
        match = blocklist.match(uri, source_id) if status != EXCLUDED else None
        if match is not None:
            yield excluded_result(Source(uri=uri, source_id=source_id), match)


def _counted(result: SourceResult) -> SourceResult:
    count_result(result)
    return result
