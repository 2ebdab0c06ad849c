"""Turn what the user names (files, folders, globs, manifests, gs:// / s3:// URIs) into Sources.

Listing only: ingest never opens a video, so a FIFO or a stalled network file cannot block it; the
pipeline decodes in a sandbox with timeouts. Remote inputs go through Beam's FileSystems, so any
filesystem Beam has a plugin for works, with Beam's glob syntax ('*' within one folder, '**' across
folders). A path that does not exist is kept as a Source, so the run records a "not found" failure
against it instead of silently shrinking the dataset.
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


def expand_inputs(inputs: Iterable[str]) -> list[Source]:
    """Sources for every input, sorted by uri and de-duplicated.

    Each input is one of: a video file; a folder (scanned recursively for VIDEO_EXTENSIONS); a glob
    (every match is taken, whatever its extension; a glob ending in a manifest extension lists manifests);
    a manifest (.csv, .parquet, .jsonl/.ndjson, .json as lines or an array) with a `uri` column, other
    columns carried into `Source.meta`. A uri listed twice keeps the first meta value of each key.
    """
    if isinstance(inputs, str):
        raise TypeError("expand_inputs takes a list of inputs, not a single string")
    merged: dict[str, Meta] = {}
    for raw in inputs:
        for uri, meta in _expand_one(raw):
            known = merged.setdefault(uri, {})
            for key, value in meta.items():
                known.setdefault(key, value)
    if not merged:
        raise IngestError("no inputs given: name video files, folders, globs or manifests")
    return [Source.from_uri(uri, merged[uri]) for uri in sorted(merged)]


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


def _expand_one(raw: str) -> Iterator[tuple[str, Meta]]:
    if not raw or not raw.strip():
        raise IngestError("an input is empty: name a video file, folder, glob or manifest")
    if is_remote(raw):
        yield from _expand_remote(raw)
    else:
        yield from _expand_local(raw)


def _expand_local(raw: str) -> Iterator[tuple[str, Meta]]:
    path = _local_path(raw)
    if os.path.isdir(path):
        yield from _scan_local_folder(path, raw)
    elif os.path.lexists(path):  # lexists: a broken symlink is reported by the pipeline, not dropped here
        yield from _read_manifest(path) if _is_manifest_name(path) else [(path, {})]
    elif _has_glob(raw):
        yield from _expand_glob(path, raw)
    elif _is_manifest_name(path):
        raise IngestError(f"manifest {raw!r} not found (looked for {path})")
    else:
        yield path, {}


def _scan_local_folder(folder: str, raw: str) -> Iterator[tuple[str, Meta]]:
    # Walked directly rather than through FileSystems.match: Beam patterns cannot quote metacharacters,
    # so a folder named e.g. "[raw]" would not match itself.
    def fail(err: OSError) -> None:
        raise IngestError(f"cannot list folder {raw!r}: {err}") from err

    found = [
        os.path.join(dirpath, name)
        for dirpath, _, names in os.walk(folder, onerror=fail)
        for name in names
        if _is_video_name(name)
    ]
    if not found:
        raise IngestError(_no_videos_message(raw))
    yield from ((path, {}) for path in found)


def _expand_remote(uri: str) -> Iterator[tuple[str, Meta]]:
    if _has_glob(uri):
        yield from _expand_glob(uri, uri)
    elif uri.endswith("/"):
        yield from _remote_folder(uri, uri)
    elif _remote_exists(uri):
        yield from _read_manifest(uri) if _is_manifest_name(uri) else [(uri, {})]
    elif _is_manifest_name(uri):
        raise IngestError(f"manifest {uri!r} not found (check the path and your credentials for its filesystem)")
    else:
        # Object stores have no real folders: "gs://bucket/videos" may be a prefix with videos under it.
        under = [path for path in _match(uri + "/**", uri) if _is_video_name(path)]
        yield from ((path, {}) for path in under) if under else [(uri, {})]


def _remote_folder(prefix: str, raw: str) -> Iterator[tuple[str, Meta]]:
    found = [path for path in _match(prefix + "**", raw) if _is_video_name(path)]
    if not found:
        raise IngestError(_no_videos_message(raw))
    yield from ((path, {}) for path in found)


def _expand_glob(pattern: str, raw: str) -> Iterator[tuple[str, Meta]]:
    found = _match(pattern, raw)
    if not found:
        raise IngestError(f"{raw!r} matched no files; check the pattern: {_GLOB_HELP}")
    for path in found:
        yield from _read_manifest(path) if _is_manifest_name(pattern) else [(path, {})]


def _match(pattern: str, raw: str) -> list[str]:
    try:
        (result,) = FileSystems.match([pattern])
    except Exception as e:  # Beam wraps every listing failure (credentials, missing plugin) differently
        raise IngestError(
            f"could not list {raw!r}: {e}. For gs:// or s3:// install avcurate[gcp] or avcurate[aws] "
            "and check your credentials"
        ) from e
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


def _read_manifest(uri: str) -> Iterator[tuple[str, Meta]]:
    if not is_remote(uri):
        _require_regular_file(uri)
    columns, rows = _manifest_rows(uri)
    if columns and URI_COLUMN not in columns:
        raise IngestError(
            f"manifest {uri!r} has no {URI_COLUMN!r} column (columns: {sorted(columns)}); "
            f"add a column named {URI_COLUMN!r} holding each video's path or URI"
        )
    if not rows:
        raise IngestError(f"manifest {uri!r} lists no videos")
    for number, row in enumerate(rows, start=1):
        value = row.pop(URI_COLUMN, None)
        if not isinstance(value, str) or not value.strip():
            raise IngestError(f"manifest {uri!r}, row {number}: {URI_COLUMN!r} is empty or not a string ({value!r})")
        yield _resolve(value, uri), _json_safe_meta(row)


def _require_regular_file(path: str) -> None:
    """A FIFO or device named like a manifest would block the read; a dangling link cannot be read at all."""
    try:
        mode = os.stat(path).st_mode
    except OSError as e:
        raise IngestError(f"cannot read manifest {path!r}: {e}") from e
    if not stat.S_ISREG(mode):
        raise IngestError(f"manifest {path!r} is not a regular file")


def _manifest_rows(uri: str) -> tuple[set[str], list[Meta]]:
    """Column names and rows. Columns come from the schema where the format has one, so a manifest
    without rows still reports its missing `uri` column."""
    ext = posixpath.splitext(uri)[1].lower()
    try:
        with open_uri(uri) as f:
            if ext == ".csv":
                # The uri column stays text: a name like 0001 must not turn into the integer 1.
                options = pa_csv.ConvertOptions(strings_can_be_null=True, column_types={URI_COLUMN: pa.string()})
                table = pa_csv.read_csv(f, convert_options=options)
            elif ext == ".parquet":
                table = pq.read_table(f)
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
