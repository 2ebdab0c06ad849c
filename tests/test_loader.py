"""The shard loader on real shards: mp4s made with the ffmpeg CLI, packed with the stdlib tarfile.

Each test clip encodes its own timeline: frame N has luma 16 + 2N (so a decoded frame tells its index),
except one flash frame F at full white; the audio is silent except a 1 kHz burst over frames [F, F + 10).
"""

from __future__ import annotations

import dataclasses
import io
import itertools
import json
import subprocess
import tarfile
import types
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

import avcurate.loader as loader_module
from avcurate.loader import AVClipDataset, ShardError, collate, expand_urls, make_loader
from avcurate.model import AUDIO, VISUAL, Clip
from avcurate.writers import plan_shards
from avcurate.writers import write_shard as write_avcurate_shard

FPS = 25
SR = 16000
SAMPLES_PER_FRAME = SR // FPS
BURST_FRAMES = 10
# (flash frame, duration in seconds) of each distinct clip
CLIP_SPECS = [(20, 2.4), (8, 2.0), (33, 2.8), (12, 2.4), (27, 2.0), (40, 2.8)]


@dataclass(frozen=True)
class Shards:
    root: Path
    clips: dict[str, tuple[bytes, dict]]  # key -> (mp4, metadata)

    def url(self, name: str) -> str:
        return str(self.root / name)


def _encode(path: Path, flash: int, duration: float) -> subprocess.Popen:
    onset, offset = flash / FPS, (flash + BURST_FRAMES) / FPS
    video = (
        f"color=c=black:s=256x144:r={FPS}:d={duration},format=yuv420p,"
        f"geq=lum='if(eq(N,{flash}),235,16+2*N)':cb=128:cr=128"
    )
    audio = f"aevalsrc='0.5*sin(2*PI*1000*t)*between(t,{onset},{offset - 1e-6})':s={SR}:d={duration}"
    cmd = ["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi", "-i", video, "-f", "lavfi",
           "-i", audio, "-c:v", "libx264", "-preset", "veryfast", "-g", "10", "-pix_fmt", "yuv420p",
           "-c:a", "aac", "-ac", "1", "-ar", str(SR), "-shortest", str(path)]  # fmt: skip
    return subprocess.Popen(cmd)


def _clip(index: int, flash: int, duration: float) -> Clip:
    return Clip(
        source_id=f"{0xA0C0 + index:016x}", source_uri=f"file:///src/{index}.mp4", clip_index=index,
        start_s=0.0, end_s=duration, n_frames=round(duration * FPS), fps=float(FPS), width=256, height=144,
        source_width=1280, source_height=720, sample_rate=SR, channels=1, source_meta={"flash_frame": flash},
    )  # fmt: skip


def _metadata(index: int, flash: int, duration: float) -> dict:
    return _clip(index, flash, duration).metadata()


def write_shard(path: Path, samples: list[tuple[str, dict[str, bytes]]]) -> None:
    """A plain POSIX tar: members `{key}.{ext}` in sample order."""
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
        for key, parts in samples:
            for ext, data in parts.items():
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))


def _sample(mp4: bytes, meta: dict) -> tuple[str, dict[str, bytes]]:
    return meta["key"], {"mp4": mp4, "json": json.dumps(meta).encode()}


@pytest.fixture(scope="session")
def shards(tmp_path_factory: pytest.TempPathFactory) -> Shards:
    """clips-000000..000002.tar (two distinct clips each) and split-000000..000006.tar (15 samples that
    reuse those mp4s under new keys, 1 to 3 per shard)."""
    root = tmp_path_factory.mktemp("shards")
    jobs = [_encode(root / f"{i}.mp4", flash, dur) for i, (flash, dur) in enumerate(CLIP_SPECS)]
    assert all(job.wait() == 0 for job in jobs)
    clips = {}
    for i, (flash, dur) in enumerate(CLIP_SPECS):
        meta = _metadata(i, flash, dur)
        clips[meta["key"]] = ((root / f"{i}.mp4").read_bytes(), meta)
    ordered = list(clips.values())
    for s in range(3):
        write_shard(root / f"clips-{s:06d}.tar", [_sample(*ordered[2 * s]), _sample(*ordered[2 * s + 1])])
    reused = itertools.cycle(ordered)
    keys = (f"{0xB000 + n:016x}-00000" for n in itertools.count())
    for s, count in enumerate([1, 3, 2, 2, 3, 1, 3]):
        batch = [(mp4, {**meta, "key": next(keys)}) for mp4, meta in itertools.islice(reused, count)]
        write_shard(root / f"split-{s:06d}.tar", [_sample(mp4, meta) for mp4, meta in batch])
    return Shards(root, clips)


CLIPS = "clips-{000000..000002}.tar"
SPLIT = "split-{000000..000006}.tar"


def _keys(dataset: AVClipDataset) -> list[str]:
    return [sample["key"] for sample in dataset]


def _frame_indices(video: torch.Tensor) -> list[int]:
    """The absolute frame index each decoded frame shows (luma 16 + 2N, expanded to full-range RGB)."""
    return (video.float().mean(dim=(1, 2, 3)) * 219 / 255 / 2).round().int().tolist()


def _loud_frames(audio: torch.Tensor) -> np.ndarray:
    """Per video frame: whether its span of audio carries the burst."""
    rms = audio[0].reshape(-1, SAMPLES_PER_FRAME).pow(2).mean(dim=1).sqrt()
    return (rms > 0.1).numpy()


def _assert_audio_follows_burst(audio: torch.Tensor, first_frame: int, flash: int) -> None:
    """The burst covers frames [flash, flash + 10); a frame just outside may carry AAC smear, so skip those."""
    for offset, loud in enumerate(_loud_frames(audio)):
        frame = first_frame + offset
        if frame not in (flash - 1, flash + BURST_FRAMES):
            assert loud == (flash <= frame < flash + BURST_FRAMES), f"frame {frame}, flash {flash}"


def test_expand_urls() -> None:
    assert expand_urls("s/c-{000008..000011}.tar") == [f"s/c-{i:06d}.tar" for i in range(8, 12)]
    assert expand_urls(["a-{1..2}-{x,y}", "b"]) == ["a-1-x", "a-1-y", "a-2-x", "a-2-y", "b"]
    assert expand_urls("gs://b/{3..1}.tar") == ["gs://b/3.tar", "gs://b/2.tar", "gs://b/1.tar"]
    with pytest.raises(ValueError, match="brace"):
        expand_urls("a-{x}.tar")


def test_whole_clips_decode_aligned(shards: Shards) -> None:
    samples = list(AVClipDataset(shards.url(CLIPS), shuffle_shards=False))
    assert [s["key"] for s in samples] == list(shards.clips)
    for sample in samples:
        meta = shards.clips[sample["key"]][1]
        frames, flash = meta["n_frames"], meta["source_meta"]["flash_frame"]
        video, audio = sample["video"], sample["audio"]
        assert video.dtype == torch.uint8 and video.shape == (frames, 3, 144, 256)
        assert audio.dtype == torch.float32 and audio.shape == (1, round(frames / FPS * SR))
        assert (sample["fps"], sample["sample_rate"], sample["start_s"]) == (25.0, SR, 0.0)
        assert sample["meta"] == meta
        shown = _frame_indices(video)
        assert int(np.argmax(shown)) == flash  # the flash frame is where the encoder put it
        assert [i for i in range(frames) if i != flash] == [shown[i] for i in range(frames) if i != flash]
        onset = int(torch.nonzero(audio[0].abs() > 0.25)[0])  # priming trimmed: sample 0 is t = 0
        assert abs(onset - flash * SAMPLES_PER_FRAME) < SAMPLES_PER_FRAME
        _assert_audio_follows_burst(audio, 0, flash)


def test_random_subclips_are_aligned_and_reproducible(shards: Shards) -> None:
    dataset = AVClipDataset(shards.url(CLIPS), clip_seconds=1.0, seed=7)
    starts: dict[int, dict[str, float]] = {}
    for epoch in range(3):
        dataset.set_epoch(epoch)
        starts[epoch] = {}
        for sample in dataset:
            video, audio, start_s = sample["video"], sample["audio"], sample["start_s"]
            assert video.shape == (25, 3, 144, 256) and audio.shape == (1, SR)
            first = round(start_s * FPS)
            assert start_s == first / FPS
            flash = sample["meta"]["source_meta"]["flash_frame"]
            shown = _frame_indices(video)
            assert [shown[i] for i in range(25) if first + i != flash] == [
                first + i for i in range(25) if first + i != flash
            ]
            _assert_audio_follows_burst(audio, first, flash)
            starts[epoch][sample["key"]] = start_s
    again = AVClipDataset(shards.url(CLIPS), clip_seconds=1.0, seed=7, decode_video=False, decode_audio=False)
    again.set_epoch(1)
    assert {s["key"]: s["start_s"] for s in again} == starts[1]
    assert starts[0] != starts[1] != starts[2]
    assert any(start > 0 for epoch in starts.values() for start in epoch.values())  # the seek path ran


def test_clips_shorter_than_clip_seconds_are_skipped(shards: Shards) -> None:
    dataset = AVClipDataset(shards.url(CLIPS), clip_seconds=2.4, decode_video=False)
    long_enough = {k for k, (_, meta) in shards.clips.items() if meta["n_frames"] >= 60}
    assert set(_keys(dataset)) == long_enough and len(long_enough) == 4


def test_shuffle_is_seeded_and_changes_per_epoch(shards: Shards) -> None:
    def order(seed: int, epoch: int, buffer: int = 4) -> list[str]:
        dataset = AVClipDataset(shards.url(SPLIT), shuffle_buffer=buffer, seed=seed, decode_video=False,
                                decode_audio=False)  # fmt: skip
        dataset.set_epoch(epoch)
        return _keys(dataset)

    base = order(seed=1, epoch=0)
    assert order(seed=1, epoch=0) == base
    assert order(seed=1, epoch=1) != base
    assert order(seed=2, epoch=0) != base
    assert sorted(order(seed=1, epoch=1)) == sorted(base) and len(set(base)) == 15
    unshuffled = AVClipDataset(shards.url(SPLIT), shuffle_shards=False, decode_video=False, decode_audio=False)
    assert order(seed=1, epoch=0, buffer=0) != _keys(unshuffled)  # shard order alone is shuffled


@pytest.mark.parametrize("world_size", [1, 2, 3])
def test_workers_and_ranks_read_each_sample_once(shards: Shards, world_size: int) -> None:
    expected = Counter(_keys(AVClipDataset(shards.url(SPLIT), decode_video=False, decode_audio=False)))
    seen: Counter[str] = Counter()
    for rank in range(world_size):
        loader = make_loader(shards.url(SPLIT), num_workers=2, rank=rank, world_size=world_size, seed=3,
                             shuffle_buffer=2, decode_video=False, samples_per_rank=None)  # fmt: skip
        loader.dataset.set_epoch(world_size)
        for sample in loader:
            assert sample["audio"].shape[0] == 1
            seen[sample["key"]] += 1
    assert seen == expected and set(seen.values()) == {1}


def test_fewer_shards_than_readers(shards: Shards) -> None:
    seen = Counter(
        sample["key"]
        for rank in range(2)
        for sample in make_loader(shards.url(CLIPS), num_workers=2, rank=rank, world_size=2, decode_video=False,
                                  decode_audio=False, samples_per_rank=None)  # fmt: skip
    )
    assert seen == Counter(list(shards.clips))  # 3 shards over 4 readers: one reader idle, nothing lost or doubled
    with pytest.warns(UserWarning, match="gets no shard"):
        assert _keys(AVClipDataset(shards.url(CLIPS), rank=3, world_size=4, decode_video=False,
                                   samples_per_rank=None)) == []  # fmt: skip


@pytest.fixture(scope="session")
def uneven(shards: Shards) -> str:
    """uneven-000000..000002.tar holding 8, 8 and 4 samples, as the demo's shards do."""
    reused = itertools.cycle(shards.clips.values())
    keys = (f"{0xC000 + n:016x}-00000" for n in itertools.count())
    for s, count in enumerate([8, 8, 4]):
        batch = [(mp4, {**meta, "key": next(keys)}) for mp4, meta in itertools.islice(reused, count)]
        write_shard(shards.root / f"uneven-{s:06d}.tar", [_sample(mp4, meta) for mp4, meta in batch])
    return shards.url("uneven-{000000..000002}.tar")


def _rank_keys(urls: str, world_size: int, num_workers: int, epoch: int = 1, **kwargs) -> list[list[str]]:
    """The keys each simulated rank yields in `epoch`."""
    per_rank = []
    for rank in range(world_size):
        loader = make_loader(urls, num_workers=num_workers, rank=rank, world_size=world_size, seed=5,
                             decode_video=False, decode_audio=False, **kwargs)  # fmt: skip
        loader.dataset.set_epoch(epoch)
        per_rank.append([sample["key"] for sample in loader])
    return per_rank


@pytest.mark.parametrize("world_size", [2, 3])
@pytest.mark.parametrize("num_workers", [0, 2])
def test_every_rank_yields_the_same_count_and_all_samples(uneven: str, world_size: int, num_workers: int) -> None:
    every_key = set(_keys(AVClipDataset(uneven, decode_video=False, decode_audio=False)))
    # 16 covers any reader's share here: a whole 8-clip shard per worker, or two shards (16) on one reader.
    per_rank = _rank_keys(uneven, world_size, num_workers, samples_per_rank=16, shuffle_buffer=4)
    assert [len(keys) for keys in per_rank] == [16] * world_size
    assert set().union(*per_rank) == every_key and len(every_key) == 20
    # Clips skipped for being shorter than clip_seconds do not unbalance the ranks: they are made up by cycling.
    skipping = _rank_keys(uneven, world_size, num_workers, samples_per_rank=6, clip_seconds=2.4)
    assert [len(keys) for keys in skipping] == [6] * world_size


@pytest.mark.parametrize("world_size", [2, 3])
@pytest.mark.parametrize("num_workers", [0, 2])
def test_by_default_ranks_are_equal_and_see_every_sample(uneven: str, world_size: int, num_workers: int) -> None:
    every_key = set(_keys(AVClipDataset(uneven, decode_video=False, decode_audio=False)))
    for epoch in (0, 1):  # the shard order, and with it each rank's share, changes per epoch
        per_rank = _rank_keys(uneven, world_size, num_workers, epoch=epoch)
        counts = {len(keys) for keys in per_rank}
        assert len(counts) == 1 and counts.pop() >= len(every_key) / world_size
        assert set().union(*per_rank) == every_key


@pytest.mark.parametrize("world_size", [2, 3])
def test_resampled_epochs_have_a_fixed_length_per_rank(uneven: str, world_size: int) -> None:
    per_rank = _rank_keys(uneven, world_size, 2, samples_per_rank=7, resample=True)
    assert [len(keys) for keys in per_rank] == [7] * world_size


def test_a_reader_that_can_never_fill_its_quota_fails(shards: Shards) -> None:
    dataset = AVClipDataset(shards.url(CLIPS), samples_per_rank=4, clip_seconds=60.0, decode_video=False)
    with pytest.raises(ShardError, match="cannot fill samples_per_rank=4"):
        _keys(dataset)


def test_persistent_workers_follow_set_epoch(shards: Shards) -> None:
    def keys(loader: torch.utils.data.DataLoader) -> list[str]:
        return [key for batch in loader for key in batch["key"]]

    kwargs = dict(batch_size=1, num_workers=2, shuffle_buffer=3, decode_video=False, decode_audio=False)
    loader = make_loader(shards.url(SPLIT), persistent_workers=True, **kwargs)
    first = keys(loader)
    loader.dataset.set_epoch(1)
    second = keys(loader)
    fresh = make_loader(shards.url(SPLIT), **kwargs)
    fresh.dataset.set_epoch(1)
    assert second == keys(fresh) != first


def test_batches_stack_equal_length_windows(shards: Shards) -> None:
    loader = make_loader(shards.url(CLIPS), batch_size=2, clip_seconds=0.8, shuffle_buffer=4)
    batches = list(loader)
    assert len(batches) == 3
    for batch in batches:
        assert batch["video"].shape == (2, 20, 3, 144, 256) and batch["video"].dtype == torch.uint8
        assert batch["audio"].shape == (2, 1, round(0.8 * SR)) and batch["audio"].dtype == torch.float32
        assert batch["sample_rate"].tolist() == [SR, SR] and batch["fps"].tolist() == [25.0, 25.0]
        assert len(batch["key"]) == len(batch["meta"]) == len(batch["start_s"]) == 2
    whole = list(AVClipDataset(shards.url(CLIPS), shuffle_shards=False, decode_video=False))
    with pytest.raises(ValueError, match="cannot stack audio"):
        collate(whole[:2])


def test_resample_draws_shards_forever(shards: Shards) -> None:
    dataset = AVClipDataset(shards.url(CLIPS), resample=True, decode_video=False, decode_audio=False)
    keys = [s["key"] for s in itertools.islice(dataset, 40)]
    assert len(keys) == 40 and set(keys) == set(shards.clips)


@pytest.fixture(scope="session")
def broken(shards: Shards) -> Path:
    """good, undecodable mp4, mp4 without json, good. Also cut-000000.tar: clips-000000.tar cut off inside
    its second mp4."""
    (good_mp4, good_meta), (_, other_meta), (third_mp4, third_meta), *_ = shards.clips.values()
    path = shards.root / "broken-000000.tar"
    bad_meta = {**other_meta, "key": "00000000000000ff-00001"}
    write_shard(path, [
        _sample(good_mp4, good_meta),
        _sample(b"\x00\x00\x00\x18ftypisom" + bytes(4000), bad_meta),
        ("00000000000000ff-00002", {"mp4": good_mp4}),
        _sample(third_mp4, third_meta),
    ])  # fmt: skip
    whole = shards.root / "clips-000000.tar"
    with tarfile.open(whole) as tar:
        second = tar.getmember(f"{other_meta['key']}.mp4")
    (shards.root / "cut-000000.tar").write_bytes(whole.read_bytes()[: second.offset_data + second.size // 2])
    return path


def test_corrupt_sample_raises_naming_key_and_shard(shards: Shards, broken: Path) -> None:
    with pytest.raises(ShardError, match=r"00000000000000ff-00001.*broken-000000\.tar") as caught:
        _keys(AVClipDataset(str(broken), decode_video=False))
    assert caught.value.key == "00000000000000ff-00001" and caught.value.shard == str(broken)
    # The same error, re-raised out of a DataLoader worker process.
    with pytest.raises(ShardError, match="00000000000000ff-00001"):
        list(make_loader(str(broken), num_workers=1, decode_video=False))
    with pytest.raises(ShardError, match=r"cut-000000\.tar.*unreadable tar"):
        _keys(AVClipDataset(shards.url("cut-000000.tar"), decode_video=False))


def test_corrupt_samples_skipped_with_warning(shards: Shards, broken: Path) -> None:
    first, _, third, *_ = shards.clips
    with pytest.warns(UserWarning) as caught:
        assert _keys(AVClipDataset(str(broken), on_error="skip")) == [first, third]
    messages = " ".join(str(w.message) for w in caught)
    assert "00000000000000ff-00001" in messages and "missing member(s) ['json']" in messages
    with pytest.warns(UserWarning, match="skipping the rest of shard"):
        assert _keys(AVClipDataset(shards.url("cut-000000.tar"), on_error="skip", decode_video=False)) == [first]


class _Unseekable(io.RawIOBase):
    """A forward-only stream that records its biggest read, like an object-store download."""

    def __init__(self, path: Path) -> None:
        self._file = path.open("rb")
        self.biggest_read = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:
        self.biggest_read = max(self.biggest_read, len(buffer))
        return self._file.readinto(buffer)

    def close(self) -> None:
        self._file.close()
        super().close()


def test_remote_urls_stream_through_beam(shards: Shards, monkeypatch: pytest.MonkeyPatch) -> None:
    opened: list[_Unseekable] = []

    def fake_open(url: str) -> _Unseekable:
        assert url.startswith("gs://bucket/")
        opened.append(_Unseekable(shards.root / url.removeprefix("gs://bucket/")))
        return opened[-1]

    # A stand-in for Beam's FileSystems that records how the loader reads (tests/test_remote.py reads a real
    # S3 server through the real one).
    monkeypatch.setattr(loader_module, "filesystems", lambda: types.SimpleNamespace(open=fake_open))
    dataset = AVClipDataset("gs://bucket/clips-{000000..000002}.tar", shuffle_shards=False, decode_video=False)
    assert _keys(dataset) == list(shards.clips)
    # Read forward in tar records, never the whole shard at once.
    assert len(opened) == 3 and all(0 < s.biggest_read <= tarfile.RECORDSIZE for s in opened)


@pytest.fixture(scope="session")
def v4_shards(shards: Shards) -> tuple[str, dict[str, dict[str, np.ndarray]]]:
    """v4-000000..000001.tar, written by avcurate's own shard writer: four clips with visual [16] and audio [8]
    embeddings. Returns their URL pattern and each clip's embeddings by key."""
    clips = []
    for i, (flash, duration) in enumerate(CLIP_SPECS[:4]):
        rng = np.random.default_rng(i)
        mp4 = shards.root / f"{i}.mp4"
        embeddings = {VISUAL: rng.standard_normal(16, np.float32), AUDIO: rng.standard_normal(8, np.float32)}
        clips.append(dataclasses.replace(_clip(i, flash, duration), staged_path=str(mp4), mp4_bytes=mp4.stat().st_size,
                                         embeddings=embeddings))  # fmt: skip
    for plan in plan_shards(clips, prefix="v4", max_clips=2, max_bytes=1 << 30):
        write_avcurate_shard(plan, str(shards.root))
    return shards.url("v4-{000000..000001}.tar"), {c.key: c.embeddings for c in clips}


def test_embeddings_are_returned_and_collated(v4_shards: tuple[str, dict[str, dict[str, np.ndarray]]]) -> None:
    url, expected = v4_shards
    loader = make_loader(url, batch_size=2, clip_seconds=0.8, shuffle_shards=False, decode_video=False,
                         embeddings=(VISUAL, AUDIO))  # fmt: skip
    batches = list(loader)
    assert [key for batch in batches for key in batch["key"]] == list(expected)
    for batch in batches:
        assert set(batch["embeddings"]) == {VISUAL, AUDIO} and batch["audio"].shape == (2, 1, round(0.8 * SR))
        for role, size in ((VISUAL, 16), (AUDIO, 8)):
            stacked = batch["embeddings"][role]
            assert stacked.dtype == torch.float32 and stacked.shape == (2, size)
            assert torch.equal(stacked, torch.from_numpy(np.stack([expected[k][role] for k in batch["key"]])))
    # Not asked for: the .npy members are ignored, as any unknown member is.
    plain = list(AVClipDataset(url, shuffle_shards=False, decode_video=False, decode_audio=False))
    assert [s["key"] for s in plain] == list(expected) and all("embeddings" not in s for s in plain)


def test_embeddings_from_shards_without_them_is_a_clear_error(shards: Shards) -> None:
    old = AVClipDataset(shards.url(CLIPS), shuffle_shards=False, decode_video=False, embeddings=(VISUAL,))
    with pytest.raises(ShardError, match=r"clips-000000\.tar.*missing member [0-9a-f]{16}-00000\.visual\.npy") as caught:
        _keys(old)
    assert "schema v4" in str(caught.value) and caught.value.shard == shards.url("clips-000000.tar")
