"""A preview of each example clip, written beside the page: a strip of frames (JPEG) and a short, small playable
clip (MP4, H.264 + AAC).

A kept clip is previewed from its own MP4 in its shard (what training gets). A rejected clip is in no shard, so
it is cut from its source again (the same frames on the source's timeline, `AlignedDecoder` seeking to them).
Both are decoded in a `Sandbox` (a child process bounded in time, memory and CPU): a source is untrusted, and
even a kept clip's MP4 is only as sound as the decoder that wrote it. A source that cannot be read any more, or
a preview that fails, crashes or runs out of time, gives a note instead, and the report goes on. Decoding and encoding are single-threaded with the
pipeline's deterministic encoder (`avcurate.encode`), and the JPEGs come from fixed frames and settings, so the
same output gives the same files, byte for byte.
"""

from __future__ import annotations

import base64
import io
import os
import tarfile
import tempfile
from dataclasses import dataclass
from typing import Any

import av
import numpy as np
from PIL import Image

from ..config import DecodeConfig, EncodeConfig
from ..decode import AlignedDecoder
from ..encode import VideoClipWriter, mux_clip
from ..fsutil import filesystems, is_local, write_bytes
from ..model import KEPT
from ..probe import open_container
from ..sandbox import Deadline, Sandbox, SourceFailure
from .examples import Example

FILES = "report_files"  # beside report.html, linked relatively
SHORT_SIDE = 240
MAX_S = 6.0  # the playable preview is the clip's first seconds at most; the strip spans the whole clip
STRIP_FRAMES = 6
STRIP_HEIGHT = 96
JPEG_QUALITY = 80
# ultrafast: half the CPU of veryfast for previews a third larger, which a higher crf takes back
_ENCODE = EncodeConfig(crf=32, preset="ultrafast", audio_bitrate=32000)
_AAC = {"aac_coder": "fast"}  # half the CPU of the default coder, which is the costliest step of a preview
# Each preview decodes at most one clip and encodes at most MAX_S seconds of it: well under a second of CPU on a
# sound file. One that takes this long is stuck (a pipe, a stalled mount, a decoder looping on a damaged file).


@dataclass(frozen=True)
class Preview:
    strip: str | None  # paths relative to the page
    video: str | None
    problem: str | None = None  # why there is none


def write_previews(
    output: str, examples: list[Example], sandbox: Sandbox, timeout_s: float
) -> dict[str, Preview]:
    """Key -> preview of each example (each clip once, however many lists it is in), its files written. Each is
    rendered in `sandbox`, stopped after `timeout_s`."""
    unique = {example.key: example for example in examples}
    kept_members = _shard_members(output, [e for e in unique.values() if e.status == KEPT])
    previews = {}
    for key, example in sorted(unique.items()):
        previews[key] = _preview(output, example, kept_members.get(key), sandbox, timeout_s)
    return previews


def _preview(output: str, example: Example, member: bytes | None, sandbox: Sandbox, timeout_s: float) -> Preview:
    if example.status == KEPT:
        if member is None:
            return Preview(None, None, f"{example.key}.mp4 could not be read from shards/{example.shard}")
        source: str | bytes = member
        first_frame, where, remote = 0, "its shard", False
    else:
        # The child works in a folder of its own: a relative path is made absolute here.
        uri = example.source_uri
        source = os.path.abspath(uri) if "://" not in uri else uri
        first_frame, where, remote = example.clip_index, "its source", not is_local(uri)
    try:
        rendered = sandbox.call(render_preview, source, example, first_frame, what="previewing", storage=remote,
                                deadline=Deadline(timeout_s, settings="write_report(preview_timeout_s=...)"))  # fmt: skip
        strip, video = (base64.b64decode(rendered[part]) for part in ("strip", "video"))
    except SourceFailure as e:  # a source moved, deleted, unreadable or hanging now: the report says so and goes on
        return Preview(None, None, f"could not be cut from {where} again ({e.kind}: {e})")
    names = (f"{FILES}/{example.key}.jpg", f"{FILES}/{example.key}.mp4")
    for name, data in zip(names, (strip, video)):
        write_bytes(f"{output}/{name}", data)
    return Preview(*names)


def render_preview(source: str | bytes, example: Example, first_frame: int) -> dict[str, str]:
    """In the sandbox's child: `_render` of a source URI or of a clip's MP4 bytes, as base64 (JSON crosses back)."""
    strip, video = _render(io.BytesIO(source) if isinstance(source, bytes) else source, example, first_frame)
    return {"strip": base64.b64encode(strip).decode("ascii"), "video": base64.b64encode(video).decode("ascii")}


def _render(source: str | io.BytesIO, example: Example, first_frame: int) -> tuple[bytes, bytes]:
    """(JPEG strip, MP4) of the clip's frames [first_frame, first_frame + n_frames) of `source`."""
    decode = DecodeConfig(fps=example.fps, short_side=SHORT_SIDE, sample_rate=example.sample_rate,
                          channels=example.channels, threads=1)  # fmt: skip
    n = example.n_frames
    strip_at = {first_frame + (2 * i + 1) * n // (2 * STRIP_FRAMES) for i in range(STRIP_FRAMES)}
    video_end = first_frame + min(n, round(MAX_S * example.fps))
    pictures: list[np.ndarray] = []
    audio: list[np.ndarray] = []
    with tempfile.TemporaryDirectory(prefix="avcurate-preview-") as scratch:
        writer: VideoClipWriter | None = None
        opened = open_container(source) if isinstance(source, str) else av.open(source, mode="r")
        with opened as container:
            decoder = AlignedDecoder(container, decode, start_frame=first_frame, end_frame=first_frame + n)
            for frame in decoder:
                if frame.index < video_end:
                    if writer is None:
                        writer = VideoClipWriter(os.path.join(scratch, "video.mp4"), example.fps, decoder.size,
                                                 _ENCODE, threads=1)  # fmt: skip
                    writer.write(frame.video)
                    audio.append(frame.audio)
                if frame.index in strip_at:
                    pictures.append(_thumbnail(frame.video))
        if writer is None:
            raise ValueError("no frames decoded")
        writer.close()
        video = mux_clip(writer.path, np.concatenate(audio, axis=1), example.sample_rate, _ENCODE, _AAC)
    return _jpeg(np.hstack(pictures)), video


def _thumbnail(frame: av.VideoFrame) -> np.ndarray:
    width = max(2, round(frame.width * STRIP_HEIGHT / frame.height / 2) * 2)
    return frame.reformat(width=width, height=STRIP_HEIGHT, format="rgb24").to_ndarray()


def _jpeg(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=JPEG_QUALITY)
    return buffer.getvalue()


def _shard_members(output: str, examples: list[Example]) -> dict[str, bytes]:
    """Key -> its MP4 member, reading each shard once (members in key order: one pass over its headers)."""
    wanted: dict[str, set[str]] = {}
    for example in examples:
        if example.shard:
            wanted.setdefault(example.shard, set()).add(f"{example.key}.mp4")
    members = {}
    for shard, names in sorted(wanted.items()):
        try:
            with filesystems().open(f"{output}/shards/{shard}") as f, tarfile.open(fileobj=f, mode="r:") as tar:
                left = set(names)
                for info in tar:
                    if info.name in left:
                        members[info.name.removesuffix(".mp4")] = _read(tar, info)
                        left.remove(info.name)
                        if not left:
                            break
        except (OSError, tarfile.TarError):  # a missing or damaged shard: those previews say so
            continue
    return members


def _read(tar: tarfile.TarFile, info: tarfile.TarInfo) -> bytes:
    extracted: Any = tar.extractfile(info)
    return extracted.read()
