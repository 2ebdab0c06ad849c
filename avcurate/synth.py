"""Synthetic audio-visual test media, made with the ffmpeg CLI, and a small decoder that reads it back.

A clip shows short visual events (a white box that flashes and fades at a random spot over a moving, noisy,
dark background) and plays a short tone burst, over low background noise, when each event happens. The
audio track can be shifted against the picture, replaced by an unrelated event pattern, or silenced, and the
picture can be frozen: these are the cases a sync scorer has to tell apart.
"""

from __future__ import annotations

import math
import subprocess
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from avcurate.scorers.base import ClipSignals

_BACKGROUND_LUMA_GAIN = 0.35  # keeps the moving gradient dark so flashes stand out
_BOX_FRACTION = 0.3  # flash box side, as a fraction of the frame side
_MIN_FLASH_ALPHA = 0.02  # the fade stops below this, so the box never vanishes with a visible jump
_TONE_AMPLITUDE = 0.5
_NOISE_AMPLITUDE = 0.01  # about -40 dBFS: audible floor, far below the bursts
_UNRELATED_SEED_OFFSET = 7919  # unrelated audio draws its events from a different stream


@dataclass(frozen=True)
class _Flash:
    frame: int  # the frame the box appears on
    x: int
    y: int


def random_events(
    duration_s: float,
    *,
    seed: int = 0,
    fps: float = 25.0,
    rate_hz: float = 1.5,
    min_gap_s: float = 0.35,
    margin_s: float = 0.3,
) -> list[float]:
    """An irregular event pattern on the frame grid (so a flash starts exactly when its sound does).

    Gaps are the minimum gap plus an exponential part, so the mean rate is about `rate_hz`.
    """
    rng = np.random.default_rng(seed)
    min_gap = math.ceil(min_gap_s * fps)
    mean_extra = max(fps / rate_hz - min_gap, 1.0)
    frame = math.ceil(margin_s * fps) + int(rng.integers(0, min_gap))
    last = int((duration_s - margin_s) * fps)
    events: list[float] = []
    while frame <= last:
        events.append(frame / fps)
        frame += min_gap + int(rng.exponential(mean_extra))
    return events


def write_event_video(
    path: str | Path,
    *,
    duration_s: float = 6.0,
    events: list[float] | None = None,
    audio_shift_ms: float = 0.0,
    unrelated_audio: bool = False,
    silent_audio: bool = False,
    static_picture: bool = False,
    size: tuple[int, int] = (320, 240),
    fps: int = 25,
    sample_rate: int = 44100,
    seed: int = 0,
    event_len_s: float = 0.08,
) -> Path:
    """Write an H.264/AAC MP4 whose sounds follow its flashes by `audio_shift_ms` (negative: sound first).

    Both streams start at 0 and last `duration_s`; sounds shifted outside the clip are simply not heard.
    A flash appears on the first frame at or after its event time, so events off the frame grid are late.
    """
    path = Path(path)
    if events is None:
        events = random_events(duration_s, seed=seed, fps=fps)
    if unrelated_audio:
        sound_times = random_events(duration_s, seed=seed + _UNRELATED_SEED_OFFSET, fps=fps)
    else:
        sound_times = [t + audio_shift_ms / 1000.0 for t in events]
    video = _video_graph(duration_s, events, size, fps, seed, event_len_s, static_picture)
    if silent_audio:
        audio = _silence_graph(duration_s, sample_rate)
    else:
        audio = _audio_graph(duration_s, sound_times, sample_rate, seed, event_len_s)
    cmd = [
        "ffmpeg", "-nostdin", "-v", "error", "-y",
        "-f", "lavfi", "-i", video,
        "-f", "lavfi", "-i", audio,
        "-map", "0:v", "-map", "1:a",
        "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p",
        "-c:a", "aac", "-b:a", "96k",
        "-threads", "1", "-shortest",
        "-fflags", "+bitexact", "-flags:v", "+bitexact", "-flags:a", "+bitexact",
        str(path),
    ]  # fmt: skip
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"ffmpeg failed ({result.returncode}) writing {path}: {result.stderr.strip()}")
    return path


def _video_graph(
    duration_s: float,
    events: list[float],
    size: tuple[int, int],
    fps: int,
    seed: int,
    event_len_s: float,
    static_picture: bool,
) -> str:
    w, h = size
    if static_picture:
        # A textured but frozen picture: nothing changes from frame to frame.
        return f"color=c=0x303030:s={w}x{h}:r={fps}:d={duration_s},drawgrid=w=24:h=24:t=2:c=0x707070,format=yuv420p"
    # Colours from the seed: gradients' default "random" colours come from the clock, not the seed.
    c0, c1 = (f"0x{int(c):06x}" for c in np.random.default_rng(seed + 3).integers(0, 1 << 24, size=2))
    parts = [
        # Rendered small and scaled up: the soft gradient looks the same and costs a sixteenth.
        f"gradients=s={max(w // 4, 2)}x{max(h // 4, 2)}:r={fps}:d={duration_s}:speed=0.02:seed={seed}"
        f":c0={c0}:c1={c1}",
        f"scale={w}:{h}",
        f"lutyuv=y=16+val*{_BACKGROUND_LUMA_GAIN}",
        f"noise=alls=10:allf=t:all_seed={seed}",
    ]
    box_w, box_h = int(w * _BOX_FRACTION), int(h * _BOX_FRACTION)
    for flash in _flashes(events, w - box_w, h - box_h, fps, seed):
        for i, alpha in enumerate(_flash_alphas(fps, event_len_s)):
            parts.append(
                f"drawbox=x={flash.x}:y={flash.y}:w={box_w}:h={box_h}:c=white@{alpha:.3f}:t=fill"
                f":enable='eq(n,{flash.frame + i})'"
            )
    parts.append("format=yuv420p")
    return ",".join(parts)


def _flashes(events: list[float], max_x: int, max_y: int, fps: int, seed: int) -> list[_Flash]:
    rng = np.random.default_rng(seed + 1)
    return [
        _Flash(frame=math.ceil(t * fps - 1e-6), x=int(rng.integers(0, max_x + 1)), y=int(rng.integers(0, max_y + 1)))
        for t in events
    ]


def _flash_alphas(fps: int, event_len_s: float) -> list[float]:
    """Opacity per frame: an exponential fade, so the box has one sharp onset and no sharp offset."""
    tau_frames = max(event_len_s * fps / 3.0, 1e-3)
    count = math.floor(-math.log(_MIN_FLASH_ALPHA) * tau_frames) + 1
    return [math.exp(-i / tau_frames) for i in range(count)]


def _audio_graph(duration_s: float, times: list[float], sample_rate: int, seed: int, event_len_s: float) -> str:
    rng = np.random.default_rng(seed + 2)
    tau = event_len_s / 3.0
    # if() evaluates its branch only inside the burst, which keeps long event lists cheap.
    bursts = [
        f"if(between(t,{t:.6f},{t + event_len_s:.6f}),"
        f"{_TONE_AMPLITUDE}*sin(2*PI*{freq:.1f}*t)*exp(({t:.6f}-t)/{tau:.6f}))"
        for t, freq in zip(times, rng.uniform(500.0, 2000.0, size=len(times)))
        if t + event_len_s > 0 and t < duration_s
    ]
    expr = "+".join(bursts) or "0"
    return (
        f"aevalsrc=exprs='{expr}':s={sample_rate}:d={duration_s}[tone];"
        f"anoisesrc=a={_NOISE_AMPLITUDE}:c=white:seed={seed}:r={sample_rate}:d={duration_s}[noise];"
        "[tone][noise]amix=inputs=2:normalize=0"
    )


def _silence_graph(duration_s: float, sample_rate: int) -> str:
    return f"anullsrc=r={sample_rate}:cl=mono:d={duration_s}"


def decode_signals(path: str | Path, fps: float = 25.0, sample_rate: int = 16000, short_side: int = 64) -> ClipSignals:
    """Decode a file into ClipSignals with PyAV: luma at `fps`, mono audio at `sample_rate`, both from t=0.

    Frames and samples are placed by their timestamps, so a stream that starts late is padded at the front.
    The clip spans the video stream; the audio is cut or padded with silence to match it.
    """
    times: list[float] = []
    frames: list[np.ndarray] = []
    audio = _MonoAudio(sample_rate)
    with av.open(str(path)) as container:
        streams = [*container.streams.video[:1], *container.streams.audio[:1]]
        for packet in container.demux(streams):
            for frame in packet.decode():
                if isinstance(frame, av.VideoFrame):
                    times.append(Fraction(frame.pts) * frame.time_base)  # exact: slots are rounded at ties
                    frames.append(_small_gray(frame, short_side))
                elif isinstance(frame, av.AudioFrame):
                    audio.add(frame)
    gray = _to_frame_grid(times, frames, fps)
    n_samples = round(gray.shape[0] / fps * sample_rate)
    samples = audio.finish()
    samples = np.pad(samples, (0, max(n_samples - samples.size, 0)))[:n_samples]
    return ClipSignals(audio=samples[None, :], sample_rate=sample_rate, gray=gray, fps=fps)


def _small_gray(frame: av.VideoFrame, short_side: int) -> np.ndarray:
    scale = short_side / min(frame.width, frame.height)
    w, h = max(round(frame.width * scale), 1), max(round(frame.height * scale), 1)
    return frame.reformat(width=w, height=h, format="gray").to_ndarray().astype(np.float32) / 255.0


def _to_frame_grid(times: list[Fraction], frames: list[np.ndarray], fps: float) -> np.ndarray:
    """Resample to a constant rate as FFmpeg's fps filter (and avcurate's decoder) do.

    Each source frame goes to output slot round(t * fps) (ties to even, as the decoder); output frame i shows the latest
    source frame in a slot <= i (the first frame before it). The clip ends at slot round(end * fps), `end` being
    the last frame's time plus the typical frame step.
    """
    if not frames:
        return np.zeros((0, 1, 1), np.float32)
    rate = Fraction(fps).limit_denominator(1001)
    order = sorted(range(len(times)), key=lambda i: times[i])
    ordered = [times[i] for i in order]
    step = sorted(b - a for a, b in zip(ordered, ordered[1:]))[len(ordered) // 2 - 1] if len(ordered) > 1 else 1 / rate
    slots = np.array([_round_half_even(t * rate) for t in ordered])
    count = max(_round_half_even((ordered[-1] + step) * rate), 1)
    index = np.clip(np.searchsorted(slots, np.arange(count), side="right") - 1, 0, len(order) - 1)
    return np.stack([frames[order[i]] for i in index])


def _round_half_even(x: Fraction) -> int:
    return round(x)  # Fraction rounds half to even, as the decoder does


class _MonoAudio:
    """Resamples decoded audio to mono float32 and places it on a timeline that starts at t=0."""

    def __init__(self, sample_rate: int) -> None:
        self.sample_rate = sample_rate
        self._resampler = av.AudioResampler(format="flt", layout="mono", rate=sample_rate)
        self._start: float | None = None
        self._chunks: list[np.ndarray] = []

    def add(self, frame: av.AudioFrame | None) -> None:
        for out in self._resampler.resample(frame):
            if self._start is None and out.pts is not None:
                self._start = float(out.pts * out.time_base)
            self._chunks.append(out.to_ndarray().reshape(-1).astype(np.float32))

    def finish(self) -> np.ndarray:
        self.add(None)  # flush the resampler
        samples = np.concatenate(self._chunks) if self._chunks else np.zeros(0, np.float32)
        lead = round((self._start or 0.0) * self.sample_rate)
        # A stream starting after t=0 is padded with silence; one starting before it is cut.
        return np.pad(samples, (lead, 0)) if lead >= 0 else samples[-lead:]


# Shots of 3.6 to 7 s (under clips.max_s, so every clip is one shot): 64.8 s of lavfi test patterns.
TEST_PATTERN_SHOTS = (
    ("testsrc2", 5.2), ("smptebars", 6.0), ("testsrc", 4.4), ("rgbtestsrc", 7.0), ("smptehdbars", 3.6),
    ("mandelbrot", 6.4), ("yuvtestsrc", 4.8), ("pal75bars", 5.6), ("colorspectrum", 6.2), ("testsrc2", 4.0),
    ("smptebars", 5.0), ("testsrc", 6.6),
)  # fmt: skip


def write_shots_video(
    path: str | Path, size: str = "320x240", preset: str = "ultrafast", extra: tuple[str, ...] = ()
) -> Path:
    """TEST_PATTERN_SHOTS cut together (hard cuts at known times) with a 440 Hz tone, H.264 + AAC."""
    args: list[str] = []
    for name, duration in TEST_PATTERN_SHOTS:
        args += ["-f", "lavfi", "-t", str(duration), "-i", f"{name}=s={size}:r=25"]
    n = len(TEST_PATTERN_SHOTS)
    total = sum(duration for _, duration in TEST_PATTERN_SHOTS)
    args += ["-f", "lavfi", "-i", f"sine=f=440:d={total}:sample_rate=48000"]
    chain = "".join(f"[{i}:v]format=yuv420p,setsar=1[v{i}];" for i in range(n))
    chain += "".join(f"[v{i}]" for i in range(n)) + f"concat=n={n}:v=1:a=0[v]"
    subprocess.run(["ffmpeg", "-v", "error", "-y", *args, "-filter_complex", chain, "-map", "[v]", "-map", f"{n}:a",
                    "-c:v", "libx264", "-preset", preset, *extra, "-c:a", "aac", str(path)], check=True)  # fmt: skip
    return Path(path)
