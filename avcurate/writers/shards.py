"""WebDataset tar shards: plan which kept clips go where, then write each shard atomically and reproducibly.

A shard holds, per clip and in key order, `{key}.mp4` (the staged encoded clip), `{key}.json` (its metadata
plus the shard name), then `{key}.{role}.npy` per embedding, roles sorted. Headers carry no time, owner or host,
so the same clips give the same bytes. Next to the shards go per-shard float16 embedding arrays for retrieval.
Writes go through Beam's FileSystems, so shards can land on local disk, `gs://` or `s3://` alike.
"""

from __future__ import annotations

import bisect
import dataclasses
import hashlib
import io
import json
import re
import tarfile
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any, BinaryIO

import numpy as np
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from avcurate.faults import fault_point
from avcurate.model import KEPT, Clip
from avcurate.writers.buckets import key_bucket
from avcurate.writers.embeddings import SAFE_ROLE, SHARD_DTYPE, npy_bytes, sample_members, shard_arrays

BLOCK = tarfile.BLOCKSIZE  # 512: every header and every member's padded data
RECORD = tarfile.RECORDSIZE  # tarfile pads the finished archive to a multiple of this
TAR_FORMAT = tarfile.USTAR_FORMAT  # safe keys are short ASCII, so plain USTAR headers always suffice
# WebDataset splits a member name at its first dot into key and extension, so a key may hold no dot,
# no slash; it must also fit a USTAR name field with its extension.
SAFE_KEY = re.compile(r"[A-Za-z0-9_-]{1,90}")
USTAR_NAME_MAX = 100  # a member name without a slash cannot spill into the header's prefix field


@dataclass
class ShardPlan:
    """One shard to write: its file name and its clips in key order (each with `shard` set to that name)."""

    name: str
    clips: list[Clip]
    n_bytes: int  # the tar's exact size, if every clip's `mp4_bytes` is its staged file's size


@dataclass(frozen=True)
class ShardInfo:
    """What one written shard holds."""

    name: str
    n_clips: int
    n_bytes: int
    sha256: str
    embedding_files: tuple[str, ...] = ()  # the per-shard arrays written with it, `.../embeddings/{role}/{stem}.npy`


@dataclass(frozen=True, slots=True)
class ShardEntry:
    """What planning needs of one kept clip: a few dozen bytes, so a bucket's entries fit one worker."""

    key: str
    mp4_bytes: int
    json_bytes: int  # its json member when the shard is shard_name(prefix, 0); names differ only in digits
    npy_bytes: tuple[int, ...] = ()  # each `{key}.{role}.npy` member's size


@dataclass(frozen=True)
class ShardLayout:
    """Which kept clips go to which shard: consecutive key ranges, in key order, numbered from `start` (0, or
    the first free number when an incremental run adds shards to a finished run's)."""

    prefix: str
    first_keys: tuple[str, ...]  # of each shard, ascending
    n_clips: tuple[int, ...]
    n_bytes: tuple[int, ...]  # each tar's exact size
    start: int = 0

    def index_of(self, key: str) -> int:
        at = bisect.bisect_right(self.first_keys, key) - 1
        if at < 0:
            raise KeyError(f"clip key {key!r} sorts before every planned shard: it was not planned")
        return at

    def place(self, clip: Clip) -> tuple[int, Clip]:
        """The kept `clip`'s shard number, and a copy of it naming its shard (Beam forbids mutating the input)."""
        index = self.index_of(clip.key)
        return index, dataclasses.replace(clip, shard=shard_name(self.prefix, self.start + index))

    def plan(self, index: int, clips: Iterable[Clip]) -> ShardPlan:
        """Shard `index` with its clips (copies naming it) in key order, whatever order they arrive in."""
        name = shard_name(self.prefix, self.start + index)
        ordered = sorted((dataclasses.replace(c, shard=name) for c in clips), key=lambda c: c.key)
        if len(ordered) != self.n_clips[index] or any(self.index_of(c.key) != index for c in ordered):
            raise ValueError(f"shard {name} was given clips that the plan put elsewhere")
        return ShardPlan(name, ordered, self.n_bytes[index])


@dataclass(frozen=True)
class BucketedLayout:
    """The layout of a run planned a key-range bucket per worker (`avcurate.writers.buckets`): each bucket's
    shards are numbered on from those of the buckets before it, so numbers stay contiguous from the first
    bucket's `start`, and no shard crosses a bucket's range. A shard is named by (bucket, index in its bucket)."""

    buckets: tuple[ShardLayout, ...]  # in bucket order, each with its own `start`

    @classmethod
    def numbered(
        cls, planned: Iterable[tuple[int, ShardLayout]], buckets: int, prefix: str, start: int
    ) -> BucketedLayout:
        """The buckets' layouts, each planned with `start` (a bucket without clips has none), renumbered."""
        by_bucket = dict(planned)
        layouts = []
        for bucket in range(buckets):
            layout = by_bucket.get(bucket, ShardLayout(prefix, (), (), (), start))
            n = len(layout.n_clips)
            # A json member's size depends on the length of its shard's name, which grows past 999999.
            ends = (layout.start, layout.start + n - 1, start, start + n - 1)
            if n and len({len(shard_name(prefix, i)) for i in ends}) > 1:
                raise ValueError(
                    f"bucket {bucket}'s shards were planned with names of another length than their numbers from "
                    f"{start} give; plan in fewer buckets (a larger output.plan_bucket_clips)"
                )
            layouts.append(dataclasses.replace(layout, start=start))
            start += n
        return cls(tuple(layouts))

    def place(self, clip: Clip) -> tuple[tuple[int, int], Clip]:
        """The kept `clip`'s shard as (bucket, index), and a copy of it naming its shard."""
        bucket = key_bucket(clip.key, len(self.buckets))
        index, placed = self.buckets[bucket].place(clip)
        return (bucket, index), placed

    def plan(self, shard: tuple[int, int], clips: Iterable[Clip]) -> ShardPlan:
        bucket, index = shard
        return self.buckets[bucket].plan(index, clips)


def shard_name(prefix: str, index: int) -> str:
    return f"{prefix}-{index:06d}.tar"


_NUMBERED = re.compile(r"-(\d{6})\.(tar|npy)$")


def shard_number(path: str) -> int | None:
    """The number of the shard a complete shard file or its per-shard array belongs to; None for anything else
    (a temporary name left by an interrupted write)."""
    found = _NUMBERED.search(path.rsplit("/", 1)[-1])
    return int(found.group(1)) if found else None


def sample_json(clip: Clip, shard: str) -> bytes:
    """The `{key}.json` member: canonical JSON, so equal metadata gives equal bytes."""
    meta: dict[str, Any] = {**clip.metadata(), "shard": shard}
    # allow_nan=False: NaN/Infinity are not JSON; fail here rather than write a sample readers reject.
    text = json.dumps(meta, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return (text + "\n").encode("utf-8")


def shard_entry(clip: Clip, prefix: str) -> ShardEntry:
    """The planning entry of a kept clip; refuses clips that cannot be written."""
    if not SAFE_KEY.fullmatch(clip.key):
        raise ValueError(f"clip key {clip.key!r} is not tar/WebDataset-safe (letters, digits, '-', '_')")
    if clip.staged_path is None:
        raise ValueError(f"kept clip {clip.key} has no staged_path to write")
    for role in clip.embeddings:
        if not SAFE_ROLE.fullmatch(role):
            raise ValueError(f"embedding role {role!r} of clip {clip.key} is not name-safe (letters, digits, '_')")
    members = sample_members(clip)
    for name, _ in members:
        if len(name) > USTAR_NAME_MAX:
            raise ValueError(f"member name {name!r} is longer than a tar header's {USTAR_NAME_MAX} characters")
    json_bytes = len(sample_json(clip, shard_name(prefix, 0)))
    return ShardEntry(clip.key, clip.mp4_bytes, json_bytes, tuple(len(data) for _, data in members))


def plan_layout(
    entries: Iterable[ShardEntry], *, prefix: str, max_clips: int, max_bytes: int, start: int = 0
) -> ShardLayout:
    """Fill shards with the clips in key order, each under both caps.

    A clip too large for `max_bytes` on its own still gets a shard, alone.
    """
    if max_clips < 1 or max_bytes < 1:
        raise ValueError(f"shard caps must be positive, got max_clips={max_clips}, max_bytes={max_bytes}")
    base_name = len(shard_name(prefix, 0))

    def members_bytes(entry: ShardEntry, shard: int) -> int:
        """The entry's members in the tar: a header block each plus block-padded data."""
        json_bytes = entry.json_bytes + len(shard_name(prefix, start + shard)) - base_name
        npy = sum(BLOCK + _padded(size) for size in entry.npy_bytes)
        return 2 * BLOCK + _padded(entry.mp4_bytes) + _padded(json_bytes) + npy

    first_keys: list[str] = []
    counts: list[int] = []
    sizes: list[int] = []
    payload = 0  # bytes of the current shard's members, without the end-of-archive padding
    previous: str | None = None
    for entry in sorted(entries, key=lambda e: e.key):
        if entry.key == previous:
            raise ValueError(f"duplicate clip key {entry.key!r}: two samples would merge in WebDataset")
        previous = entry.key
        size = members_bytes(entry, len(first_keys) - 1) if first_keys else 0
        if not first_keys or counts[-1] >= max_clips or _tar_size(payload + size) > max_bytes:
            if first_keys:
                sizes.append(_tar_size(payload))
            first_keys.append(entry.key)
            counts.append(0)
            payload = 0
            size = members_bytes(entry, len(first_keys) - 1)
        counts[-1] += 1
        payload += size
    if first_keys:
        sizes.append(_tar_size(payload))
    return ShardLayout(prefix, tuple(first_keys), tuple(counts), tuple(sizes), start)


def plan_shards(clips: list[Clip], *, prefix: str, max_clips: int, max_bytes: int) -> list[ShardPlan]:
    """In one process: the layout of the kept clips, with each shard's clips. Rejected clips are ignored."""
    kept = [c for c in clips if c.status == KEPT]
    layout = plan_layout((shard_entry(c, prefix) for c in kept), prefix=prefix, max_clips=max_clips,
                         max_bytes=max_bytes)  # fmt: skip
    members: dict[int, list[Clip]] = {}
    for index, clip in map(layout.place, kept):
        members.setdefault(index, []).append(clip)
    return [layout.plan(index, members[index]) for index in sorted(members)]


def with_shards(clips: list[Clip], plans: list[ShardPlan]) -> list[Clip]:
    """`clips` with each kept one swapped for its planned copy, which names its shard: the index's input.

    plan_shards returns copies rather than setting `shard` on its input, which Beam forbids mutating.
    """
    planned = {c.key: c for plan in plans for c in plan.clips}
    return [planned[c.key] if c.status == KEPT else c for c in clips]


def write_shard(plan: ShardPlan, shards_dir: str, embeddings_dir: str | None = None) -> ShardInfo:
    """Write one planned shard to `shards_dir`; the final name exists only once the tar is complete.

    With `embeddings_dir`, first writes `{embeddings_dir}/{role}/{stem}.npy` (stem: the shard's name without
    `.tar`) for each retrieval role its clips carry: float16 [clips, D], row i = the shard's i-th sample. Written
    before the tar, so a complete shard implies its arrays are there.
    """
    arrays = _write_shard_arrays(plan, embeddings_dir) if embeddings_dir is not None else ()
    with atomic_create(FileSystems.join(shards_dir, plan.name), "application/x-tar") as out:
        with tarfile.open(fileobj=out, mode="w|", format=TAR_FORMAT) as tar:
            for clip in plan.clips:
                _add_clip(tar, clip, plan.name)
                fault_point("shard")
    return ShardInfo(plan.name, len(plan.clips), out.n_bytes, out.sha256, embedding_files=arrays)


def _write_shard_arrays(plan: ShardPlan, embeddings_dir: str) -> tuple[str, ...]:
    stem = plan.name.removesuffix(".tar")
    paths = []
    for role, array in shard_arrays(plan.clips).items():
        path = FileSystems.join(embeddings_dir, role, f"{stem}.npy")
        with atomic_create(path, "application/octet-stream") as out:
            out.write(npy_bytes(array, SHARD_DTYPE))
        paths.append(path)
    return tuple(paths)


def remove_samples(
    name: str, original: Iterable[str], removed: Iterable[str], shards_dir: str, embeddings_dir: str
) -> ShardInfo | None:
    """Take the samples `removed` out of shard `name` (a takedown): first its per-shard embedding arrays lose
    their rows, then the tar is rewritten without them under the same name; the rewritten shard's info, None if
    the tar held none of them any more.

    `original` is every sample key the shard held before the takedown (its kept rows in the base's index, which
    a resumed run still has): in the shard's key order, row i of an array is the i-th of them. The arrays go
    first, as `write_shard` writes them before the tar: the tar is never rewritten while its arrays still hold
    rows of samples it no longer has. A kill in between leaves cut arrays next to the old tar, in a run that is
    not finished, so the same command resumes it. Every other member is copied with the header `write_shard`
    gives it, so the result is byte-identical to writing the remaining clips afresh (an array keeps a row per
    remaining sample, NaN where it had one). Each file is replaced atomically, and doing it again changes
    nothing: an array is cut only while it has a row per original sample, the tar rewritten only while it holds
    a removed sample.
    """
    before = sorted(original)
    removed_keys = set(removed)
    if strays := removed_keys - set(before):
        raise ValueError(f"shard {name} never held samples {sorted(strays)}, so cannot have them taken out")
    keep = np.array([key not in removed_keys for key in before], dtype=bool)
    stem = name.removesuffix(".tar")
    found = FileSystems.match([FileSystems.join(embeddings_dir, "*", f"{stem}.npy")])[0].metadata_list
    arrays = sorted(meta.path for meta in found)
    for path in arrays:
        _cut_rows(path, keep)
    remaining = [key for key in before if key not in removed_keys]
    info = _copy_tar_without(FileSystems.join(shards_dir, name), removed_keys, remaining)
    return dataclasses.replace(info, embedding_files=tuple(arrays)) if info is not None else None


class _NothingToRemove(Exception):
    """Raised inside `atomic_create` to drop the copy of a tar that an earlier attempt rewrote already."""


def _copy_tar_without(path: str, removed: set[str], expected: list[str]) -> ShardInfo | None:
    """The info of the tar's copy without the samples `removed` (None if it held none of them), which must leave
    the samples `expected`, in that order; ValueError, and the tar left as it was, if they differ."""
    remaining: list[str] = []
    left_out = False
    try:
        with atomic_create(path, "application/x-tar") as out:
            with (
                FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as src,
                tarfile.open(fileobj=src, mode="r|") as tar_in,
                tarfile.open(fileobj=out, mode="w|", format=TAR_FORMAT) as tar_out,
            ):
                for member in tar_in:
                    key = member.name.split(".", 1)[0]  # WebDataset's split: keys hold no dot
                    if key in removed:
                        left_out = True
                        continue
                    if not remaining or remaining[-1] != key:
                        remaining.append(key)
                    tar_out.addfile(_tarinfo(member.name, member.size), tar_in.extractfile(member))
                    fault_point("takedown")
            if remaining != expected:
                raise ValueError(f"{path} holds other samples than the index says ({len(remaining)} left once "
                                 f"{len(removed)} are taken out, {len(expected)} expected): its arrays' rows would "
                                 "not match them")  # fmt: skip
            if not left_out:
                raise _NothingToRemove
    except _NothingToRemove:
        return None
    name = FileSystems.split(path)[1]
    return ShardInfo(name, len(remaining), out.n_bytes, out.sha256)


def _cut_rows(path: str, keep: np.ndarray) -> None:
    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
        array = np.load(io.BytesIO(f.read()), allow_pickle=False)
    if len(array) == keep.sum():
        return  # cut by an earlier attempt
    if len(array) != len(keep):
        raise ValueError(f"{path} has {len(array)} rows, but its shard had {len(keep)} samples: they do not match")
    with atomic_create(path, "application/octet-stream") as out:
        out.write(npy_bytes(array[keep], SHARD_DTYPE))


class DigestWriter:
    """Forwards writes to a file while counting and hashing them, so nothing has to be read back."""

    def __init__(self, raw: BinaryIO) -> None:
        self._raw = raw
        self._hash = hashlib.sha256()
        self.n_bytes = 0
        self.closed = False  # pyarrow checks this; closing is left to atomic_create

    def write(self, data: bytes) -> int:
        self._raw.write(data)
        self._hash.update(data)
        self.n_bytes += len(data)
        return len(data)

    def flush(self) -> None:
        self._raw.flush()

    def close(self) -> None:
        self.closed = True

    @property
    def sha256(self) -> str:
        return self._hash.hexdigest()


@contextmanager
def atomic_create(path: str, mime_type: str) -> Iterator[DigestWriter]:
    """Write to a hidden temporary name next to `path`, renamed to `path` only if the block succeeds.

    The temporary name starts with a dot and ends in `.tmp-<uuid>`, so globs like `clips-*.tar` never see it;
    on any failure it is removed and the error propagates.
    """
    folder, name = FileSystems.split(path)
    tmp = FileSystems.join(folder, f".{name}.tmp-{uuid.uuid4().hex}")
    raw = FileSystems.create(tmp, mime_type=mime_type, compression_type=CompressionTypes.UNCOMPRESSED)
    try:
        yield DigestWriter(raw)
        raw.close()
        FileSystems.rename([tmp], [path])
    except BaseException:
        _discard(raw, tmp)
        raise


def _discard(raw: BinaryIO, tmp: str) -> None:
    # Best effort: the original error matters more than a failed cleanup.
    with suppress(Exception):
        raw.close()
    with suppress(Exception):
        if FileSystems.exists(tmp):
            FileSystems.delete([tmp])


def _add_clip(tar: tarfile.TarFile, clip: Clip, shard: str) -> None:
    assert clip.staged_path is not None  # shard_entry checked it
    with FileSystems.open(clip.staged_path, compression_type=CompressionTypes.UNCOMPRESSED) as src:
        # addfile copies exactly `size` bytes in small chunks and fails if the file is shorter.
        tar.addfile(_tarinfo(f"{clip.key}.mp4", clip.mp4_bytes), src)
        if src.read(1):
            raise ValueError(f"staged file {clip.staged_path} is larger than mp4_bytes={clip.mp4_bytes}")
    data = sample_json(clip, shard)
    tar.addfile(_tarinfo(f"{clip.key}.json", len(data)), _BytesReader(data))
    for name, data in sample_members(clip):
        tar.addfile(_tarinfo(name, len(data)), _BytesReader(data))


def _tarinfo(name: str, size: int) -> tarfile.TarInfo:
    """A header with nothing that varies between runs or machines."""
    info = tarfile.TarInfo(name)
    info.size = size
    info.mtime = 0
    info.mode = 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.type = tarfile.REGTYPE
    return info


class _BytesReader:
    """Minimal reader for tarfile.addfile over bytes already in memory."""

    def __init__(self, data: bytes) -> None:
        self._view = memoryview(data)

    def read(self, n: int = -1) -> bytes:
        n = len(self._view) if n < 0 else n
        chunk, self._view = self._view[:n], self._view[n:]
        return bytes(chunk)


def _padded(size: int) -> int:
    return -(-size // BLOCK) * BLOCK


def _tar_size(payload: int) -> int:
    """The archive's size: members, two zero end blocks, then padding to a whole record."""
    return -(-(payload + 2 * BLOCK) // RECORD) * RECORD
