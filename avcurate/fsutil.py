"""Reading and writing through Beam's FileSystems, so outputs can live on gs://, s3:// or local disk alike."""

from __future__ import annotations

import json
import os
from typing import Any

# Beam configures its FileSystems (an S3 endpoint and keys, a GCP project, ...) from the pipeline options, in its
# own processes only. Elsewhere (a sandboxed decoder, a training loader) they come from this variable: JSON such
# as {"s3_endpoint_url": "http://minio:9000"}; the decoders get their worker's options through it.
OPTIONS_ENV = "AVCURATE_FILESYSTEM_OPTIONS"
_configured = False


class StorageError(Exception):
    """The run's own storage (its output, staging area or scratch folder) failed: the run's problem, never the
    input's. The message names the path and what to check."""


def filesystems() -> Any:
    """Beam's FileSystems, imported on first use (the import is slow, and local-only runs of a decoder skip it)."""
    global _configured
    from apache_beam.io.filesystems import FileSystems

    if not _configured:
        _configured = True
        if getattr(FileSystems, "_pipeline_options", None) is None:  # not in a Beam process: configure it here
            from apache_beam.options.pipeline_options import PipelineOptions

            options = json.loads(os.environ.get(OPTIONS_ENV) or "{}")
            FileSystems.set_options(PipelineOptions.from_dictionary(options))  # S3 needs options, even empty ones
    return FileSystems


def is_local(path: str) -> bool:
    return "://" not in path or path.startswith("file://")


def makedirs(path: str) -> None:
    if is_local(path):
        os.makedirs(path, exist_ok=True)  # object stores have no folders to make


def write_bytes(path: str, data: bytes) -> None:
    """Write `path` whole: a temporary name first, then a rename, so a reader never sees half a file.

    Raises StorageError when the storage refuses (full, read-only, not a folder, no credentials, ...).
    """
    try:
        _write_bytes(path, data)
    except MemoryError:
        raise
    except Exception as e:  # remote filesystems fail with their client's own exceptions (credentials, HTTP)
        raise StorageError(
            f"cannot write {path}: {type(e).__name__}: {e}; check that it is writable, that its disk has free space "
            "and that the storage credentials allow writing there"
        ) from e


def _write_bytes(path: str, data: bytes) -> None:
    if is_local(path):
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        tmp = f"{path}.tmp-{os.getpid()}"
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
        return
    with filesystems().create(path) as f:  # object stores publish an object only when its upload completes
        f.write(data)


def read_bytes(path: str) -> bytes | None:
    """The whole of `path`, or None when there is no such file."""
    if is_local(path):
        try:
            with open(path, "rb") as f:
                return f.read()
        except FileNotFoundError:
            return None
    fs = filesystems()
    if not fs.exists(path):
        return None
    with fs.open(path) as f:
        return f.read()


def delete_files(paths: list[str]) -> None:
    """Delete those of `paths` that exist."""
    local = [p for p in paths if is_local(p)]
    for path in local:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
    remote = [p for p in paths if not is_local(p) and filesystems().exists(p)]
    if remote:
        filesystems().delete(remote)


def delete_tree(path: str) -> None:
    if is_local(path):
        import shutil

        shutil.rmtree(path, ignore_errors=True)
        return
    fs = filesystems()
    matches = fs.match([path.rstrip("/") + "/**"])[0].metadata_list
    if matches:
        fs.delete([m.path for m in matches])
