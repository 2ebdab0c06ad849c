"""Reading and writing through Beam's FileSystems, so outputs can live on gs://, s3:// or local disk alike."""

from __future__ import annotations

import os


def is_local(path: str) -> bool:
    return "://" not in path or path.startswith("file://")


def makedirs(path: str) -> None:
    if is_local(path):
        os.makedirs(path, exist_ok=True)  # object stores have no folders to make


def write_bytes(path: str, data: bytes) -> None:
    """Write `path` whole: a temporary name first, then a rename, so a reader never sees half a file."""
    if is_local(path):
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        tmp = f"{path}.tmp-{os.getpid()}"
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
        return
    from apache_beam.io.filesystems import FileSystems  # Beam's import is slow; local runs of the decoder skip it

    with FileSystems.create(path) as f:  # object stores publish an object only when its upload completes
        f.write(data)


def delete_tree(path: str) -> None:
    if is_local(path):
        import shutil

        shutil.rmtree(path, ignore_errors=True)
        return
    from apache_beam.io.filesystems import FileSystems

    matches = FileSystems.match([path.rstrip("/") + "/**"])[0].metadata_list
    if matches:
        FileSystems.delete([m.path for m in matches])
