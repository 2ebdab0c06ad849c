"""Turn what the user names (files, folders, globs, manifests, gs:// / s3:// URIs) into Sources.

Listing only: ingest never opens a video, so a FIFO or a stalled network file cannot block it; the
pipeline decodes in a sandbox with timeouts. Remote inputs go through Beam's FileSystems, so any
filesystem Beam has a plugin for works, with Beam's glob syntax ('*' within one folder, '**' across
folders). A path that does not exist is kept as a Source, so the run records a "not found" failure
against it instead of silently shrinking the dataset.

Listing is split so a run's job description carries only the user's input strings: `check_inputs` runs in
the launcher and only checks, cheaply, that each input can be listed (a glob matches, a folder holds a
video, a manifest exists and has a `uri` column and a first row); `plan_input` (matching, walking folders)
and `read_manifest_part` (a manifest's rows, one Parquet row group at a time) run on the pipeline's
workers. `expand_inputs` does all of it in one process, for library use.
"""

from __future__ import annotations

import datetime
import decimal
import json
import math
import os
import posixpath
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import IO, Any

import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from .model import Source

VIDEO_EXTENSIONS = frozenset(
    {".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v", ".mpg", ".mpeg", ".ts", ".mts", ".m2ts", ".flv", ".wmv", ".3gp"}
)
MANIFEST_EXTENSIONS = frozenset({".csv", ".parquet", ".jsonl", ".ndjson", ".json"})
URI_COLUMN = "uri"
_GLOB_CHARS = frozenset("*?[")
_LOCAL_SCHEME = "file://"
_GLOB_HELP = (
    "globs use Beam's syntax: '*' matches within one folder, '**' across folders "
    "(e.g. 'videos/**.mp4'); quote the pattern so your shell does not expand it"
)

Meta = dict[str, Any]


class IngestError(ValueError):
    """An input that cannot be listed: says which input, and how to fix it."""


@dataclass(frozen=True)
class ManifestPart:
    """What one worker reads of a manifest: the whole file, or one Parquet row group."""

    uri: str
    row_group: int | None = None
    first_row: int = 1  # the manifest row number of the part's first row, for messages


Listed = str | ManifestPart  # what planning an input gives: a video uri, or manifest rows still to read


def expand_inputs(inputs: Iterable[str]) -> list[Source]:
    """Sources for every input, sorted by uri and de-duplicated.

    Each input is one of: a video file; a folder (scanned recursively for VIDEO_EXTENSIONS); a glob
    (every match is taken, whatever its extension; a glob ending in a manifest extension lists manifests);
    a manifest (.csv, .parquet, .jsonl/.ndjson, .json as lines or an array) with a `uri` column, other
    columns carried into `Source.meta`. A uri listed twice keeps the first meta value of each key.
    """
    listings: dict[str, list[Meta]] = {}
    errors: dict[str, str] = {}
    for raw in check_inputs(inputs):
        for item in plan_input(raw):
            for uri, meta, error in list_item(item):
                listings.setdefault(uri, []).append(meta)
                if error:
                    errors[uri] = error
    return [Source.from_uri(uri, merge_metas(listings[uri]), errors.get(uri)) for uri in sorted(listings)]


def check_inputs(inputs: Iterable[str]) -> list[str]:
    """The inputs, local paths made absolute, once each is known to be listable; IngestError otherwise.

    Cheap: a glob's first match, a folder's first video, a manifest's header or footer; nothing is listed
    whole, so the launcher's work does not grow with the dataset.
    """
    if isinstance(inputs, str):
        raise TypeError("inputs must be a list of inputs, not a single string")
    checked = [_check_one(raw) for raw in inputs]
    if not checked:
        raise IngestError("no inputs given: name video files, folders, globs or manifests")
    return checked


def plan_input(raw: str) -> Iterator[Listed]:
    """What one input names, in listing order: video uris, and the manifest parts still to read."""
    if not raw or not raw.strip():
        raise IngestError("an input is empty: name a video file, folder, glob or manifest")
    if is_remote(raw):
        yield from _expand_remote(raw)
    else:
        yield from _expand_local(raw)


def list_item(item: Listed) -> Iterator[tuple[str, Meta, str | None]]:
    """(uri, meta, listing error) of a planned item: a video uri as is, a manifest part's rows."""
    if isinstance(item, ManifestPart):
        yield from read_manifest_part(item)
    else:
        yield item, {}, None


def merge_metas(metas: Iterable[Meta]) -> Meta:
    """One uri's metas, in listing order, merged: the first value of each key wins."""
    merged: Meta = {}
    for meta in metas:
        for key, value in meta.items():
            merged.setdefault(key, value)
    return merged


def open_uri(uri: str, mode: str = "rb") -> IO[bytes]:
    """A binary file object: Beam's FileSystems for remote URIs, plain `open` for local paths.

    Beam's default would decompress by extension (a `.gz` uri would yield inflated bytes); media and
    manifests are read as stored.
    """
    if mode not in ("rb", "wb"):
        raise ValueError(f"open_uri supports modes 'rb' and 'wb', not {mode!r}")
    if is_remote(uri):
        if mode == "rb":
            return FileSystems.open(uri, compression_type=CompressionTypes.UNCOMPRESSED)
        return FileSystems.create(uri, compression_type=CompressionTypes.UNCOMPRESSED)
    return open(_local_path(uri), mode)


def is_remote(uri: str) -> bool:
    """True for scheme://... URIs that Beam's FileSystems serves (file:// counts as local)."""
    return not uri.startswith(_LOCAL_SCHEME) and FileSystems.get_scheme(uri) is not None


def _is_video_name(uri: str) -> bool:
    return posixpath.splitext(uri)[1].lower() in VIDEO_EXTENSIONS


def _is_manifest_name(uri: str) -> bool:
    return posixpath.splitext(uri)[1].lower() in MANIFEST_EXTENSIONS


def _has_glob(text: str) -> bool:
    return any(c in _GLOB_CHARS for c in text)


def _local_path(uri: str) -> str:
    path = uri[len(_LOCAL_SCHEME) :] if uri.startswith(_LOCAL_SCHEME) else uri
    return os.path.abspath(os.path.expanduser(path))


def _check_one(raw: str) -> str:
    if not raw or not raw.strip():
        raise IngestError("an input is empty: name a video file, folder, glob or manifest")
    if is_remote(raw):
        _check_remote(raw)
        return raw
    path = _local_path(raw)
    if os.path.isdir(path):
        next(_local_videos(path, raw))
    elif os.path.lexists(path):
        if _is_manifest_name(path):
            _check_manifest(path)
    elif _has_glob(raw):
        _match(path, raw, limit=1)
    elif _is_manifest_name(path):
        raise IngestError(f"manifest {raw!r} not found (looked for {path})")
    return path


def _check_remote(uri: str) -> None:
    if _has_glob(uri):
        _match(uri, uri, limit=1)
    elif uri.endswith("/"):
        next(_remote_folder(uri, uri))
    elif _remote_exists(uri):
        if _is_manifest_name(uri):
            _check_manifest(uri)
    elif _is_manifest_name(uri):
        raise IngestError(f"manifest {uri!r} not found (check the path and your credentials for its filesystem)")


def _expand_local(raw: str) -> Iterator[Listed]:
    path = _local_path(raw)
    if os.path.isdir(path):
        yield from _local_videos(path, raw)
    elif os.path.lexists(path):  # lexists: a broken symlink is reported by the pipeline, not dropped here
        yield from _manifest_parts(path) if _is_manifest_name(path) else [path]
    elif _has_glob(raw):
        yield from _expand_glob(path, raw)
    elif _is_manifest_name(path):
        raise IngestError(f"manifest {raw!r} not found (looked for {path})")
    else:
        yield path


def _local_videos(folder: str, raw: str) -> Iterator[str]:
    """Every video under the folder, lazily (checking needs only the first); IngestError if there is none."""

    # Walked directly rather than through FileSystems.match: Beam patterns cannot quote metacharacters,
    # so a folder named e.g. "[raw]" would not match itself.
    def fail(err: OSError) -> None:
        raise IngestError(f"cannot list folder {raw!r}: {err}") from err

    found = False
    for dirpath, _, names in os.walk(folder, onerror=fail):
        for name in names:
            if _is_video_name(name):
                found = True
                yield os.path.join(dirpath, name)
    if not found:
        raise IngestError(_no_videos_message(raw))


def _expand_remote(uri: str) -> Iterator[Listed]:
    if _has_glob(uri):
        yield from _expand_glob(uri, uri)
    elif uri.endswith("/"):
        yield from _remote_folder(uri, uri)
    elif _remote_exists(uri):
        yield from _manifest_parts(uri) if _is_manifest_name(uri) else [uri]
    elif _is_manifest_name(uri):
        raise IngestError(f"manifest {uri!r} not found (check the path and your credentials for its filesystem)")
    else:
        # Object stores have no real folders: "gs://bucket/videos" may be a prefix with videos under it.
        under = [path for path in _match(uri + "/**", uri, allow_empty=True) if _is_video_name(path)]
        yield from under or [uri]


def _remote_folder(prefix: str, raw: str) -> Iterator[str]:
    found = [path for path in _match(prefix + "**", raw, allow_empty=True) if _is_video_name(path)]
    if not found:
        raise IngestError(_no_videos_message(raw))
    yield from found


def _expand_glob(pattern: str, raw: str) -> Iterator[Listed]:
    for path in _match(pattern, raw):
        yield from _manifest_parts(path) if _is_manifest_name(pattern) else [path]


def _match(pattern: str, raw: str, *, limit: int | None = None, allow_empty: bool = False) -> list[str]:
    """Paths matching the pattern (at most `limit`); IngestError when none match, unless `allow_empty`."""
    try:
        (result,) = FileSystems.match([pattern], limits=[limit])
    except Exception as e:  # Beam wraps every listing failure (credentials, missing plugin) differently
        raise IngestError(
            f"could not list {raw!r}: {e}. For gs:// or s3:// install avcurate[gcp] or avcurate[aws] "
            "and check your credentials"
        ) from e
    if not result.metadata_list and not allow_empty:
        raise IngestError(f"{raw!r} matched no files; check the pattern: {_GLOB_HELP}")
    return [meta.path for meta in result.metadata_list]


def _remote_exists(uri: str) -> bool:
    try:
        return FileSystems.exists(uri)
    except Exception as e:  # as in _match: the plugin's own error type varies
        raise IngestError(
            f"could not check {uri!r}: {e}. Install avcurate[gcp] or avcurate[aws] and check your credentials"
        ) from e


def _no_videos_message(raw: str) -> str:
    return (
        f"folder {raw!r} holds no video files (looked for {', '.join(sorted(VIDEO_EXTENSIONS))}, any case); "
        f"name the files or a glob instead if yours have other extensions ({_GLOB_HELP})"
    )


def _manifest_parts(uri: str) -> list[ManifestPart]:
    """A Parquet manifest's row groups, each read on its own (its footer says where they are); else the file."""
    if not is_remote(uri):
        _require_regular_file(uri)
    if posixpath.splitext(uri)[1].lower() != ".parquet":
        return [ManifestPart(uri)]
    metadata = _parquet_metadata(uri)
    _require_uri_column(uri, set(metadata.schema.names), metadata.num_rows > 0)
    parts, first_row = [], 1
    for group in range(metadata.num_row_groups):
        parts.append(ManifestPart(uri, group, first_row))
        first_row += metadata.row_group(group).num_rows
    return parts


def _check_manifest(uri: str) -> None:
    """The checks a manifest's head allows: a regular file, a `uri` column, at least one row."""
    if not is_remote(uri):
        _require_regular_file(uri)
    ext = posixpath.splitext(uri)[1].lower()
    if ext == ".parquet":
        metadata = _parquet_metadata(uri)
        _require_uri_column(uri, set(metadata.schema.names), metadata.num_rows > 0)
    elif ext == ".csv":
        try:
            with open_uri(uri) as f:
                reader = pa_csv.open_csv(f)
                columns = set(reader.schema.names)
                has_rows = any(batch.num_rows for batch in reader)
        except (OSError, pa.ArrowException) as e:
            raise IngestError(f"cannot read manifest {uri!r}: {e}") from e
        _require_uri_column(uri, columns, has_rows)
    elif ext == ".json":  # may be one array, which can only be parsed whole
        next(read_manifest_part(ManifestPart(uri)))
    else:  # JSON lines: the first object is enough
        _check_json_lines(uri)


def _check_json_lines(uri: str) -> None:
    try:
        with open_uri(uri) as f:
            first = next((line for line in f if line.strip()), b"")
    except OSError as e:
        raise IngestError(f"cannot read manifest {uri!r}: {e}") from e
    rows = _json_rows(first.decode("utf-8-sig"), uri, as_array=False)
    _require_uri_column(uri, set(rows[0]) if rows else set(), bool(rows))


def _parquet_metadata(uri: str) -> pq.FileMetaData:
    try:
        with open_uri(uri) as f:
            return pq.ParquetFile(f).metadata
    except (OSError, pa.ArrowException) as e:
        raise IngestError(f"cannot read manifest {uri!r}: {e}") from e


def _require_uri_column(uri: str, columns: set[str], has_rows: bool) -> None:
    if columns and URI_COLUMN not in columns:
        raise IngestError(
            f"manifest {uri!r} has no {URI_COLUMN!r} column (columns: {sorted(columns)}); "
            f"add a column named {URI_COLUMN!r} holding each video's path or URI"
        )
    if not has_rows:
        raise IngestError(f"manifest {uri!r} lists no videos")


def read_manifest_part(part: ManifestPart) -> Iterator[tuple[str, Meta, str | None]]:
    """(uri, meta, error) of each row of the part, in manifest order; IngestError on a bad manifest.

    A row that names no video becomes `{manifest}#row={n}` with its error, so it is one failed ledger row and the
    rest of the manifest runs (a bad row found by a worker can no longer stop the launcher).
    """
    uri = part.uri
    columns, rows = _manifest_rows(part)
    _require_uri_column(uri, columns, bool(rows) or part.row_group is not None)
    for number, row in enumerate(rows, start=part.first_row):
        value = row.pop(URI_COLUMN, None)
        if not isinstance(value, str) or not value.strip():
            error = f"manifest row {number}: {URI_COLUMN!r} is empty or not a string ({value!r}); give the video's path"
            yield f"{uri}#row={number}", _json_safe_meta(row), error
        else:
            yield _resolve(value, uri), _json_safe_meta(row), None


def _require_regular_file(path: str) -> None:
    """A FIFO or device named like a manifest would block the read; a dangling link cannot be read at all."""
    try:
        mode = os.stat(path).st_mode
    except OSError as e:
        raise IngestError(f"cannot read manifest {path!r}: {e}") from e
    if not stat.S_ISREG(mode):
        raise IngestError(f"manifest {path!r} is not a regular file")


def _manifest_rows(part: ManifestPart) -> tuple[set[str], list[Meta]]:
    """Column names and rows. Columns come from the schema where the format has one, so a manifest
    without rows still reports its missing `uri` column."""
    uri = part.uri
    ext = posixpath.splitext(uri)[1].lower()
    try:
        with open_uri(uri) as f:
            if ext == ".csv":
                # The uri column stays text: a name like 0001 must not turn into the integer 1.
                options = pa_csv.ConvertOptions(strings_can_be_null=True, column_types={URI_COLUMN: pa.string()})
                table = pa_csv.read_csv(f, convert_options=options)
            elif ext == ".parquet":
                parquet = pq.ParquetFile(f)
                table = parquet.read() if part.row_group is None else parquet.read_row_group(part.row_group)
            else:
                rows = _json_rows(f.read().decode("utf-8-sig"), uri, as_array=ext == ".json")
                return {key for row in rows for key in row}, rows
    except (OSError, pa.ArrowException, UnicodeDecodeError) as e:
        raise IngestError(f"cannot read manifest {uri!r}: {e}") from e
    return set(table.column_names), table.to_pylist()


def _json_rows(text: str, uri: str, *, as_array: bool) -> list[Meta]:
    """JSON lines; a .json file may also hold one array of objects."""
    try:
        if as_array and text.lstrip().startswith("["):
            items = list(enumerate(json.loads(text), start=1))
        else:
            items = [(n, json.loads(line)) for n, line in enumerate(text.splitlines(), start=1) if line.strip()]
    except json.JSONDecodeError as e:
        raise IngestError(f"manifest {uri!r} is not valid JSON lines: {e}") from e
    for n, item in items:
        if not isinstance(item, dict):
            raise IngestError(f"manifest {uri!r}, entry {n}: expected an object like {{\"uri\": ...}}, got {item!r}")
    return [item for _, item in items]


def _resolve(value: str, manifest_uri: str) -> str:
    """A manifest entry as a uri: remote kept, local made absolute, relative taken from the manifest's folder."""
    if is_remote(value):
        return value
    if value.startswith(_LOCAL_SCHEME) or os.path.isabs(value):
        return _local_path(value)
    if is_remote(manifest_uri):
        return FileSystems.join(FileSystems.split(manifest_uri)[0], value)
    return os.path.normpath(os.path.join(os.path.dirname(manifest_uri), value))


def _json_safe_meta(row: Meta) -> Meta:
    """Manifest columns as plain JSON values; missing cells (None, NaN) are dropped, not carried as nulls."""
    meta = {}
    for key, value in row.items():
        safe = _json_safe(value)
        if safe is not None:
            meta[str(key)] = safe
    return meta


def _json_safe(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None  # JSON has no NaN or infinity
    if isinstance(value, decimal.Decimal):
        return _json_safe(float(value))
    if isinstance(value, (datetime.date, datetime.time)):  # datetime is a date
        return value.isoformat()
    if isinstance(value, datetime.timedelta):
        return value.total_seconds()
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return str(value)
