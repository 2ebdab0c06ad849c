"""Encode clips: H.264 video while frames stream past, then AAC audio and the final MP4 once the clip's
audio shift is known. Deterministic: fixed encoder settings and thread count, no timestamps in headers."""

from __future__ import annotations

import contextlib
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
        _open_encoder(stream.codec_context)
        self._stream = stream
        self._time_base = 1 / rate
        self.frames = 0

    def write(self, frame: av.VideoFrame) -> None:
        frame.pts = self.frames
        frame.time_base = self._time_base
        self._container.mux(self._stream.encode(frame))
        self.frames += 1

    def close(self) -> None:
        self._container.mux(self._stream.encode(None))
        self._container.close()


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
