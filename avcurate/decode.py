"""Decode a source once: both streams, resampled to the targets, aligned by timestamps, streaming.

The output timeline starts at the first video frame (t = 0). Output frame n stands for time n / fps and
carries the audio samples of [n / fps, (n + 1) / fps). Audio that starts late is padded with silence,
audio gaps are filled, overlaps are dropped. Video is converted to a constant frame rate the way FFmpeg's
`fps` filter does by default (`round=near`): each source frame is assigned to output slot round(t * fps)
(computed exactly from its pts and time base), and slot n shows the latest source frame assigned to a slot
<= n: when several land in one slot the last wins, empty slots repeat the previous frame. One difference: a
frame exactly between two output instants goes to the even slot, where FFmpeg sends every such tie to the later
one. Ties recur at fixed phases (every odd frame of a 50 fps source, every sixth of a 30 fps one), so FFmpeg's
rule shows all of those pictures late (10 ms on average at 50 fps); alternating them keeps the mean at zero.
The stream ends at slot round(end * fps), `end` being the last frame's time plus its duration. Picking the
frame on screen at n / fps instead (rounding down) would show each picture up to a whole output frame late
against its sound (half a frame, 20 ms at 25 fps, on average). Variable frame rate sources are handled alike.

Real-world streams: audio that is missing (ends early, starts late, pauses) becomes silence, counted per frame;
timestamp resets and jumps are removed as the ffmpeg CLI removes them, so the timeline continues; an audio
format change rebuilds the resampler and a picture size change the scaler (later sizes are letterboxed into the
first one's output size). Memory holds at most `max_interleave_s` of video frames and 60 s of the audio not yet
paired with video (more waits in a temporary file), whatever the source length.
"""

from __future__ import annotations

import math
import os
import tempfile
from collections import deque
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Iterator

import av
import numpy as np

from .config import DecodeConfig
from .probe import MediaError, main_streams, normalise_rotation

_AUDIO_SLACK = 0.002  # seconds: resampler rounding treated as contiguous audio


# Timestamp jumps that are discontinuities, not content. In formats that allow them (MPEG-TS: joined files,
# broadcast splices) FFmpeg's own rule: dts going back by more than 0.1 s, or forward by more than 10 s
# (dts_delta_threshold). Elsewhere a forward jump is a real pause, and only a reset further back than any B-frame
# reordering reaches (packets may carry a pts only) counts.
_DISCONT_BACK_S, _DISCONT_FORWARD_S = 0.1, 10.0
_RESET_BACK_S = 1.0


class _StreamClock:
    """One stream's packet timestamps (in its time base) and the offset that re-anchors them."""

    def __init__(self, time_base: Fraction, back_s: float, forward_s: float | None) -> None:
        self.time_base = time_base
        self.back = round(back_s / time_base)
        self.forward = round(forward_s / time_base) if forward_s is not None else None
        self.last: int | None = None  # the previous packet's raw dts
        self.end = 0  # where the next packet should start (raw)
        self.offset = 0  # added to raw timestamps
        # Another stream's jump, in seconds, to take at this stream's own jump (and that stream's clock).
        self.follow: tuple[Fraction, _StreamClock] | None = None


class _Reanchor:
    """Removes timestamp discontinuities from packets before decoding, so the timeline continues across them.

    The stream that meets a jump first is shifted to continue where it left off; every other stream takes the
    same shift at its own jump, so the new segment keeps its own audio-video alignment.
    """

    def __init__(self, streams: tuple[Any, ...], discontinuous_format: bool) -> None:
        back_s = _DISCONT_BACK_S if discontinuous_format else _RESET_BACK_S
        forward_s = _DISCONT_FORWARD_S if discontinuous_format else None
        self._clocks = {s.index: _StreamClock(s.time_base or Fraction(1, 90000), back_s, forward_s) for s in streams}
        self.jumps = 0

    def adjust(self, packet: av.Packet) -> None:
        clock = self._clocks[packet.stream.index]
        raw = packet.dts if packet.dts is not None else packet.pts
        if raw is None:
            return
        last = clock.last
        jumped = last is not None and (
            raw < last - clock.back or (clock.forward is not None and raw > clock.end + clock.forward)
        )
        if clock.follow is not None and (jumped or last is None):
            # The same discontinuity, met first in another stream (a stream that starts after it is on the new clock).
            clock.offset += round(clock.follow[0] / clock.time_base)
        elif jumped:
            delta = raw - clock.end
            clock.offset -= delta
            for other in self._clocks.values():
                if other is not clock:
                    other.follow = (-delta * clock.time_base, clock)
            self.jumps += 1
        elif clock.follow is not None and clock.follow[0] < 0:
            # A forward jump this stream does not share is a gap in the other stream alone, not a new clock: put
            # that stream back on its own timestamps (only packets demuxed in between were moved).
            shift, source = clock.follow
            source.offset -= round(shift / source.time_base)
            self.jumps -= 1
        clock.follow = None
        clock.end = raw + (packet.duration or (raw - last if last is not None else 0))
        clock.last = raw
        if clock.offset:
            if packet.pts is not None:
                packet.pts += clock.offset
            if packet.dts is not None:
                packet.dts += clock.offset


class DecodeError(MediaError):
    kind = "decode"


@dataclass
class AVFrame:
    index: int  # output frame number on the source timeline
    video: av.VideoFrame  # yuv420p at the target size, square pixels, display orientation
    audio: np.ndarray  # float32 [channels, samples] for [index / fps, (index + 1) / fps)
    audio_missing: int = 0  # how many of those samples are silence standing in for audio the source lacks


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


def fit_size(display_w: float, display_h: float, box: tuple[int, int], upscale: bool = False) -> tuple[int, int]:
    """The largest even (w, h) of the display aspect that fits in `box`, not enlarged unless `upscale`."""
    scale = min(box[0] / display_w, box[1] / display_h)
    if not upscale:
        scale = min(scale, 1.0)
    return tuple(min(side, max(2, 2 * round(x * scale / 2))) for x, side in zip((display_w, display_h), box))


@dataclass(frozen=True)
class _Spilled:
    """`samples` samples written to the spill file, next in line to be read back."""

    samples: int


class _AudioTimeline:
    """Audio samples placed on the output timeline by their timestamps; silence where there are none.

    Silence is kept as a count of samples, not as zeros, so that each frame can say how much of its audio was
    missing (`take`). At most `memory_s` of audio waits in memory for its video; beyond that it waits in an
    unnamed temporary file, read back in order, so audio that runs on long past the video (or ahead of it)
    costs disk, not memory.
    """

    def __init__(self, channels: int, rate: int, memory_s: float = 60.0) -> None:
        self.channels, self.rate = channels, rate
        self.start = 0  # timeline index of the first buffered sample
        self.end = 0  # timeline index one past the last buffered sample
        self._chunks: deque[np.ndarray | int | _Spilled] = deque()  # samples, silence (a count), or spilled samples
        self.gaps_filled = 0
        self.missing = 0  # samples handed out as silence because the source had no audio for them
        self.late = 0  # samples that came after their frames had been handed out with silence (dropped)
        self._silent = (0, 0)  # the last stretch `take` handed out as silence for audio not yet there
        self._anchor_to_first = False  # `start_at`: the first audio pushed may move the start back to itself
        self._memory_limit = int(memory_s * rate)
        self.in_memory = 0  # samples held in memory
        self.peak_in_memory = 0
        self._spill: Any = None  # the temporary file, made when first needed
        self._spill_read = self._spill_write = 0  # byte offsets: the file is a queue

    def start_at(self, sample: int) -> None:
        """Start the timeline at `sample` rather than 0 (a span, decoded after a seek), or at the first audio
        pushed if that comes earlier: audio is then placed by its own timestamps, as in a decode from the start,
        not moved by up to `_AUDIO_SLACK` onto this boundary (and every later sample with it)."""
        self.start = self.end = sample
        self._anchor_to_first = True

    def push(self, samples: np.ndarray, at: int | None) -> None:
        if self._anchor_to_first:
            self._anchor_to_first = False
            if at is not None and at < self.start:
                self.start = self.end = at
        at = self.end if at is None else at
        slack = int(_AUDIO_SLACK * self.rate)
        if at > self.end + slack:  # a gap (or late-starting audio): fill with silence
            self._chunks.append(at - self.end)
            self.end = at
            self.gaps_filled += 1
        elif at < self.end - slack:  # overlap (or audio before the first video frame): drop what is already covered
            self.late += max(0, min(at + samples.shape[1], self._silent[1]) - max(at, self._silent[0]))
            samples = samples[:, self.end - at :]
        n = samples.shape[1]
        if not n:
            return
        samples = np.ascontiguousarray(samples, dtype=np.float32)
        # Once anything is spilled, later audio follows it to the file: the queue stays in timeline order.
        if self._spill_write > self._spill_read or self.in_memory + n > self._memory_limit:
            self._spill_out(samples)
        else:
            self._chunks.append(samples)
            self.in_memory += n
            self.peak_in_memory = max(self.peak_in_memory, self.in_memory)
        self.end += n

    def _spill_out(self, samples: np.ndarray) -> None:
        if self._spill is None:
            self._spill = tempfile.TemporaryFile(prefix="avcurate-audio-")
        data = samples.tobytes()
        os.pwrite(self._spill.fileno(), data, self._spill_write)
        self._spill_write += len(data)
        self._chunks.append(_Spilled(samples.shape[1]))

    def _spill_in(self, spilled: _Spilled) -> np.ndarray:
        size = spilled.samples * self.channels * 4
        data = os.pread(self._spill.fileno(), size, self._spill_read)
        self._spill_read += size
        if self._spill_read == self._spill_write:  # drained: start the file over
            self._spill.truncate(0)
            self._spill_read = self._spill_write = 0
        self.in_memory += spilled.samples
        return np.frombuffer(data, np.float32).reshape(self.channels, spilled.samples)

    def take(self, stop: int) -> tuple[np.ndarray, int]:
        """Samples [start, stop), and how many of them are silence standing in for missing audio."""
        want = stop - self.start
        out = np.zeros((self.channels, want), np.float32)
        filled = silent = 0
        while filled < want and self._chunks:
            chunk = self._chunks[0]
            if isinstance(chunk, _Spilled):
                chunk = self._chunks[0] = self._spill_in(chunk)
            size = chunk if isinstance(chunk, int) else chunk.shape[1]
            n = min(size, want - filled)
            if isinstance(chunk, int):
                silent += n
            else:
                out[:, filled : filled + n] = chunk[:, :n]
                self.in_memory -= n
            filled += n
            if n == size:
                self._chunks.popleft()
            else:
                self._chunks[0] = chunk - n if isinstance(chunk, int) else chunk[:, n:]
        if filled < want:  # past the end of the audio that has come
            silent += want - filled
            begin = self.start + filled
            self._silent = (self._silent[0] if self._silent[1] == begin else begin, stop)
        self.start = stop
        self.end = max(self.end, stop)
        self.missing += silent
        return out, silent


# A span's decode starts this far before its first frame (and at the keyframe before that), so that the audio
# decoder's overlap and the resampler's filter are warm when the span's first frame comes.
SPAN_PREROLL_S = 1.0


class AlignedDecoder:
    """Iterate `AVFrame`s of one open container. `rotation` and counters are filled in while decoding.

    With `start_frame`/`end_frame`, only output frames [start_frame, end_frame) come out, on the source's own
    timeline (the same indices, pictures and audio samples as a decode from the start): the decoder seeks to
    the keyframe before start_frame - `SPAN_PREROLL_S` instead of decoding what comes before.
    """

    def __init__(
        self, container: Any, cfg: DecodeConfig, *, max_interleave_s: float = 30.0, start_frame: int = 0,
        end_frame: int | None = None,
    ) -> None:
        self.container, self.cfg = container, cfg
        self.start_frame, self.end_frame = start_frame, end_frame
        self.reached_end_frame = False  # stopped at end_frame, before the source's end
        self._first_audio: av.AudioFrame | None = None  # a span's: the first audio frame of a decode from the start
        self.pictures_decoded = 0  # video frames out of the codec: what a span's seek saves
        self.video_stream, self.audio_stream = main_streams(container)
        for stream in (self.video_stream, self.audio_stream):
            stream.thread_type = "AUTO"
            stream.codec_context.thread_count = cfg.threads
        self.fps = Fraction(cfg.fps).limit_denominator(1001)
        # Integer arithmetic on the exact rate: Fraction objects per frame cost measurable CPU.
        self._fps_num, self._fps_den = self.fps.numerator, self.fps.denominator
        # Demux is in timestamp order, within this much in a well-formed file: audio for a time further behind the
        # video than this is not coming any more.
        self.max_interleave_s = max_interleave_s
        self.max_pending = int(max_interleave_s * cfg.fps)
        self.rotation = 0
        self.size: tuple[int, int] | None = None  # output (w, h)
        self.source_size: tuple[int, int] | None = None  # the source's display (w, h), before any scaling
        self.corrupt_packets = 0
        self.audio = _AudioTimeline(cfg.channels, cfg.sample_rate)
        self.audio_lead_s = 0.0  # audio before the first video frame: outside the timeline, not used
        self.audio_format_changes = 0
        self.size_changes = 0  # picture geometry changes mid-stream; later pictures are letterboxed into `size`
        self.later_sizes: dict[tuple[int, int], None] = {}  # their display sizes, in order, each once
        discontinuous = bool(container.format.flags & av.format.Flags.ts_discont.value)
        self._reanchor = _Reanchor((self.video_stream, self.audio_stream), discontinuous)
        self._audio_input: tuple[str, str, int] | None = None  # the resampler's input format, layout and rate
        self._resampler: Any = None
        # The previous audio packet's pts and duration, and its frame's pts, samples, rate and time base (`_retime`).
        self._audio_prev: tuple[Any, ...] | None = None
        self._geometry: tuple[int, int, str, Fraction | None] | None = None  # what the scaler graph was built for
        self._first_sar: Fraction | None = None
        self._graph: Any = None

    @property
    def discontinuities(self) -> int:
        """Timestamp resets and jumps removed (the timeline continues across them)."""
        return self._reanchor.jumps

    def sample_boundary(self, index: int) -> int:
        """Timeline sample where output frame `index` starts (exact for non-integer samples per frame)."""
        num = index * self.cfg.sample_rate * self._fps_den
        return (2 * num + self._fps_num) // (2 * self._fps_num)  # round half up, exactly

    def _slot(self, ticks: int) -> int:
        """Output slot of a frame `ticks` time-base units after the first one: round(t * fps), ties to even."""
        slot, rest = divmod(ticks * self._slot_num, self._slot_den)
        twice = 2 * rest
        return slot + (twice > self._slot_den or (twice == self._slot_den and slot % 2 == 1))

    def __iter__(self) -> Iterator[AVFrame]:
        origin: float | None = None  # seconds: the first video frame's time (audio is placed against it)
        first_pts = 0  # the first video frame's pts: frame times are exact integers (ticks) after it
        tb = self.video_stream.time_base or Fraction(1, 90000)
        # slot = round(ticks * tb * fps), in integers: no Fraction per frame, no float rounding at ties.
        self._slot_num, self._slot_den = tb.numerator * self._fps_num, tb.denominator * self._fps_den
        # A span starting within the pre-roll is decoded from the start: a seek there gains nothing, and a decoder
        # flushed by a seek to the start does not always decode the first packets as a fresh one does (AAC).
        seeked = self.start_frame > SPAN_PREROLL_S * self.fps
        if seeked:
            first_pts = self._seek_to_span(tb)
            origin = float(first_pts * tb)
        rate = self.video_stream.average_rate or self.fps
        nominal_ticks = max(1, round(1 / (rate * tb)))  # one source frame, for frames without pts or duration
        pending: tuple[av.VideoFrame, int] | None = None  # last decoded frame and its ticks, not yet superseded
        queue: deque[tuple[int, av.VideoFrame]] = deque()  # emitted video waiting for its audio
        next_index = 0
        audio_done = False
        early_audio: deque[av.AudioFrame] = deque()  # before the first video frame: its time is not known yet
        first_audio_s: float | None = None

        def ready() -> Iterator[AVFrame]:
            # A frame goes once its audio has come, or cannot come any more: the audio ended, or the video is
            # more than the interleave window past it (the audio is missing there: silence).
            while queue and (
                audio_done
                or self.audio.end >= self.sample_boundary(queue[0][0] + 1)
                or queue[0][0] < next_index - self.max_pending
            ):
                index, frame = queue.popleft()
                audio, missing = self.audio.take(self.sample_boundary(index + 1))
                if index >= self.start_frame:  # a span's pre-roll only moves the audio timeline on
                    yield AVFrame(index, frame, audio, missing)

        def emit_until(slot: int) -> None:
            """The pending frame fills output slots up to, not including, `slot`."""
            nonlocal next_index
            converted = None
            if self.end_frame is not None:
                slot = min(slot, self.end_frame)
            while next_index < slot:
                if next_index >= self.start_frame:
                    converted = converted or self._convert(pending[0])
                queue.append((next_index, converted))
                next_index += 1

        for kind, frame in self._decoded():
            if kind == "audio":
                if frame is None:
                    audio_done = True
                elif pending is None:  # placed once the first video frame fixes the timeline (origin, or span start)
                    first_audio_s = frame.time if first_audio_s is None else first_audio_s
                    early_audio.append(frame)
                    # The first video frame cannot be further behind this audio than the interleave window, and
                    # audio before it is not used: keep only what could still be needed.
                    while early_audio[-1].time - early_audio[0].time > self.max_interleave_s:
                        early_audio.popleft()
                else:
                    self._push_audio(frame, origin)
            else:
                pts = frame.pts
                if origin is None:
                    first_pts = pts if pts is not None else 0
                    origin = float(first_pts * tb)
                    self.rotation = normalise_rotation(getattr(frame, "rotation", 0) or 0)
                    if first_audio_s is not None:
                        self.audio_lead_s = max(0.0, origin - first_audio_s)
                if pts is not None:
                    ticks = pts - first_pts
                else:  # no timestamp: one nominal source frame after the previous one
                    ticks = pending[1] + nominal_ticks if pending is not None else 0
                if pending is None:
                    if seeked:  # the first picture after the seek: the timeline resumes at its slot
                        next_index = self._slot(ticks)
                        if next_index > self.start_frame:
                            raise DecodeError(f"seeking landed after frame {self.start_frame}, the span's start")
                        self.audio.start_at(self.sample_boundary(next_index))
                    for early in early_audio:
                        self._push_audio(early, origin)
                    early_audio.clear()
                if pending is not None:
                    if ticks <= pending[1]:  # out-of-order or duplicate timestamp: keep the earlier frame
                        continue
                    # Frames up to the new one's slot show the pending frame; if the new frame lands in a slot
                    # already filled or in the same slot, it simply replaces the pending one (the last one wins).
                    emit_until(self._slot(ticks))
                pending = (frame, ticks)
            yield from ready()
            if self.end_frame is not None and next_index >= self.end_frame and not queue:
                self.reached_end_frame = True
                return
        if pending is None:
            raise DecodeError("no decodable video frame in the source (corrupt or truncated video stream)")
        frame, ticks = pending
        duration = frame.duration if frame.duration and frame.duration > 0 else nominal_ticks
        # The end of the stream is rounded as frame times are (FFmpeg's fps filter does so); a source with any
        # video gives at least one output frame.
        emit_until(max(self._slot(ticks + duration), 1))
        audio_done = True
        yield from ready()

    def _seek_to_span(self, tb: Fraction) -> int:
        """Find the origin (the first picture's pts), then seek to a keyframe before `start_frame`, less the pre-roll.

        A demuxer may land on a keyframe after the time asked for (a sparse or wrong index): the landing is
        checked, and such a span is decoded from the source's start instead, slower but on the same timeline.
        """
        first, self._first_audio = self._first_frames()
        if first is None:
            raise DecodeError("no decodable video frame in the source (corrupt or truncated video stream)")
        first_pts = first.pts if first.pts is not None else 0
        self.rotation = normalise_rotation(getattr(first, "rotation", 0) or 0)
        self._convert(first)  # the output size is the first picture's, as in a decode from the start
        target = first_pts + int((self.start_frame / self.fps - Fraction(SPAN_PREROLL_S)) / tb)
        self.container.seek(target, stream=self.video_stream)
        landed, _ = self._first_frames(audio=False)
        if landed is None or landed.pts is None or self._slot(landed.pts - first_pts) > self.start_frame:
            target = first_pts
        self.container.seek(target, stream=self.video_stream)
        return first_pts

    def _first_frames(self, audio: bool = True) -> tuple[av.VideoFrame | None, av.AudioFrame | None]:
        """The first picture (and audio frame) decodable from the demuxer's position."""
        streams = (self.video_stream, self.audio_stream) if audio else (self.video_stream,)
        picture = sound = None
        for packet in self.container.demux(*streams):
            if packet.stream.index == self.video_stream.index and picture is not None:
                continue
            if packet.stream.index == self.audio_stream.index and sound is not None:
                continue
            try:
                frames = packet.decode()
            except av.error.FFmpegError:
                continue  # a damaged packet: the decode proper meets and counts it
            for frame in frames[:1]:
                if packet.stream.index == self.video_stream.index:
                    self.pictures_decoded += 1
                    picture = frame
                else:
                    sound = frame
            if picture is not None and (sound is not None or not audio):
                break
            if picture is not None and picture.time is not None and packet.pts is not None and (
                packet.pts * packet.time_base > picture.time + self.max_interleave_s
            ):
                break  # no audio near the first picture: the seek does without its phase (_in_phase)
        return picture, sound

    def _in_phase(self, frame: av.AudioFrame) -> av.AudioFrame | None:
        """The first audio after a seek, less its first samples up to the resampler's phase in a decode from the
        start (counted from that decode's first audio frame), so the resampler computes the same output samples.
        Resampling from `rate` to the target repeats every rate / gcd(rate, target) samples. None: all cut."""
        first = self._first_audio
        if first.pts is None or frame.pts is None or frame.time_base is None:
            self._first_audio = None
            return frame
        rate = frame.sample_rate
        period = rate // math.gcd(rate, self.cfg.sample_rate)
        offset = round((frame.pts * frame.time_base - first.pts * first.time_base) * rate)
        skip = -offset % period
        if skip >= frame.samples:  # a short frame: the next one is cut instead
            return None
        self._first_audio = None
        if not skip:
            return frame
        step = 1 if frame.format.is_planar else len(frame.layout.channels)
        trimmed = av.AudioFrame.from_ndarray(
            frame.to_ndarray()[:, skip * step :], format=frame.format.name, layout=frame.layout.name
        )
        trimmed.sample_rate, trimmed.time_base = rate, frame.time_base
        trimmed.pts = frame.pts + round(skip / (rate * frame.time_base))
        return trimmed

    def _decoded(self) -> Iterator[tuple[str, Any]]:
        """Demux once, decode both streams; ("audio", None) marks the end of the audio."""
        try:
            for packet in self.container.demux(self.video_stream, self.audio_stream):
                kind = "video" if packet.stream.index == self.video_stream.index else "audio"
                self._reanchor.adjust(packet)
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
                        if self._first_audio is not None:
                            frame = self._in_phase(frame)
                            if frame is None:
                                continue
                        self._retime(packet, frame)
                        yield from (("audio", f) for f in self._resample(frame))
                    else:
                        self.pictures_decoded += 1
                        yield "video", frame
            yield from (("audio", f) for f in self._resample(None))
        except av.error.FFmpegError as e:
            raise DecodeError(
                f"decoding stopped: {e}; the file is damaged or was cut short. Check it with `ffprobe`, or "
                "re-export it"
            ) from e
        yield "audio", None

    def _resample(self, frame: av.AudioFrame | None) -> list[av.AudioFrame]:
        """To the target rate and layout; a new resampler when the input format changes (the old one flushed)."""
        flushed: list[av.AudioFrame] = []
        if frame is not None:
            audio_input = (frame.format.name, frame.layout.name, frame.sample_rate)
            if audio_input != self._audio_input:
                if self._resampler is not None:
                    flushed = self._resampler.resample(None)
                    self.audio_format_changes += 1
                layout = "mono" if self.cfg.channels == 1 else "stereo" if self.cfg.channels == 2 else f"{self.cfg.channels}c"
                self._resampler = av.AudioResampler(format="fltp", layout=layout, rate=self.cfg.sample_rate)
                self._audio_input = audio_input
        elif self._resampler is None:
            return []
        # A pass-through resampler (input already in the target format) answers a flush with [None].
        return [f for f in flushed + self._resampler.resample(frame) if f is not None]

    def _retime(self, packet: av.Packet, frame: av.AudioFrame) -> None:
        """Timestamps the demuxer extrapolated from the stream's first sample rate, redone at the actual one.

        MPEG-TS carries a timestamp per PES packet, which holds several audio frames; the demuxer times the
        others by the frame durations of the stream's header rate, which are wrong after a rate change (the
        frames would overlap or leave gaps). A packet timed exactly one packet duration after the previous one
        is such a frame: it follows the previous one's samples instead.
        """
        prev, raw = self._audio_prev, packet.pts
        if self.audio_format_changes and prev is not None and prev[2] is not None and raw == prev[0] + prev[1]:
            _, _, pts, samples, rate, time_base = prev
            frame.pts = pts + round(samples / (rate * time_base))
        # Kept raw, and worked out only after a change: a Fraction per audio frame would cost CPU for nothing.
        self._audio_prev = (raw, packet.duration or 0, frame.pts, frame.samples, frame.sample_rate, frame.time_base)

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
        # Once per output picture, not per slot: a few attribute reads.
        geometry = (frame.width, frame.height, frame.format.name, self.video_stream.codec_context.sample_aspect_ratio)
        if geometry != self._geometry:
            self._graph = self._build_graph(frame, geometry[3])
            self._geometry = geometry
        self._graph.push(frame)
        return self._graph.pull()

    def _build_graph(self, frame: av.VideoFrame, codec_sar: Fraction | None) -> Any:
        """The scaler for this input geometry. The first sets the output size; later ones are letterboxed into it."""
        if self.size is None:
            self._first_sar = codec_sar
        # The stream's aspect (the container's, where it says one) unless the codec's own has changed since.
        sar = self.video_stream.sample_aspect_ratio if codec_sar == self._first_sar else codec_sar
        display_w, display_h = display_size(frame.width, frame.height, sar, self.rotation)
        if self.size is None:
            self.size = target_size(frame.width, frame.height, sar, self.rotation, self.cfg.short_side, self.cfg.upscale)
            self.source_size = (round(display_w), round(display_h))
            width, height = self.size
        else:
            width, height = fit_size(display_w, display_h, self.size, self.cfg.upscale)
            self.size_changes += 1
            self.later_sizes[round(display_w), round(display_h)] = None
        scaled_w, scaled_h = (height, width) if self.rotation % 180 == 90 else (width, height)
        graph = av.filter.Graph()
        chain = [graph.add_buffer(template=self.video_stream, width=frame.width, height=frame.height, format=frame.format)]
        chain.append(graph.add("scale", f"{scaled_w}:{scaled_h}:flags=bilinear"))
        chain.append(graph.add("setsar", "1"))
        if self.rotation == 90:
            chain.append(graph.add("transpose", "cclock"))
        elif self.rotation == 270:
            chain.append(graph.add("transpose", "clock"))
        elif self.rotation == 180:
            chain += [graph.add("hflip"), graph.add("vflip")]
        if (width, height) != self.size:
            chain.append(graph.add("pad", f"{self.size[0]}:{self.size[1]}:(ow-iw)/2:(oh-ih)/2:black"))
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
