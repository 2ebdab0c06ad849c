"""An audio-visual offset meter that uses only the ffmpeg and ffprobe command-line tools (no PyAV, no avcurate).

One ffmpeg run decodes the file's first video and audio streams through `showinfo` / `ashowinfo`, which log
each frame's timestamp on ffmpeg's own timeline, and writes the pictures as small grey rawvideo (every decoded
frame, `-fps_mode passthrough`) and the audio as mono f32le. Flash onsets are the frames whose mean luma jumps
up; beep onsets are the first samples of a burst, after quiet, that reach half the burst's peak. Each flash is
paired with the nearest beep; the offset is beep time minus flash time (positive: audio lags video).

It also makes the test sources: flashes (a white box that appears at once on a frame) and tone bursts starting
at the same instants, events on the source's own frame grid, at any rate or at changing rates.
"""

from __future__ import annotations

import math
import random
import re
import subprocess
import tempfile
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np

_GRID = (64, 36)  # the box region is scaled to this before the mean is taken: cheap, and a flash moves it a lot
_FLASH_JUMP = 60.0  # mean luma rise (0..255) of the box region between consecutive frames that counts as a flash onset
_BEEP_LEVEL = 0.1  # a burst is a sample this loud after _QUIET_S of quieter samples (the noise bed is 0.01)
_QUIET_S = 0.1
_PAIR_MAX_S = 0.15  # a flash with no beep this close is not counted

_SHOWINFO = re.compile(r"\[Parsed_(a?showinfo)_\d+ @ [^\]]*\] n:\s*\d+ pts:\s*(-?\d+) pts_time:\s*(\S+)(.*)")


@dataclass
class Measurement:
    offsets_ms: list[float] = field(default_factory=list)  # one per paired event: beep minus flash
    flashes: int = 0
    beeps: int = 0

    @property
    def events(self) -> int:
        return len(self.offsets_ms)

    @property
    def mean_ms(self) -> float:
        return float(np.mean(self.offsets_ms)) if self.offsets_ms else math.nan

    def __add__(self, other: "Measurement") -> "Measurement":
        return Measurement(self.offsets_ms + other.offsets_ms, self.flashes + other.flashes, self.beeps + other.beeps)


def measure(path: str | Path) -> Measurement:
    """Offsets of every flash/beep pair in one file."""
    frame_times, luma, audio_start, rate, audio = _decode(Path(path))
    flashes = flash_onsets(frame_times, luma)
    beeps = beep_onsets(audio, rate) + audio_start
    result = Measurement(flashes=len(flashes), beeps=len(beeps))
    for t in flashes:
        if beeps.size:
            nearest = beeps[np.argmin(np.abs(beeps - t))]
            if abs(nearest - t) <= _PAIR_MAX_S:
                result.offsets_ms.append(float(nearest - t) * 1000.0)
    return result


def measure_all(paths: list[str | Path]) -> Measurement:
    total = Measurement()
    for path in paths:
        total = total + measure(path)
    return total


def flash_onsets(times: np.ndarray, luma: np.ndarray) -> np.ndarray:
    """Times of the frames whose mean luma rose by more than _FLASH_JUMP from the frame before."""
    rise = np.diff(luma)
    onsets = np.flatnonzero(rise > _FLASH_JUMP) + 1
    kept: list[float] = []
    for i in onsets:
        if not kept or times[i] - kept[-1] > _QUIET_S:  # one onset per flash
            kept.append(float(times[i]))
    return np.asarray(kept)


def beep_onsets(audio: np.ndarray, rate: int) -> np.ndarray:
    """Seconds from the first sample: where each burst first reaches half its peak."""
    env = np.abs(audio)
    loud = np.flatnonzero(env > _BEEP_LEVEL)
    quiet = round(_QUIET_S * rate)
    onsets: list[float] = []
    last = -(10**12)
    for i in loud:
        if i - last > quiet:
            peak = env[i : i + round(0.02 * rate)].max()
            lo = max(i - round(0.01 * rate), 0)
            onsets.append((lo + int(np.argmax(env[lo:] >= 0.5 * peak))) / rate)
        last = i
    return np.asarray(onsets)


def _decode(path: Path) -> tuple[np.ndarray, np.ndarray, float, int, np.ndarray]:
    rate = _audio_rate(path)
    w, h = _GRID
    with tempfile.TemporaryDirectory(prefix="avmeter-") as tmp:
        video_raw, audio_raw = Path(tmp) / "v.gray", Path(tmp) / "a.f32"
        # The flash box's region only (the middle fifth each way), at any picture size.
        graph = (f"[0:v:0]showinfo,crop=iw/5:ih/5:2*iw/5:2*ih/5,scale={w}:{h}:flags=area,format=gray[v];"
                 "[0:a:0]ashowinfo,aformat=sample_fmts=flt:channel_layouts=mono[a]")
        cmd = ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "info", "-y", "-i", str(path),
               "-filter_complex", graph,
               "-map", "[v]", "-fps_mode", "passthrough", "-f", "rawvideo", str(video_raw),
               "-map", "[a]", "-f", "f32le", str(audio_raw)]  # fmt: skip
        run = subprocess.run(cmd, capture_output=True, text=True)
        if run.returncode != 0:
            raise RuntimeError(f"ffmpeg failed on {path}: {run.stderr[-2000:]}")
        pixels = np.fromfile(video_raw, np.uint8)
        samples = np.fromfile(audio_raw, np.float32)
    video_times, audio_frames = [], []
    for line in run.stderr.splitlines():
        match = _SHOWINFO.search(line)
        if match is None:
            continue
        name, _, pts_time, rest = match.groups()
        if name == "showinfo":
            video_times.append(float(pts_time))
        else:
            nb = re.search(r"nb_samples:\s*(\d+)", rest)
            audio_frames.append((float(pts_time), int(nb.group(1)) if nb else 0))
    luma = pixels.reshape(-1, w * h).mean(axis=1)
    if luma.size != len(video_times):
        raise RuntimeError(f"{path}: {luma.size} frames decoded but {len(video_times)} timestamps logged")
    # Place the audio by the frames' timestamps: a gap in the stream stays a gap on the timeline.
    start = audio_frames[0][0] if audio_frames else 0.0
    timeline = np.zeros(max(round((audio_frames[-1][0] - start) * rate) + audio_frames[-1][1], samples.size)
                        if audio_frames else samples.size, np.float32)
    read = 0
    for t, n in audio_frames:
        at = round((t - start) * rate)
        chunk = samples[read : read + n]
        timeline[at : at + chunk.size] = chunk
        read += n
    return np.asarray(video_times), luma, start, rate, timeline


def _audio_rate(path: Path) -> int:
    out = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "a:0", "-show_entries", "stream=sample_rate",
                          "-of", "csv=p=0", str(path)], capture_output=True, text=True, check=True).stdout
    return int(out.strip().splitlines()[0])


# --- test sources ----------------------------------------------------------------------------------------

SIZE = (480, 270)
FLASH_S = 0.12  # the box stays on this long: longer than an output frame, so no flash can be skipped
BEEP_S = 0.08
BEEP_HZ = 1000.0
SAMPLE_RATE = 48000

# The sources the test and the benchmark use: name -> parts (rate, seconds). ~20-25 events per source.
RATES: dict[str, list[tuple[Fraction, float]]] = {
    "23.976": [(Fraction(24000, 1001), 8.0)],
    "24": [(Fraction(24), 8.0)],
    "25": [(Fraction(25), 8.0)],
    "29.97": [(Fraction(30000, 1001), 8.0)],
    "30": [(Fraction(30), 8.0)],
    "50": [(Fraction(50), 8.0)],
    "60": [(Fraction(60), 8.0)],
    "vfr": [(Fraction(30), 3.0), (Fraction(24), 3.0), (Fraction(60), 2.5)],  # rate changes mid-stream
}


def event_frames(fps: Fraction, seconds: float, rng: random.Random, margin_s: float = 0.3) -> list[int]:
    """Frame numbers of events 0.25 to 0.4 s apart, at random phases against any other frame grid."""
    frames, k = [], math.ceil(margin_s * fps) + rng.randrange(max(1, round(0.2 * fps)))
    while k / fps <= seconds - margin_s - FLASH_S:
        frames.append(k)
        k += max(round(rng.uniform(0.25, 0.4) * fps), 1)
    return frames


def _picture(fps: Fraction, seconds: float, frames: list[int], seed: int, colours: tuple[str, str]) -> str:
    """A moving dark gradient with a little noise; a white box (1/25 of the picture, small enough that shot
    detectors see motion, not a cut) on screen for FLASH_S from each event frame.

    The background's luma is squeezed into a narrow range so that only flashes move the mean much (a part
    boundary, where the gradient starts again, does not).
    """
    w, h = SIZE
    c0, c1 = colours
    on = max(1, math.ceil(FLASH_S * fps))
    enable = "+".join(f"between(n,{k},{k + on - 1})" for k in frames) or "0"
    return (f"gradients=s={w // 4}x{h // 4}:r={fps}:d={seconds}:speed=0.05:seed={seed}:c0={c0}:c1={c1},"
            f"scale={w}:{h},lutyuv=y=50+val*0.15,noise=alls=6:allf=t:all_seed={seed},"
            f"drawbox=x={2 * w // 5}:y={2 * h // 5}:w={w // 5}:h={h // 5}:c=white:t=fill:enable='{enable}',format=yuv420p")


def _sound(times: list[Fraction], seconds: float, seed: int) -> str:
    bursts = "+".join(f"if(between(t,{float(t):.9f},{float(t) + BEEP_S:.9f}),0.5*sin(2*PI*{BEEP_HZ}*(t-{float(t):.9f})))"
                      for t in times) or "0"
    return (f"aevalsrc=exprs='{bursts}':s={SAMPLE_RATE}:d={seconds}[tone];"
            f"anoisesrc=a=0.01:c=white:seed={seed}:r={SAMPLE_RATE}:d={seconds}[noise];"
            "[tone][noise]amix=inputs=2:normalize=0")


def make_source(path: str | Path, parts: list[tuple[Fraction, float]], seed: int = 0) -> list[Fraction]:
    """Write an H.264/AAC MP4 of consecutive parts (rate, seconds); return the event times (s, exact).

    One part gives a constant rate; several are concatenated with variable frame rate timestamps, each part's
    events on its own frame grid.
    """
    rng = random.Random(seed)
    colours = (f"0x{rng.randrange(1 << 24):06x}", f"0x{rng.randrange(1 << 24):06x}")
    pictures, times, start = [], [], Fraction(0)
    timescale = math.lcm(*(Fraction(fps).numerator for fps, _ in parts)) * 10
    for i, (fps, seconds) in enumerate(parts):
        frames = event_frames(Fraction(fps), seconds, rng)
        times += [start + Fraction(k) / fps for k in frames]
        pictures.append(f"{_picture(Fraction(fps), seconds, frames, seed + i, colours)},settb=1/{timescale}[p{i}]")
        start += Fraction(seconds)
    if len(parts) == 1:
        graph = f"{pictures[0].rsplit('[', 1)[0]}[v]"
        extra = []
    else:
        inputs = "".join(f"[p{i}]" for i in range(len(parts)))
        graph = ";".join([*pictures, f"{inputs}concat=n={len(parts)}:v=1:a=0[v]"])
        extra = ["-fps_mode", "vfr", "-video_track_timescale", str(timescale)]
    graph += ";" + _sound(times, float(start), seed) + "[a]"
    cmd = ["ffmpeg", "-nostdin", "-v", "error", "-y", "-filter_complex", graph, "-map", "[v]", "-map", "[a]", *extra,
           "-c:v", "libx264", "-preset", "ultrafast", "-crf", "18", "-pix_fmt", "yuv420p", "-threads", "1",
           "-c:a", "aac", "-b:a", "128k", "-shortest", str(path)]  # fmt: skip
    run = subprocess.run(cmd, capture_output=True, text=True)
    if run.returncode != 0:
        raise RuntimeError(f"ffmpeg failed writing {path}: {run.stderr[-2000:]}")
    return times


def ffmpeg_fps(src: str | Path, dst: str | Path, fps: int = 25) -> Path:
    """The peer reference: `ffmpeg -vf fps=N` (default rounding), audio re-encoded as is."""
    cmd = ["ffmpeg", "-nostdin", "-v", "error", "-y", "-i", str(src), "-vf", f"fps={fps}", "-c:v", "libx264",
           "-preset", "ultrafast", "-threads", "1", "-c:a", "aac", "-b:a", "128k", str(dst)]
    subprocess.run(cmd, check=True, capture_output=True)
    return Path(dst)


def rounding_bias_ms(times: list[Fraction], fps: int = 25) -> float:
    """Mean of (t - slot time) over the events when each goes to slot round(t * fps), ties to the even slot.

    What an output following avcurate's rule carries on top of the source's offset: ~0 where event phases are
    varied. FFmpeg's `fps` filter sends every tie (a frame exactly between two output instants, e.g. a 50 fps
    source's odd frames) to the later slot instead, which shows all of those pictures 1/(2 fps) late.
    """
    if not times:
        return 0.0
    return float(np.mean([float(t - Fraction(round(t * fps), fps)) for t in times])) * 1000.0
