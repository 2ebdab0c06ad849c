"""Decode a source once: both streams, resampled to the targets, aligned by timestamps, streaming.

The output timeline starts at the first video frame (t = 0). Output frame n shows time n / fps and
carries the audio samples of [n / fps, (n + 1) / fps). Audio that starts late is padded with silence,
audio gaps are filled, overlaps are dropped; video is converted to a constant frame rate by
picking the frame on screen at each output instant (variable frame rate sources included). Memory
holds a few frames and the audio not yet paired with video, whatever the source length.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Iterator

import av
import numpy as np

from .config import DecodeConfig
from .probe import MediaError, main_streams, normalise_rotation

_EPS = 1e-4  # seconds: timestamp jitter tolerated when picking frames
_AUDIO_SLACK = 0.002  # seconds: resampler rounding treated as contiguous audio


class DecodeError(MediaError):
    kind = "decode"


@dataclass
class AVFrame:
    index: int  # output frame number on the source timeline
    video: av.VideoFrame  # yuv420p at the target size, square pixels, display orientation
    audio: np.ndarray  # float32 [channels, samples] for [index / fps, (index + 1) / fps)


def display_size(width: int, height: int, sar: Fraction | None, rotation: int) -> tuple[float, float]:
    """The picture as shown: square pixels, turned by the display matrix."""
    display_w = width * float(sar) if sar else float(width)
    display_h = float(height)
    if rotation % 180 == 90:
        display_w, display_h = display_h, display_w
    return display_w, display_h


def target_size(
    width: int, height: int, sar: Fraction | None, rotation: int, short_side: int, upscale: bool = False
) -> tuple[int, int]:
    """Display size (w, h) with the short side at `short_side`, aspect kept, both even.

    A picture whose short side is smaller stays at its own size unless `upscale`: enlarged pixels add no detail.
    """
    display_w, display_h = display_size(width, height, sar, rotation)
    if not upscale:
        short_side = min(short_side, max(2, int(min(display_w, display_h)) // 2 * 2))
    if display_w <= display_h:
        return short_side, max(2, 2 * round(display_h * short_side / display_w / 2))
    return max(2, 2 * round(display_w * short_side / display_h / 2)), short_side


class _AudioTimeline:
    """Audio samples placed on the output timeline by their timestamps."""

    def __init__(self, channels: int, rate: int) -> None:
        self.channels, self.rate = channels, rate
        self.start = 0  # timeline index of the first buffered sample
        self.end = 0  # timeline index one past the last buffered sample
        self._chunks: deque[np.ndarray] = deque()
        self.gaps_filled = 0

    def push(self, samples: np.ndarray, at: int | None) -> None:
        at = self.end if at is None else at
        slack = int(_AUDIO_SLACK * self.rate)
        if at > self.end + slack:  # a gap (or late-starting audio): fill with silence
            self._append(np.zeros((self.channels, at - self.end), np.float32))
            self.gaps_filled += 1
        elif at < self.end - slack:  # overlap (or audio before the first video frame): drop what is already covered
            samples = samples[:, self.end - at :]
        if samples.shape[1]:
            self._append(samples)

    def _append(self, samples: np.ndarray) -> None:
        self._chunks.append(np.ascontiguousarray(samples, dtype=np.float32))
        self.end += samples.shape[1]

    def take(self, stop: int) -> np.ndarray:
        """Samples [start, stop), zero-padded past the end of the audio."""
        want = stop - self.start
        out = np.zeros((self.channels, want), np.float32)
        filled = 0
        while filled < want and self._chunks:
            chunk = self._chunks[0]
            n = min(chunk.shape[1], want - filled)
            out[:, filled : filled + n] = chunk[:, :n]
            filled += n
            if n == chunk.shape[1]:
                self._chunks.popleft()
            else:
                self._chunks[0] = chunk[:, n:]
        self.start = stop
        self.end = max(self.end, stop)
        return out


class AlignedDecoder:
    """Iterate `AVFrame`s of one open container. `rotation` and counters are filled in while decoding."""

    def __init__(self, container: Any, cfg: DecodeConfig, *, max_interleave_s: float = 30.0) -> None:
        self.container, self.cfg = container, cfg
        self.video_stream, self.audio_stream = main_streams(container)
        for stream in (self.video_stream, self.audio_stream):
            stream.thread_type = "AUTO"
            stream.codec_context.thread_count = cfg.threads
        self.fps = Fraction(cfg.fps).limit_denominator(1001)
        # Integer arithmetic on the exact rate: Fraction objects per frame cost measurable CPU.
        self._fps_num, self._fps_den = self.fps.numerator, self.fps.denominator
        self._frame_s = float(1 / self.fps)
        self.max_pending = int(max_interleave_s * cfg.fps)
        self.rotation = 0
        self.size: tuple[int, int] | None = None  # output (w, h)
        self.source_size: tuple[int, int] | None = None  # the source's display (w, h), before any scaling
        self.corrupt_packets = 0
        self.audio = _AudioTimeline(cfg.channels, cfg.sample_rate)
        layout = "mono" if cfg.channels == 1 else "stereo" if cfg.channels == 2 else f"{cfg.channels}c"
        self._resampler = av.AudioResampler(format="fltp", layout=layout, rate=cfg.sample_rate)
        self._graph: Any = None

    def sample_boundary(self, index: int) -> int:
        """Timeline sample where output frame `index` starts (exact for non-integer samples per frame)."""
        num = index * self.cfg.sample_rate * self._fps_den
        return (2 * num + self._fps_num) // (2 * self._fps_num)  # round half up, exactly

    def __iter__(self) -> Iterator[AVFrame]:
        origin: float | None = None
        pending: tuple[av.VideoFrame, float] | None = None  # last decoded frame and its time, not yet superseded
        queue: deque[tuple[int, av.VideoFrame]] = deque()  # emitted video waiting for its audio
        next_index = 0
        audio_done = False
        early_audio: list[av.AudioFrame] = []

        def ready() -> Iterator[AVFrame]:
            while queue and (audio_done or self.audio.end >= self.sample_boundary(queue[0][0] + 1)):
                index, frame = queue.popleft()
                yield AVFrame(index, frame, self.audio.take(self.sample_boundary(index + 1)))

        def emit_until(t: float) -> None:
            nonlocal next_index
            converted = None
            while next_index * self._frame_s < t - _EPS:
                converted = converted or self._convert(pending[0])
                queue.append((next_index, converted))
                next_index += 1
            if len(queue) > self.max_pending:
                raise DecodeError(
                    f"audio and video are interleaved more than {self.max_pending / self.cfg.fps:.0f} s apart; "
                    "remux the source (`ffmpeg -i in -c copy out.mp4`) so streams are interleaved"
                )

        for kind, frame in self._decoded():
            if kind == "audio":
                if frame is None:
                    audio_done = True
                elif origin is None:  # placed once the first video frame fixes the timeline origin
                    early_audio.append(frame)
                    if len(early_audio) > self.max_pending * 4:
                        raise DecodeError("no video frame within the first audio seconds; the video stream is empty")
                else:
                    self._push_audio(frame, origin)
            else:
                t = frame.time if frame.time is not None else (next_index * self._frame_s)
                if origin is None:
                    origin = t
                    self.rotation = normalise_rotation(getattr(frame, "rotation", 0) or 0)
                    for early in early_audio:
                        self._push_audio(early, origin)
                    early_audio.clear()
                t -= origin
                if pending is not None:
                    if t <= pending[1]:  # out-of-order or duplicate timestamp: keep the earlier frame
                        continue
                    emit_until(t)
                pending = (frame, t)
            yield from ready()
        if pending is None:
            raise DecodeError("no decodable video frame in the source (corrupt or truncated video stream)")
        frame, t = pending
        duration = float(frame.duration * frame.time_base) if frame.duration and frame.time_base else 0.0
        if duration <= 0:
            rate = self.video_stream.average_rate or self.fps
            duration = 1.0 / float(rate)
        emit_until(t + duration)
        audio_done = True
        yield from ready()

    def _decoded(self) -> Iterator[tuple[str, Any]]:
        """Demux once, decode both streams; ("audio", None) marks the end of the audio."""
        try:
            for packet in self.container.demux(self.video_stream, self.audio_stream):
                kind = "video" if packet.stream.index == self.video_stream.index else "audio"
                try:
                    frames = packet.decode()
                except av.error.FFmpegError as e:
                    # A damaged packet fails with whatever code the codec picks (EINVAL, EPERM, INVALIDDATA...):
                    # skip it, as the ffmpeg CLI does, and count it in the result. Running out of memory is fatal.
                    if isinstance(e, av.error.MemoryError):
                        raise
                    self.corrupt_packets += 1
                    if self.corrupt_packets > 100:
                        raise DecodeError("more than 100 corrupt packets; the source is damaged beyond use") from None
                    continue
                for frame in frames:
                    if kind == "audio":
                        yield from (("audio", f) for f in self._resampler.resample(frame))
                    else:
                        yield "video", frame
            for f in self._resampler.resample(None):
                yield "audio", f
        except av.error.FFmpegError as e:
            raise DecodeError(
                f"decoding stopped: {e}; the file is damaged or was cut short. Check it with `ffprobe`, or "
                "re-export it"
            ) from e
        yield "audio", None

    def _push_audio(self, frame: av.AudioFrame, origin: float) -> None:
        # The resampler gives planar float32, one plane per channel: read the planes in place (to_ndarray copies).
        samples = np.stack([np.frombuffer(p, np.float32, frame.samples) for p in frame.planes])
        tb = frame.time_base
        if frame.pts is None or tb is None:
            self.audio.push(samples, None)  # no timestamps: assume contiguous
            return
        at = round((frame.pts * tb.numerator / tb.denominator - origin) * self.cfg.sample_rate)
        self.audio.push(samples, at)

    def _convert(self, frame: av.VideoFrame) -> av.VideoFrame:
        """Scale to the target size (square pixels), rotate to display orientation, yuv420p."""
        if self._graph is None:
            self._graph = self._build_graph(frame)
        self._graph.push(frame)
        return self._graph.pull()

    def _build_graph(self, frame: av.VideoFrame) -> Any:
        sar = self.video_stream.sample_aspect_ratio
        width, height = target_size(frame.width, frame.height, sar, self.rotation, self.cfg.short_side, self.cfg.upscale)
        self.size = (width, height)
        self.source_size = tuple(round(x) for x in display_size(frame.width, frame.height, sar, self.rotation))
        scaled_w, scaled_h = (height, width) if self.rotation % 180 == 90 else (width, height)
        graph = av.filter.Graph()
        chain = [graph.add_buffer(template=self.video_stream)]
        chain.append(graph.add("scale", f"{scaled_w}:{scaled_h}:flags=bilinear"))
        chain.append(graph.add("setsar", "1"))
        if self.rotation == 90:
            chain.append(graph.add("transpose", "cclock"))
        elif self.rotation == 270:
            chain.append(graph.add("transpose", "clock"))
        elif self.rotation == 180:
            chain += [graph.add("hflip"), graph.add("vflip")]
        chain.append(graph.add("format", "yuv420p"))
        chain.append(graph.add("buffersink"))
        for a, b in zip(chain, chain[1:]):
            a.link_to(b)
        graph.configure()
        return graph


def plane(frame: av.VideoFrame, index: int) -> np.ndarray:
    """One plane of a yuv420p frame as uint8 [h, w]: a view of the frame's memory, no conversion."""
    data = frame.planes[index]
    return np.frombuffer(data, np.uint8).reshape(data.height, data.line_size)[:, : data.width]


def luma(frame: av.VideoFrame) -> np.ndarray:
    return plane(frame, 0)


def chroma(frame: av.VideoFrame) -> tuple[np.ndarray, np.ndarray]:
    return plane(frame, 1), plane(frame, 2)
