"""Encode clips: H.264 video while frames stream past, then AAC audio and the final MP4 once the clip's
audio shift is known. Deterministic: fixed encoder settings and thread count, no timestamps in headers, the
encoder handed the picture alone, and its allocations zeroed (`_ZeroedAllocations`)."""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import io
import logging
import os
import sys
import threading
from collections.abc import Callable, Iterator
from fractions import Fraction

import av
import numpy as np

from .config import EncodeConfig
from .decode import plane

_AAC_FRAME = 1024


class VideoClipWriter:
    """Streams yuv420p frames of one clip into a video-only MP4 at `path` (a local temporary file)."""

    def __init__(self, path: str, fps: float, size: tuple[int, int], cfg: EncodeConfig, threads: int) -> None:
        self.path = path
        self.size = size
        self._container = av.open(path, mode="w", format="mp4")
        rate = Fraction(fps).limit_denominator(1001)
        stream = self._container.add_stream("libx264", rate=rate)
        stream.width, stream.height = size
        stream.pix_fmt = "yuv420p"
        stream.codec_context.thread_count = threads
        stream.options = {"crf": str(cfg.crf), "preset": cfg.preset}
        if not _ZEROED.available:
            stream.options["x264-params"] = "bframes=0"  # the reads of unwritten memory need B-frames
        with _x264_call():
            stream.codec_context.open()  # now rather than at the first frame: running out of memory is recognised
        self._stream = stream
        self._time_base = 1 / rate
        self.frames = 0

    def write(self, frame: av.VideoFrame) -> None:
        picture = _clean_copy(frame, self.size)
        picture.pts = self.frames
        picture.time_base = self._time_base
        with _x264_call():
            packets = self._stream.encode(picture)
        self._container.mux(packets)
        self.frames += 1

    def close(self) -> None:
        with _x264_call():
            packets = self._stream.encode(None)
        self._container.mux(packets)
        self._container.close()


class _ZeroedAllocations:
    """Inside `with`, every block glibc's malloc hands out starts zeroed (its perturb byte 0xff: blocks are
    filled with that XOR 0xff, as fresh mmap'd memory is zero anyway); the encoder's calls run inside.

    x264's macroblock-tree rate control reads memory it never wrote when it plans B-frames, so the same pictures
    encoded to different bytes depending on what the process had allocated before: up to 9 of the 48 clips of a
    4-minute source differed between two runs (docs/benchmarks.md, "Deterministic encoding"). Zeroing only
    around x264's own calls keeps the memset per allocation out of everything else (torch, numpy). Blocks of up
    to 1 KiB that glibc serves from its per-thread cache escape the fill; the sandboxed decoders run with that
    cache off (`sandbox.DETERMINISTIC_MALLOC`). Where there is no glibc `mallopt`, `available` is false and the
    encoder does without B-frames: deterministic too, but larger clips."""

    _M_PERTURB = -6

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._inside = 0
        self._mallopt = getattr(ctypes.CDLL(None), "mallopt", None)  # this process's C library
        # What to go back to: a MALLOC_PERTURB_ the process was started with (a debugging aid), else none.
        self._outside = int(os.environ.get("MALLOC_PERTURB_", "0") or 0) & 0xFF if self._mallopt else 0
        self.available = self._mallopt is not None and self._mallopt(self._M_PERTURB, self._outside) == 1
        if not self.available:
            logging.getLogger(__name__).warning(
                "no glibc mallopt here: clips are encoded without B-frames (deterministic, but larger clips, "
                "and other bytes than on Linux with glibc)"
            )

    def __enter__(self) -> None:
        if self.available:
            with self._lock:
                if self._inside == 0:
                    self._mallopt(self._M_PERTURB, 0xFF)
                self._inside += 1

    def __exit__(self, *exc: object) -> None:
        if self.available:
            with self._lock:
                self._inside -= 1
                if self._inside == 0:
                    self._mallopt(self._M_PERTURB, self._outside)


_ZEROED = _ZeroedAllocations()


def _clean_copy(frame: av.VideoFrame, size: tuple[int, int]) -> av.VideoFrame:
    """The picture of a yuv420p `frame` alone, in a new frame whose row padding is zero.

    x264 encodes the frame types a decoder set on its frames (forced P frames: no B-frames, keyframes wherever the
    source had them; the clips came out 7% larger), and its SIMD row copy reads past the picture's width into the
    row padding, which in a decoder's pooled buffers holds whatever earlier frames left there."""
    if frame.format.name != "yuv420p" or (frame.width, frame.height) != size:
        raise ValueError(f"the clip encoder takes yuv420p frames of {size[0]}x{size[1]}, not {frame.format.name} "
                         f"{frame.width}x{frame.height}: convert them first (AlignedDecoder's frames are)")  # fmt: skip
    clean = av.VideoFrame(frame.width, frame.height, "yuv420p")
    for index, target in enumerate(clean.planes):
        if frame.planes[index].line_size < target.width:  # bottom-up (negative stride), e.g. after a vflip filter
            raise ValueError("the clip encoder takes top-down frames: convert the frame first")
        rows = np.frombuffer(target, np.uint8).reshape(target.height, target.line_size)
        rows[:, target.width :] = 0
        rows[:, : target.width] = plane(frame, index)
    return clean


@contextlib.contextmanager
def _x264_call() -> Iterator[None]:
    """Around each call into x264: its allocations zeroed, and running out of memory recognised, which x264 says
    only on stderr ("malloc of size N failed", at the open or at any frame) while the call fails as a generic
    external error."""
    with _ZEROED, _stderr_captured() as captured:
        try:
            yield
        except av.error.ExternalError as e:
            said = captured()
            if "malloc" in said or "memory" in said.lower():
                raise MemoryError("the libx264 encoder could not allocate its buffers") from e
            raise


@contextlib.contextmanager
def _stderr_captured() -> Iterator[Callable[[], str]]:
    """What native code writes to stderr meanwhile, readable through the yielded function and passed on."""
    read_end, write_end = os.pipe()
    # A library that writes more than a pipe holds loses the rest rather than blocking this process.
    fcntl.fcntl(write_end, fcntl.F_SETFL, fcntl.fcntl(write_end, fcntl.F_GETFL) | os.O_NONBLOCK)
    fcntl.fcntl(read_end, fcntl.F_SETFL, fcntl.fcntl(read_end, fcntl.F_GETFL) | os.O_NONBLOCK)
    sys.stderr.flush()
    saved = os.dup(2)
    os.dup2(write_end, 2)
    os.close(write_end)
    chunks: list[bytes] = []

    def captured() -> str:
        with contextlib.suppress(BlockingIOError):
            while chunk := os.read(read_end, 65536):
                chunks.append(chunk)
        return b"".join(chunks).decode(errors="replace")

    try:
        yield captured
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        text = captured()
        os.close(read_end)
        if text:
            sys.stderr.write(text)


def mux_clip(
    video_path: str, audio: np.ndarray, sample_rate: int, cfg: EncodeConfig, audio_options: dict[str, str] | None = None
) -> bytes:
    """The final clip: the encoded video of `video_path` (copied, not re-encoded) plus `audio` as AAC (with the
    encoder's `audio_options`, e.g. a faster coder for previews)."""
    channels = audio.shape[0]
    out_buffer = io.BytesIO()
    with av.open(video_path, mode="r") as source, av.open(out_buffer, mode="w", format="mp4") as out:
        in_video = source.streams.video[0]
        out_video = out.add_stream_from_template(in_video)
        out_audio = out.add_stream("aac", rate=sample_rate, layout="mono" if channels == 1 else "stereo")
        out_audio.bit_rate = cfg.audio_bitrate
        out_audio.codec_context.thread_count = 1
        out_audio.options = audio_options or {}
        audio_packets = _encode_audio(out_audio, audio, sample_rate)
        # Interleave by time so readers never buffer one whole stream to reach the other.
        pending = iter(audio_packets)
        next_audio = next(pending, None)
        for packet in source.demux(in_video):
            if packet.dts is None:
                continue
            video_time = float(packet.dts * packet.time_base)
            while next_audio is not None and float(next_audio.dts * next_audio.time_base) <= video_time:
                out.mux(next_audio)
                next_audio = next(pending, None)
            packet.stream = out_video
            out.mux(packet)
        while next_audio is not None:
            out.mux(next_audio)
            next_audio = next(pending, None)
    return out_buffer.getvalue()


def _encode_audio(stream: av.audio.stream.AudioStream, audio: np.ndarray, sample_rate: int) -> list[av.Packet]:
    layout = "mono" if audio.shape[0] == 1 else "stereo"
    packets: list[av.Packet] = []
    for start in range(0, audio.shape[1], _AAC_FRAME):
        chunk = np.ascontiguousarray(audio[:, start : start + _AAC_FRAME], dtype=np.float32)
        frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout=layout)
        frame.sample_rate = sample_rate
        frame.pts = start
        frame.time_base = Fraction(1, sample_rate)
        packets.extend(stream.encode(frame))
    packets.extend(stream.encode(None))
    return packets
