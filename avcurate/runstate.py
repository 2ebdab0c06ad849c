"""What `--output` holds before a run starts, and what the run does about it: start, resume, add to, refuse.

- Empty: a fresh run.
- An unfinished run (its staging area has `_run.json`): the same command resumes it. Sources finished before
  the interruption are not decoded again (`avcurate.checkpoints`); shards, index and ledger are written anew
  from all results, byte-identical to an uninterrupted run. Another config or other inputs: refused, since the
  finished sources were curated for the first command.
- A finished run: refused, unless `--overwrite` (start over) or `--incremental` (add the sources it does not
  have yet, and take out those a block list now names: see `Base`).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from typing import Sequence

from .fsutil import StorageError, delete_files, delete_tree, filesystems, is_local, read_bytes, write_bytes
from .writers.shards import shard_number
from .writers.tables import read_table

STAGING = "_staging"
_RECORD = "_run.json"
_BASE = "_base"
# A finished run's files; the record and the report (avcurate.report) are written last, from the rest.
FINAL = ("index.parquet", "ledger.parquet", "shards", "embeddings", "run.json", "report.html", "report_files")
_FOLDERS = ("shards", "embeddings", "report_files", STAGING)
# Written from the rest at the end of every run, so removed when one starts: a run adding to or taking sources out
# of a finished output (a takedown) must not leave the old page, or previews of clips it removed, behind.
_DESCRIPTIONS = ("run.json", "report.html", "report_files")


class OutputError(Exception):
    """--output cannot be used as asked; the message says why and what to pass instead."""


@dataclass(frozen=True)
class Base:
    """The finished run an incremental run adds to. Its shards stay as they are; the new sources' kept clips
    go to new shards numbered from `shards` on; the index and ledger are rewritten with the base's rows
    unchanged plus the new ones. The base's index and ledger are copied to the staging area first, so an
    interrupted incremental run resumes from the same base. Sources a block list names are taken out: their
    base shards rewritten in place, their rows dropped or replaced (`avcurate.beam.transforms.WriteOutputs`)."""

    index: str
    ledger: str
    shards: int


@dataclass(frozen=True)
class RunRecord:
    config_hash: str
    inputs: tuple[str, ...]
    incremental: bool
    base_shards: int | None = None
    # The block lists' digest: a takedown half applied to the base must be finished with the same lists.
    blocklists: str = ""


@dataclass(frozen=True)
class Prepared:
    resumed: bool
    base: Base | None


def staging_dir(output: str) -> str:
    return f"{output.rstrip('/')}/{STAGING}"


def prepare_output(
    output: str, config_hash: str, inputs: Sequence[str], *, overwrite: bool, incremental: bool, blocklists: str = ""
) -> Prepared:
    """Get `output` ready for the run; OutputError when it cannot be used as asked, StorageError when it
    cannot be written."""
    fs = filesystems()
    out = output.rstrip("/")
    record_path = f"{staging_dir(out)}/{_RECORD}"
    try:
        unfinished = _read_record(record_path)
        finished = [name for name in FINAL if fs.exists(f"{out}/{name}")]
        if overwrite:
            _delete(out, [*FINAL, STAGING])
            unfinished, finished = None, []
        if unfinished is not None:
            wanted = RunRecord(config_hash, tuple(inputs), incremental, unfinished.base_shards, blocklists)
            if wanted != unfinished:
                raise OutputError(
                    f"{out} holds an unfinished run of another command (other config, inputs, block lists or "
                    "--incremental); run that command again to finish it, or pass --overwrite to start over"
                )
            _clear_partial_outputs(out, unfinished.base_shards)
            if is_local(out):
                os.makedirs(f"{out}/shards", exist_ok=True)
            base = _base(out, unfinished.base_shards) if incremental else None
            _delete(out, _DESCRIPTIONS)
            return Prepared(resumed=True, base=base)
        if finished and not incremental:
            raise OutputError(
                f"{out} already holds a run ({', '.join(finished)}); pass --overwrite to replace it, --incremental to "
                "add the inputs it does not have yet and apply a changed block list, or pick another --output"
            )
        delete_tree(staging_dir(out))  # without a record: left over by a run killed while it finished
        base_shards = None
        if incremental and finished:
            base_shards = _copy_base(out, config_hash)
        if is_local(out):
            os.makedirs(f"{out}/shards", exist_ok=True)
        record = RunRecord(config_hash, tuple(inputs), incremental, base_shards, blocklists)
        write_bytes(record_path, json.dumps(asdict(record)).encode())  # also proves --output is writable
        _delete(out, _DESCRIPTIONS)
        return Prepared(resumed=False, base=_base(out, base_shards) if base_shards is not None else None)
    except (OSError, StorageError) as e:
        raise StorageError(f"cannot write to --output {out} ({e}); pick a folder you can write to") from e


def finish_run(output: str) -> None:
    """Mark the run in `output` finished: its record goes before the rest of the staging area, so a kill while
    that is deleted leaves a finished run (with some staging left over) rather than an unfinished one whose
    checkpoints name staged clips that are gone."""
    delete_files([f"{staging_dir(output)}/{_RECORD}"])


def unfinished(output: str) -> bool:
    """Whether `output` holds a run that has not finished: its staging area still has the run's record."""
    return filesystems().exists(f"{staging_dir(output.rstrip('/'))}/{_RECORD}")


def _read_record(path: str) -> RunRecord | None:
    raw = read_bytes(path)
    if raw is None:
        return None
    data = json.loads(raw)
    return RunRecord(data["config_hash"], tuple(data["inputs"]), data["incremental"], data.get("base_shards"),
                     data.get("blocklists", ""))  # fmt: skip


def _base(out: str, shards: int | None) -> Base | None:
    if shards is None:
        return None
    folder = f"{staging_dir(out)}/{_BASE}"
    return Base(f"{folder}/index.parquet", f"{folder}/ledger.parquet", shards)


def _copy_base(out: str, config_hash: str) -> int:
    """Copy the finished run's index and ledger aside; the number of its shards."""
    hashes = set(read_table(f"{out}/index.parquet", ["config_hash"]).column("config_hash").to_pylist())
    if hashes - {config_hash}:
        raise OutputError(
            f"{out} was curated with another config (config_hash {', '.join(sorted(hashes - {config_hash}))}); an "
            "incremental run must use the same config, so that every clip of the dataset is curated alike"
        )
    folder = f"{staging_dir(out)}/{_BASE}"
    for name in ("index.parquet", "ledger.parquet"):
        data = read_bytes(f"{out}/{name}")
        if data is None:
            raise OutputError(f"{out} has no {name}, so no finished run to add to; pass --overwrite to start over")
        write_bytes(f"{folder}/{name}", data)
    numbers = [shard_number(path) for path in _files(f"{out}/shards")]
    return max((n for n in numbers if n is not None), default=-1) + 1


def _clear_partial_outputs(out: str, base_shards: int | None) -> None:
    """Remove what the interrupted attempt wrote after its base: it is all written again, and a half-written
    file (a temporary name left by a kill) must not stay."""
    if base_shards is None:
        _delete(out, FINAL)
        return
    _delete(out, ("index.parquet", "ledger.parquet"))
    written = [*_files(f"{out}/shards"), *_files(f"{out}/embeddings")]
    delete_files([path for path in written if (number := shard_number(path)) is None or number >= base_shards])


def remove_temporaries(output: str) -> None:
    """Delete what killed writers left under temporary names (`.NAME.tmp-...`): called once every output file is
    complete, so none of them is still being written."""
    out = output.rstrip("/")
    left = [p for p in [*_files(f"{out}/shards"), *_files(f"{out}/embeddings")] if ".tmp-" in p.rsplit("/", 1)[-1]]
    if is_local(out) and os.path.isdir(out):
        left += [os.path.join(out, n) for n in os.listdir(out) if ".tmp-" in n]
    delete_files(left)


def _files(folder: str) -> list[str]:
    """Every file under `folder`, hidden ones included (a killed writer's temporary names start with a dot)."""
    if is_local(folder):
        return [os.path.join(root, name) for root, _, names in os.walk(folder) for name in names]
    return [m.path for m in filesystems().match([f"{folder}/**"])[0].metadata_list]


def _delete(out: str, names: Sequence[str]) -> None:
    for name in names:
        path = f"{out}/{name}"
        if name in _FOLDERS:
            delete_tree(path)
        else:
            delete_files([path])
