"""Encode clips: H.264 video while frames stream past, then AAC audio and the final MP4 once the clip's
audio shift is known. Deterministic: fixed encoder settings and thread count, no timestamps in headers, the
encoder handed the picture alone, and its memory zeroed (`_zero_new_memory`)."""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import fcntl
import io
import os
import sys
from collections.abc import Callable, Iterator
from fractions import Fraction

import av
import numpy as np

from .config import EncodeConfig

_AAC_FRAME = 1024


class VideoClipWriter:
    """Streams yuv420p frames of one clip into a video-only MP4 at `path` (a local temporary file)."""

    def __init__(self, path: str, fps: float, size: tuple[int, int], cfg: EncodeConfig, threads: int) -> None:
        self.path = path
        self._container = av.open(path, mode="w", format="mp4")
        rate = Fraction(fps).limit_denominator(1001)
        stream = self._container.add_stream("libx264", rate=rate)
        stream.width, stream.height = size
        stream.pix_fmt = "yuv420p"
        stream.codec_context.thread_count = threads
        stream.options = {"crf": str(cfg.crf), "preset": cfg.preset}
        if not _zero_new_memory():
            stream.options["x264-params"] = "bframes=0"  # the reads of unwritten memory need B-frames
        _open_encoder(stream.codec_context)
        self._stream = stream
        self._time_base = 1 / rate
        self.frames = 0

    def write(self, frame: av.VideoFrame) -> None:
        picture = _clean_copy(frame)
        picture.pts = self.frames
        picture.time_base = self._time_base
        self._container.mux(self._stream.encode(picture))
        self.frames += 1

    def close(self) -> None:
        self._container.mux(self._stream.encode(None))
        self._container.close()


_M_PERTURB = -6  # glibc's mallopt parameter
_zeroed: bool | None = None


def _zero_new_memory() -> bool:
    """Make every block this process allocates from now on start zeroed; false where that cannot be done.

    x264's macroblock-tree rate control reads memory it never wrote when it plans B-frames, so the same pictures
    encoded to different bytes depending on what the process had allocated before (same config, other runs or
    worker counts: about one clip in six of a long source, measured with MALLOC_PERTURB_ patterns in
    tests/test_encode.py). glibc then fills each block it hands out with the perturb byte XOR 0xff, zero for 0xff,
    as fresh mmap'd memory already is. The cost is a memset per allocation and per free. Elsewhere (not glibc) the
    caller encodes without B-frames instead: deterministic, but larger clips."""
    global _zeroed
    if _zeroed is None:
        name = ctypes.util.find_library("c")
        libc = ctypes.CDLL(name) if name else None
        _zeroed = bool(libc is not None and hasattr(libc, "mallopt") and libc.mallopt(_M_PERTURB, 0xFF) == 1)
    return _zeroed


def _clean_copy(frame: av.VideoFrame) -> av.VideoFrame:
    """The picture of a yuv420p `frame` alone, in a new frame whose row padding is zero.

    x264 encodes the frame types a decoder set on its frames (forced P frames: no B-frames, keyframes wherever the
    source had them; the clips came out 9% larger), and its SIMD row copy reads past the picture's width into the
    row padding, which in a decoder's pooled buffers holds whatever earlier frames left there."""
    clean = av.VideoFrame(frame.width, frame.height, "yuv420p")
    for source, target in zip(frame.planes, clean.planes):
        rows = np.frombuffer(target, np.uint8).reshape(target.height, target.line_size)
        rows[:, target.width :] = 0
        rows[:, : target.width] = np.frombuffer(source, np.uint8).reshape(source.height, source.line_size)[
            : target.height, : target.width
        ]
    return clean


def _open_encoder(codec_context: av.CodecContext) -> None:
    """Open the encoder now rather than at the first frame, so that running out of memory is recognised: x264
    says so only on stderr ("malloc of size N failed") and the open fails as a generic external error."""
    with _stderr_captured() as captured:
        try:
            codec_context.open()
        except av.error.ExternalError as e:
            said = captured()
            if "malloc" in said or "memory" in said.lower():
                raise MemoryError(f"the {codec_context.name} encoder could not allocate its buffers") from e
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
