"""Stream curated clips from WebDataset shards into PyTorch.

A shard is a plain tar whose samples are `{key}.mp4` + `{key}.json` (see `Clip.metadata()`), since schema
v4 followed by a `{key}.{role}.npy` per embedding (float32; other members are ignored). Shards are
read as streams, one member at a time, so a shard is never held in memory whole; remote URLs (`gs://`,
`s3://`, ...) go through Beam's `FileSystems`, imported only when one is used and configured from the
`AVCURATE_FILESYSTEM_OPTIONS` environment variable (JSON pipeline options, e.g. an `s3_endpoint_url`).

Every sample comes out as a dict:

- `key`: str, the clip's key.
- `video`: uint8 tensor `[T, C, H, W]`, RGB (C = 3); frame `t` shows time `start_s + t / fps`.
- `audio`: float32 tensor `[channels, S]` in [-1, 1], `S = round(T / fps * sample_rate)`; sample `n`
  plays at `start_s + n / sample_rate`. The AAC priming is trimmed, so both streams share one origin.
- `fps`: float, `sample_rate`: int, `meta`: the sample's json dict (it must hold `fps` and `n_frames`).
- `start_s`: float, where the returned window starts, in seconds from the clip's first frame (0 unless
  `clip_seconds` cuts a random window).

`video` is absent when `decode_video=False`, `audio` when `decode_audio=False`.
With `embeddings=("visual", ...)`, `embeddings` maps each role to its float32 tensor (`[D]`, or `[frames, D]`
for "visual_frames"); a sample without one of them (shards written before v4, or without that model) is an error.

Splitting: the shard list (shuffled per epoch with a seed every rank shares) is dealt round-robin over
all `world_size * num_workers` (rank, worker) readers, so each shard is read by exactly one of them.

Distributed training needs the same number of samples on every rank: DDP's collective steps wait for ever on
a rank that ran out. Shards hold unequal numbers of clips, so `samples_per_rank` (default "auto") sets a quota:
every rank yields exactly that many samples per epoch, split evenly over its DataLoader workers. Each reader
fills its share by cycling its shards (wrapping around to repeat samples when they run short, stopping early when
they hold more; a reader without a shard of its own reads shard `reader % shards`), so the count holds whatever
clips `clip_seconds` or `on_error` skip. "auto" is no quota in a single process (each sample once) and, with
several ranks, the largest reader's share of the epoch's shards (counted from the tar headers) times the
workers per rank: every sample is seen at least once and some are repeated. An int sets the quota; None turns it
off (each sample exactly once, unequal counts: not for DDP). With `resample=True` readers draw shards with
replacement instead: without a quota for ever (train for a fixed number of steps), with one a fixed-length epoch.
"""

from __future__ import annotations

import io
import itertools
import json
import logging
import random
import re
import tarfile
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import IO, Any, Literal, TypeVar

import av
import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from .fsutil import filesystems

logger = logging.getLogger(__name__)

Sample = dict[str, Any]
T = TypeVar("T")
OnError = Literal["raise", "skip"]

# A sample needs both members; anything else in it is ignored.
_REQUIRED = ("mp4", "json")
# Seek this far before a window so the AAC decoder has a frame of pre-roll (1024 samples at 16 kHz = 64 ms).
_PREROLL_S = 0.25


class ShardError(RuntimeError):
    """A shard, or one sample in it, could not be read. The message names the shard and the key."""

    def __init__(self, message: str, shard: str = "", key: str = "") -> None:
        # One positional argument must suffice: DataLoader re-raises worker errors as `type(e)(message)`.
        super().__init__(message)
        self.shard = shard
        self.key = key


def _error(reason: str, shard: str, key: str = "") -> ShardError:
    where = f"sample {key!r} in shard {shard!r}" if key else f"shard {shard!r}"
    return ShardError(f"{where}: {reason}", shard, key)


# ---------------------------------------------------------------------------------------------- urls


_BRACE = re.compile(r"\{([^{}]*)\}")
_RANGE = re.compile(r"(\d+)\.\.(\d+)")


def expand_urls(urls: str | Iterable[str]) -> list[str]:
    """Expand brace patterns: `clips-{000000..000002}.tar` (zero padding kept) and `{a,b}` lists."""
    patterns = [urls] if isinstance(urls, str) else list(urls)
    expanded = [url for pattern in patterns for url in _expand(pattern)]
    if not expanded:
        raise ValueError("no shard URLs given")
    return expanded


def _expand(pattern: str) -> list[str]:
    match = _BRACE.search(pattern)
    if match is None:
        return [pattern]
    head, tail = pattern[: match.start()], pattern[match.end() :]
    return [head + choice + rest for choice in _choices(match.group(1), pattern) for rest in _expand(tail)]


def _choices(body: str, pattern: str) -> list[str]:
    numeric = _RANGE.fullmatch(body)
    if numeric:
        lo, hi = numeric.groups()
        width = max(len(lo), len(hi)) if lo.startswith("0") or hi.startswith("0") else 0
        step = 1 if int(lo) <= int(hi) else -1
        return [str(i).zfill(width) for i in range(int(lo), int(hi) + step, step)]
    if "," in body:
        return body.split(",")
    raise ValueError(f"unsupported brace pattern {{{body}}} in {pattern!r} (nested braces are not supported)")


# --------------------------------------------------------------------------------------- tar reading


@dataclass(frozen=True)
class _Raw:
    """One undecoded sample: what the shuffle buffer holds (a few hundred KB, not decoded frames)."""

    key: str
    shard: str
    mp4: bytes
    meta: dict[str, Any]
    npy: dict[str, bytes]  # the requested embeddings' members, by role


def _open(url: str) -> IO[bytes]:
    if "://" in url and not url.startswith("file://"):
        return filesystems().open(url)  # Beam is imported only for remote shards
    return open(url.removeprefix("file://"), "rb")


def _members(url: str) -> Iterator[tuple[str, bytes]]:
    """(name, bytes) of each file in the tar, read as a stream."""
    try:
        with _open(url) as stream, tarfile.open(fileobj=stream, mode="r|*") as tar:
            for info in tar:
                member = tar.extractfile(info) if info.isfile() else None
                if member is not None:
                    yield info.name, member.read()
    except (tarfile.TarError, EOFError, OSError) as e:
        raise _error(f"unreadable tar ({type(e).__name__}: {e})", url) from e


def _grouped(url: str) -> Iterator[tuple[str, dict[str, bytes]]]:
    """Consecutive members sharing a key (the name up to the first dot of its basename), by extension."""
    key, parts = "", {}
    try:
        for name, data in _members(url):
            dot = name.find(".", name.rfind("/") + 1)
            member_key, ext = (name[:dot], name[dot + 1 :]) if dot >= 0 else (name, "")
            if parts and member_key != key:
                yield key, parts
                parts = {}
            key = member_key
            parts[ext] = data
    except ShardError:
        if all(ext in parts for ext in _REQUIRED):  # read whole before the tar broke: let it through
            yield key, parts
        raise
    if parts:
        yield key, parts


def _raw_sample(key: str, parts: dict[str, bytes], shard: str, embeddings: Sequence[str]) -> _Raw:
    missing = [ext for ext in _REQUIRED if ext not in parts]
    if missing:
        raise _error(f"missing member(s) {missing} (has {sorted(parts)})", shard, key)
    for role in embeddings:
        if f"{role}.npy" not in parts:
            raise _error(
                f"missing member {key}.{role}.npy (has {sorted(parts)}): embeddings={tuple(embeddings)} needs shards"
                f" of schema v4 or later, written by a run with a {role!r} model",
                shard,
                key,
            )
    try:
        meta = json.loads(parts["json"])
    except ValueError as e:
        raise _error(f"bad json ({e})", shard, key) from e
    return _Raw(key, shard, parts["mp4"], meta, {role: parts[f"{role}.npy"] for role in embeddings})


# ------------------------------------------------------------------------------------------- decoding


@dataclass(frozen=True)
class _Window:
    """Frames [first, first + n) of a clip at `fps`; the audio covers exactly the same time span."""

    first: int
    n: int
    fps: float

    def samples(self, sample_rate: int) -> tuple[int, int]:
        """(first sample, sample count) of the window at `sample_rate`."""
        # The count depends on n only, so equal-length windows stack whatever their start.
        return round(self.first / self.fps * sample_rate), round(self.n / self.fps * sample_rate)


class _FrameSink:
    """Places decoded frames into `[n, 3, H, W]` by timestamp; every slot must be filled."""

    def __init__(self, window: _Window) -> None:
        self.window = window
        self.data: np.ndarray | None = None
        self.filled = np.zeros(window.n, dtype=bool)

    def add(self, frame: av.VideoFrame) -> bool:
        """Store the frame if it falls in the window; True once the window's last frame is reached."""
        index = round(frame.time * self.window.fps) - self.window.first
        if 0 <= index < self.window.n:
            rgb = frame.to_ndarray(format="rgb24")
            if self.data is None:
                self.data = np.empty((self.window.n, 3, *rgb.shape[:2]), dtype=np.uint8)
            self.data[index] = rgb.transpose(2, 0, 1)
            self.filled[index] = True
        return index >= self.window.n - 1

    def tensor(self) -> torch.Tensor:
        if self.data is None or not self.filled.all():
            raise ValueError(f"decoded {int(self.filled.sum())} of {self.window.n} frames of the window")
        return torch.from_numpy(self.data)


class _SampleSink:
    """Places decoded audio into `[channels, n]` by timestamp: drops what lies outside, zero-pads gaps."""

    def __init__(self, window: _Window, sample_rate: int, channels: int) -> None:
        self.sample_rate = sample_rate
        self.start, n = window.samples(sample_rate)
        self.data = np.zeros((channels, n), dtype=np.float32)

    def add(self, frame: av.AudioFrame) -> bool:
        """Copy the frame's part inside the window; True once the window's end is covered."""
        pcm = _planar_float(frame)
        at = round(frame.time * self.sample_rate) - self.start  # negative for priming before t = 0
        lo, hi = max(at, 0), min(at + pcm.shape[1], self.data.shape[1])
        if lo < hi:
            self.data[:, lo:hi] = pcm[:, lo - at : hi - at]
        return at + pcm.shape[1] >= self.data.shape[1]

    def tensor(self) -> torch.Tensor:
        return torch.from_numpy(self.data)


def _planar_float(frame: av.AudioFrame) -> np.ndarray:
    """`[channels, samples]` float32 in [-1, 1], whatever the decoder's sample format."""
    pcm = frame.to_ndarray()
    if not frame.format.is_planar:
        pcm = pcm.reshape(-1, frame.layout.nb_channels).T
    if pcm.dtype.kind == "i":  # signed PCM (s16, s32): scale to [-1, 1]
        pcm = pcm / float(np.iinfo(pcm.dtype).max)
    elif pcm.dtype.kind != "f":
        raise ValueError(f"unsupported audio sample format {frame.format.name}")
    return pcm.astype(np.float32, copy=False)


def _decode(mp4: bytes, window: _Window, video: bool, audio: bool) -> tuple[Sample, int]:
    """Decode `window` from the mp4: ({"video"?, "audio"?}, sample_rate). One demux pass, seeking first."""
    with av.open(io.BytesIO(mp4)) as container:
        vstream = container.streams.video[0] if video and container.streams.video else None
        astream = container.streams.audio[0] if container.streams.audio else None
        if video and vstream is None:
            raise ValueError("no video stream")
        if audio and astream is None:
            raise ValueError("no audio stream")
        sample_rate = astream.codec_context.sample_rate if astream else 0
        sinks: dict[str, _FrameSink | _SampleSink] = {}
        if vstream is not None:
            sinks["video"] = _FrameSink(window)
        if audio and astream is not None:
            sinks["audio"] = _SampleSink(window, sample_rate, astream.codec_context.layout.nb_channels)
        streams = [s for s in (vstream, astream if audio else None) if s is not None]
        _seek(container, streams[0], window.first / window.fps - _PREROLL_S)
        _fill(container, streams, sinks)
        return {name: sink.tensor() for name, sink in sinks.items()}, sample_rate


def _seek(container: av.container.InputContainer, stream: av.stream.Stream, seconds: float) -> None:
    # The mp4 demuxer lands every stream at or before the keyframe it finds, so the pre-roll holds for both.
    if seconds > 0:
        container.seek(int(seconds / stream.time_base), stream=stream, backward=True)


def _fill(
    container: av.container.InputContainer, streams: list[av.stream.Stream], sinks: dict[str, _FrameSink | _SampleSink]
) -> None:
    """Demux and decode until every sink has its window (B-frames come out in presentation order)."""
    done = {name: False for name in sinks}
    for packet in container.demux(*streams):
        name = "video" if packet.stream.type == "video" else "audio"
        if done[name]:
            continue
        for frame in packet.decode():
            done[name] = sinks[name].add(frame) or done[name]
        if all(done.values()):
            return


# -------------------------------------------------------------------------------------------- dataset


class AVClipDataset(IterableDataset):
    """Decoded AV clips from WebDataset shards; see the module docstring for the sample layout and splitting.

    Args:
        urls: a shard URL or list of them, brace patterns expanded (`shards/clips-{000000..000009}.tar`).
        clip_seconds: cut a random window of exactly `round(clip_seconds * fps)` frames, starting on a
            frame, chosen per (seed, epoch, key). Clips shorter than that are skipped (logged at debug).
            None returns whole clips.
        shuffle_shards: shuffle the shard order, per (seed, epoch).
        shuffle_buffer: shuffle samples through a buffer this big (undecoded mp4s are buffered); 0 keeps order.
        seed: seeds the shard order, the buffer and the windows; runs with the same seed and epoch agree.
        decode_audio, decode_video: leave a stream out (its key is then absent from the sample).
        embeddings: roles ("visual", "audio", "visual_frames") whose `{key}.{role}.npy` members to return as
            `sample["embeddings"][role]`; a sample lacking one raises (or is skipped, per `on_error`).
        resample: draw shards with replacement instead of reading each once per epoch (forever, unless
            `samples_per_rank` bounds the epoch).
        samples_per_rank: yield exactly this many samples per epoch on every rank (summed over its
            DataLoader workers), cycling or cutting short each reader's shards; "auto" (several ranks: enough
            for every sample to be seen once, one process: no quota) or None (each shard once, unequal counts).
        rank, world_size: this process's place among distributed readers; both or neither. Defaults to
            torch.distributed's when it is initialised when the dataset is built, else (0, 1). Every rank
            must use the same shard list, seed and number of DataLoader workers.
        on_error: "raise" a `ShardError` naming the shard and key, or "skip" the sample (the rest of the
            shard if the tar itself is broken) with a warning.

    `set_epoch(n)` reshuffles; it reaches DataLoader workers, persistent ones included, because the epoch
    lives in shared memory.
    """

    def __init__(
        self,
        urls: str | Sequence[str],
        *,
        clip_seconds: float | None = None,
        shuffle_shards: bool = True,
        shuffle_buffer: int = 0,
        seed: int = 0,
        decode_audio: bool = True,
        decode_video: bool = True,
        embeddings: Sequence[str] = (),
        resample: bool = False,
        samples_per_rank: int | Literal["auto"] | None = "auto",
        rank: int | None = None,
        world_size: int | None = None,
        on_error: OnError = "raise",
    ) -> None:
        super().__init__()
        if on_error not in ("raise", "skip"):
            raise ValueError(f"on_error must be 'raise' or 'skip', not {on_error!r}")
        if clip_seconds is not None and clip_seconds <= 0:
            raise ValueError(f"clip_seconds must be positive, not {clip_seconds}")
        self.urls = expand_urls(urls)
        self.clip_seconds = clip_seconds
        self.shuffle_shards = shuffle_shards
        self.shuffle_buffer = shuffle_buffer
        self.seed = seed
        self.decode_audio = decode_audio
        self.decode_video = decode_video
        self.embeddings = tuple(embeddings)
        if samples_per_rank != "auto" and samples_per_rank is not None and samples_per_rank < 0:
            raise ValueError(f"samples_per_rank must be >= 0, \"auto\" or None, not {samples_per_rank!r}")
        self.resample = resample
        self.samples_per_rank = samples_per_rank
        self.rank, self.world_size = _resolve_rank(rank, world_size)
        self.on_error = on_error
        self._epoch = torch.zeros((), dtype=torch.int64).share_memory_()
        self._shard_sizes: dict[str, int] = {}

    def set_epoch(self, epoch: int) -> None:
        self._epoch.fill_(epoch)

    @property
    def epoch(self) -> int:
        return int(self._epoch)

    def __iter__(self) -> Iterator[Sample]:
        worker = get_worker_info()
        worker_id, num_workers = (worker.id, worker.num_workers) if worker else (0, 1)
        reader, readers = self.rank * num_workers + worker_id, self.world_size * num_workers
        epoch = self.epoch
        quota = self._quota(readers, num_workers, epoch)
        samples = self._samples(reader, readers, epoch, quota)
        if quota is None:
            yield from samples
        else:
            yield from itertools.islice(samples, _worker_share(quota, worker_id, num_workers))

    def _quota(self, readers: int, num_workers: int, epoch: int) -> int | None:
        """Samples per rank this epoch: the one asked for, or for "auto" across ranks the largest reader's share."""
        if self.samples_per_rank != "auto":
            return self.samples_per_rank
        if self.world_size == 1 or self.resample:
            return None
        shares = (self._shard_share(r, readers, epoch, borrow=True) for r in range(readers))
        largest = max(sum(map(self._shard_size, share)) for share in shares)
        return num_workers * largest

    def _shard_size(self, url: str) -> int:
        """Samples in a shard, from its tar headers (the clips are skipped over, not read); cached."""
        if url not in self._shard_sizes:
            try:
                with _open(url) as stream, tarfile.open(fileobj=stream, mode="r:") as tar:
                    self._shard_sizes[url] = sum(name.endswith(".mp4") for name in tar.getnames())
            except (tarfile.TarError, EOFError, OSError) as e:
                raise _error(f"unreadable tar ({type(e).__name__}: {e})", url) from e
        return self._shard_sizes[url]

    def _samples(self, reader: int, readers: int, epoch: int, quota: int | None) -> Iterator[Sample]:
        """This reader's samples: its shards once, or (with a quota) lap after lap, without end."""
        if self.resample:
            yield from self._lap(self._drawn_shards(reader, epoch), reader, epoch, lap=0)
            return
        shards = self._shard_share(reader, readers, epoch, borrow=quota is not None)
        for lap in itertools.count():
            yielded = 0
            for sample in self._lap(shards, reader, epoch, lap):
                yielded += 1
                yield sample
            if quota is None:
                return
            if not yielded:  # another lap would yield nothing too: fail instead of spinning for ever
                raise ShardError(f"reader {reader} of {readers} (rank {self.rank}) got no usable sample from "
                                 f"{shards}, so it cannot fill samples_per_rank={quota}")

    def _lap(self, shards: Iterable[str], reader: int, epoch: int, lap: int) -> Iterator[Sample]:
        raws = (raw for url in shards for raw in self._read(url))
        buffer_rng = random.Random(f"buffer:{self.seed}:{epoch}:{reader}:{lap}")
        for raw in _shuffled(raws, self.shuffle_buffer, buffer_rng):
            sample = self._guarded(raw.shard, raw.key, lambda: self._sample(raw, epoch))
            if sample is not None:
                yield sample

    def _drawn_shards(self, reader: int, epoch: int) -> Iterator[str]:
        rng = random.Random(f"resample:{self.seed}:{epoch}:{reader}")
        while True:
            yield rng.choice(self.urls)

    def _shard_share(self, reader: int, readers: int, epoch: int, borrow: bool) -> list[str]:
        """This reader's round-robin share of the epoch's shard order; `borrow`: one shard if it has none."""
        order = list(self.urls)
        if self.shuffle_shards:
            random.Random(f"shards:{self.seed}:{epoch}").shuffle(order)  # same order on every reader
        mine = order[reader::readers]
        if mine:
            return mine
        if borrow:  # it must still fill its quota
            return [order[reader % len(order)]]
        warnings.warn(
            f"reader {reader} of {readers} (rank {self.rank}) gets no shard: {len(order)} shards for "
            f"{readers} rank x worker readers; it yields nothing"
        )
        return []

    def _read(self, url: str) -> Iterator[_Raw]:
        try:
            for key, parts in _grouped(url):
                raw = self._guarded(url, key, lambda: _raw_sample(key, parts, url, self.embeddings))
                if raw is not None:
                    yield raw
        except ShardError as e:  # the tar itself is broken: nothing after this point can be trusted
            if self.on_error == "raise":
                raise
            warnings.warn(f"skipping the rest of {e}")

    def _guarded(self, shard: str, key: str, make: Callable[[], T]) -> T | None:
        """`make()`, with failures turned into a ShardError naming the sample, then raised or skipped."""
        try:
            return make()
        except ShardError as e:
            error = e
        except (av.FFmpegError, ValueError, KeyError, TypeError) as e:  # bad bytes or bad metadata
            error = _error(f"{type(e).__name__}: {e}", shard, key)
            error.__cause__ = e
        if self.on_error == "raise":
            raise error
        warnings.warn(f"skipping {error}")
        return None

    def _sample(self, raw: _Raw, epoch: int) -> Sample | None:
        fps = float(raw.meta["fps"])
        window = self._window(raw, fps, epoch)
        if window is None:
            logger.debug("skipping %s: shorter than clip_seconds=%s", raw.key, self.clip_seconds)
            return None
        streams, sample_rate = {}, 0
        if self.decode_video or self.decode_audio:
            streams, sample_rate = _decode(raw.mp4, window, self.decode_video, self.decode_audio)
        sample = {
            "key": raw.key,
            **streams,
            "fps": fps,
            "sample_rate": sample_rate or int(raw.meta.get("sample_rate", 0)),
            "meta": raw.meta,
            "start_s": window.first / fps,
        }
        if self.embeddings:
            sample["embeddings"] = {role: _embedding(data) for role, data in raw.npy.items()}
        return sample

    def _window(self, raw: _Raw, fps: float, epoch: int) -> _Window | None:
        total = int(raw.meta["n_frames"])
        if self.clip_seconds is None:
            return _Window(0, total, fps)
        n = max(1, round(self.clip_seconds * fps))
        if n > total:
            return None
        first = random.Random(f"window:{self.seed}:{epoch}:{raw.key}").randrange(total - n + 1)
        return _Window(first, n, fps)


def _embedding(npy: bytes) -> torch.Tensor:
    return torch.from_numpy(np.load(io.BytesIO(npy), allow_pickle=False))


def _worker_share(total: int, worker: int, workers: int) -> int:
    """Worker `worker`'s part of `total` samples: the parts differ by at most one and sum to `total`."""
    return total // workers + (worker < total % workers)


def _resolve_rank(rank: int | None, world_size: int | None) -> tuple[int, int]:
    if (rank is None) != (world_size is None):
        raise ValueError("give both rank and world_size, or neither")
    if rank is None or world_size is None:
        distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
        return (torch.distributed.get_rank(), torch.distributed.get_world_size()) if distributed else (0, 1)
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is outside [0, {world_size})")
    return rank, world_size


def _shuffled(items: Iterable[Any], size: int, rng: random.Random) -> Iterator[Any]:
    """Yield `items` through a buffer of `size`, each time a random element of it; `size` <= 1 keeps order."""
    buffer: list[Any] = []
    for item in items:
        buffer.append(item)
        if len(buffer) >= max(size, 1):
            index = rng.randrange(len(buffer))
            buffer[index], buffer[-1] = buffer[-1], buffer[index]
            yield buffer.pop()
    rng.shuffle(buffer)
    yield from buffer


# ---------------------------------------------------------------------------------------------- batching


def collate(samples: Sequence[Sample]) -> Sample:
    """Stack samples: `video` uint8 `[B, T, C, H, W]`, `audio` float32 `[B, channels, S]`.

    `fps` and `start_s` become float64 `[B]`, `sample_rate` int64 `[B]`; `key` and `meta` stay lists;
    `embeddings` (when asked for) maps each role to its stacked float32 `[B, ...]`.
    Raises ValueError when lengths differ (use `clip_seconds` for equal-length windows).
    """
    batch: Sample = {
        "key": [s["key"] for s in samples],
        "fps": torch.tensor([s["fps"] for s in samples], dtype=torch.float64),
        "sample_rate": torch.tensor([s["sample_rate"] for s in samples], dtype=torch.int64),
        "start_s": torch.tensor([s["start_s"] for s in samples], dtype=torch.float64),
        "meta": [s["meta"] for s in samples],
    }
    for name in ("video", "audio"):
        if name in samples[0]:
            batch[name] = _stack(name, [s[name] for s in samples], batch["key"], "; set clip_seconds")
    if "embeddings" in samples[0]:
        batch["embeddings"] = {
            role: _stack(f"{role} embeddings", [s["embeddings"][role] for s in samples], batch["key"])
            for role in samples[0]["embeddings"]
        }
    return batch


def _stack(what: str, tensors: list[torch.Tensor], keys: list[str], hint: str = "") -> torch.Tensor:
    shapes = sorted({tuple(t.shape) for t in tensors})
    if len(shapes) > 1:
        raise ValueError(f"cannot stack {what} of shapes {shapes} (keys {keys}){hint}")
    return torch.stack(tensors)


def make_loader(
    urls: str | Sequence[str],
    batch_size: int | None = None,
    num_workers: int = 0,
    *,
    drop_last: bool = False,
    pin_memory: bool = False,
    persistent_workers: bool = False,
    **dataset_kwargs: Any,
) -> DataLoader:
    """A DataLoader over `AVClipDataset(urls, **dataset_kwargs)`: batches via `collate`, or single samples
    when `batch_size` is None. Batches form within a worker; call `loader.dataset.set_epoch(n)` per epoch."""
    return DataLoader(
        AVClipDataset(urls, **dataset_kwargs),
        batch_size=batch_size,
        num_workers=num_workers,
        collate_fn=collate if batch_size is not None else None,
        drop_last=drop_last,
        pin_memory=pin_memory,
        persistent_workers=persistent_workers,
    )
