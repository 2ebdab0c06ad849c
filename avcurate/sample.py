"""A small demo set of videos, good and deliberately broken, made with the ffmpeg CLI and espeak-ng.

Every file exercises one thing the pipeline must get right (late audio, rotation, variable frame rate,
an awkward name) or must fail on cleanly (empty, truncated, garbage, one stream only, no decoder, a read
that never returns). The good videos carry flashes that coincide with beeps, so a sync scorer has
something to find, and several lavfi scenes, so shot cuts exist.

Deterministic: the same seed and ffmpeg build give the same bytes (bitexact flags, no metadata, seeded
noise sources, single-threaded encoders), except for the event video that synth.py writes.

    python -m avcurate.sample FOLDER [--seed N]
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from .model import FAILED, KEPT, REJECTED
from .synth import write_event_video

ODD_NAME = "Café 東京 #2 \"final\" it's.v1.2.mp4"
TRUNCATE_FRACTION = 0.3
LATE_AUDIO_S = 1.0
EVENT_SHIFT_MS = 120.0
UNKNOWN_FOURCC = b"ZZZZ"

_BITEXACT = ("-fflags", "+bitexact", "-flags:v", "+bitexact", "-flags:a", "+bitexact", "-map_metadata", "-1")
_H264 = ("-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-threads", "1")
_AAC = ("-c:a", "aac", "-b:a", "96k")
# A flash is a white box over a ninth of the frame: plain motion to the shot detector, not a cut. It appears at
# once and fades over the next frames, so it has one sharp onset for a sync scorer to pair with its beep.
_FLASH_BOX = "drawbox=x=iw/12:y=ih/12:w=iw/3:h=ih/3:t=fill"
_FLASH_FADE = (1.0, 0.5, 0.25, 0.12)  # box opacity on the event's frame and the frames after it
_BEEP_S = 0.08
_BEEP_AMPLITUDE = 0.5
_BED_AMPLITUDE = 0.1  # pink noise at about -35 dBFS RMS: room tone, above any -45 dBFS silence threshold
_SPEECH_GAIN = 0.3  # speech onsets stay smaller than the beeps', so chance pairings do not outvote them


class SampleError(RuntimeError):
    """A generator command failed; carries its stderr."""


@dataclass(frozen=True)
class SampleFile:
    """One generated file and what the pipeline should make of it."""

    key: str  # short stable handle (file names vary, e.g. the odd one)
    path: Path
    expect: str  # the source's expected status: model.KEPT, REJECTED or FAILED
    why: str  # the property it exercises
    duration_s: float = 0.0  # nominal media length; 0 where there is no readable media
    error_type: str | None = None  # expected SourceResult.error_type when it fails

    @property
    def name(self) -> str:
        return self.path.name


@dataclass
class SampleSet:
    folder: Path
    files: list[SampleFile]
    seconds: float  # wall time the generation took

    def __getitem__(self, key: str) -> SampleFile:
        for f in self.files:
            if f.key == key:
                return f
        raise KeyError(f"no sample {key!r}; have {[f.key for f in self.files]}")

    def expecting(self, status: str) -> list[SampleFile]:
        return [f for f in self.files if f.expect == status]

    @property
    def good(self) -> list[SampleFile]:
        return self.expecting(KEPT)

    @property
    def rejected(self) -> list[SampleFile]:
        return self.expecting(REJECTED)

    @property
    def broken(self) -> list[SampleFile]:
        return self.expecting(FAILED)


@dataclass(frozen=True)
class Scene:
    """One shot: a lavfi video source (options but no size or rate) and filters that keep it moving."""

    source: str
    seconds: float
    post: str = ""
    skip_s: float = 0.0  # dropped from the start: life's random first generations flicker like cuts


@dataclass(frozen=True)
class Look:
    """Picture and sound format of one output."""

    size: tuple[int, int] = (384, 288)  # short side above the default output's 256: nothing is upscaled
    fps: int = 25
    sample_rate: int = 44100
    stereo: bool = False


@dataclass
class _Job:
    """Generation context of one file: its own random stream and scratch folder."""

    folder: Path
    scratch: Path
    rng: random.Random

    def seed(self) -> int:
        return self.rng.randrange(1 << 31)


def make_sample_set(folder: str | Path, *, seed: int = 0) -> SampleSet:
    """Write the demo set into `folder` (created; files of the same names overwritten)."""
    _require_tools()
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="avcurate-sample-") as scratch_root:

        def run(key_and_make: tuple[str, Callable[[_Job], SampleFile]]) -> SampleFile:
            key, make = key_and_make
            scratch = Path(scratch_root, key)
            scratch.mkdir()
            # A string seed is hashed with SHA-512: the same stream in every process, whatever PYTHONHASHSEED.
            return make(_Job(folder, scratch, random.Random(f"{seed}:{key}")))

        with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
            files = list(pool.map(run, _GENERATORS.items()))
    files.append(_truncated(folder, files[0].path))
    files += [_empty(folder), _random_bytes(folder, seed), _hang(folder)]
    return SampleSet(folder=folder, files=files, seconds=time.monotonic() - started)


# --- good videos -------------------------------------------------------------------------------------


def _talk(job: _Job) -> SampleFile:
    scenes = [
        Scene("testsrc2", 4.0),
        Scene("mandelbrot=maxiter=200", 4.0),
        Scene(_life(job, "#ffe0a0", "#305080"), 4.0, skip_s=2.0),
    ]
    text = "Welcome to the curation demo. Every clip you keep should have a picture and a sound that belong together."
    path = _av_video(job, "talk_h264_aac.mp4", scenes, Look(), text)
    return SampleFile("talk", path, KEPT, "three shots, speech, H.264 + AAC 44.1 kHz mono", 12.0)


def _street(job: _Job) -> SampleFile:
    scenes = [
        Scene(_gradients(job), 5.0),
        Scene("smptebars", 5.0, post="scroll=h=0.004"),
        Scene("testsrc", 5.0, post="scroll=h=0.002"),
    ]
    look = Look(size=(480, 270), fps=30, sample_rate=48000, stereo=True)
    text = "The street is busy this morning. Cars pass, people talk, and a bell rings near the old station."
    path = _av_video(job, "street_30fps_48k_stereo.mp4", scenes, look, text)
    return SampleFile("street", path, KEPT, "three shots, 30 fps 480x270, 48 kHz stereo AAC", 15.0)


def _nature_vp9(job: _Job) -> SampleFile:
    scenes = [
        Scene(_life(job, "#c0ff80", "#604020"), 4.0, skip_s=2.0),
        Scene("mandelbrot=maxiter=150:start_scale=2", 3.0),
        Scene(_gradients(job, speed=0.2, kind="radial"), 3.0),
    ]
    # Constant quality: with a bitrate target, VP9's per-frame quality swings look like cuts to a histogram.
    vp9 = ["-c:v", "libvpx-vp9", "-deadline", "realtime", "-cpu-used", "8", "-crf", "30", "-b:v", "0", "-threads", "1"]
    codecs = [*vp9, "-c:a", "libopus", "-b:a", "48k"]
    text = "Birds sing in the forest. Water runs over stones."
    path = _av_video(job, "nature_vp9_opus.mkv", scenes, Look(sample_rate=48000), text, codecs=codecs)
    return SampleFile("nature_vp9", path, KEPT, "three shots, Matroska with VP9 + Opus 48 kHz", 10.0)


def _odd_name(job: _Job) -> SampleFile:
    scenes = [Scene("testsrc2", 4.0), Scene(_gradients(job), 3.0), Scene("smptehdbars", 3.0, post="scroll=h=0.004")]
    # Written under a plain name, then renamed: the odd characters must reach the pipeline, not ffmpeg.
    plain = _av_video(job, "odd_name.mp4", scenes, Look(), "A file name with spaces, quotes and a hash sign.")
    path = plain.replace(job.folder / ODD_NAME)
    return SampleFile("odd_name", path, KEPT, "spaces, unicode, quotes, '#' and several dots in the name", 10.0)


def _late_audio(job: _Job) -> SampleFile:
    """Audio begins LATE_AUDIO_S after the video; its timestamps say so, and honouring them keeps sync."""
    scenes = [Scene("testsrc2", 5.0), Scene("mandelbrot=maxiter=200", 5.0)]
    look, seconds = Look(), 10.0
    events = _event_times(job.rng, LATE_AUDIO_S + 0.4, seconds, look.fps)
    speech = _speech(job, "The sound of this clip starts one second after its picture.")
    audio = _audio_graph(look, seconds - LATE_AUDIO_S, job, [t - LATE_AUDIO_S for t in events])
    # asetpts moves the audio's timestamps; the MP4 muxer records the gap as an edit list.
    graph = ";".join([_video_graph(scenes, look, events), f"{audio},asetpts=PTS+{LATE_AUDIO_S}/TB[a]"])
    path = job.folder / "late_audio.mp4"
    _encode(speech, graph, path)
    # ffprobe shows start_time 0.976: the AAC encoder's 1024 priming samples come first, as in any AAC stream.
    why = f"audio stream starts {LATE_AUDIO_S:.1f} s after the video; in sync when placed by its timestamps"
    return SampleFile("late_audio", path, KEPT, why, seconds)


def _rotated(job: _Job) -> SampleFile:
    """A phone held upright: landscape pixels plus a display matrix turning them to portrait (as phones do)."""
    scenes = [Scene("testsrc2", 4.0), Scene(_gradients(job), 4.0)]
    portrait, seconds = Look(size=(270, 480)), 8.0
    events = _event_times(job.rng, 0.4, seconds, portrait.fps)
    speech = _speech(job, "This phone video was filmed upright.")
    # Stored turned a quarter counter-clockwise; the matrix (rotation -90, as an iPhone writes) turns it back.
    graph = ";".join([
        _video_graph(scenes, portrait, events, label="upright") + ";[upright]transpose=cclock[v]",
        _audio_graph(portrait, seconds, job, events) + "[a]",
    ])
    landscape = job.scratch / "landscape.mp4"
    _encode(speech, graph, landscape)
    # ffmpeg 5.1 turns a "rotate" tag into a display matrix only when stream copying.
    path = job.folder / "phone_rotated.mp4"
    _ffmpeg(["-i", str(landscape), "-map", "0", "-c", "copy", "-metadata:s:v:0", "rotate=270", *_BITEXACT, str(path)])
    why = "480x270 stored, display matrix rotation -90: shown as portrait 270x480"
    return SampleFile("rotated", path, KEPT, why, seconds)


def _vfr(job: _Job) -> SampleFile:
    """Frame rate changes mid-stream (30, 15, 24 fps), as in phone and screen recordings."""
    shots = [(Scene("testsrc2", 4.0), 30), (Scene(_gradients(job, speed=0.2), 3.0), 15),
             (Scene("mandelbrot=maxiter=150", 3.0), 24)]
    parts, events, start = [], [], 0.0
    for i, (scene, fps) in enumerate(shots):
        # Events on each shot's own frame grid, so every flash lands on a frame exactly when its beep starts.
        local = _event_times(job.rng, 0.4, scene.seconds, fps)
        events += [start + t for t in local]
        start += scene.seconds
        # A 1/120 s time base holds 30, 15 and 24 fps frame times exactly.
        parts.append(f"{_scene_filter(scene, Look(fps=fps))},{_flash(local, fps)},settb=1/120[s{i}]")
    seconds = start
    inputs = "".join(f"[s{i}]" for i in range(len(shots)))
    speech = _speech(job, "The frame rate of this recording changes from shot to shot.")
    graph = ";".join([*parts, f"{inputs}concat=n={len(shots)}:v=1:a=0[v]",
                      _audio_graph(Look(), seconds, job, events) + "[a]"])
    path = job.folder / "vfr.mp4"
    _encode(speech, graph, path, extra=["-fps_mode", "vfr", "-video_track_timescale", "120"])
    return SampleFile("vfr", path, KEPT, "variable frame rate: 30, then 15, then 24 fps", seconds)


def _event_shift(job: _Job) -> SampleFile:
    """Flashes and tone bursts from synth.py, the sound EVENT_SHIFT_MS late: inside the default sync tolerance."""
    path = job.folder / "event_shift_120ms.mp4"
    write_event_video(path, duration_s=8.0, audio_shift_ms=EVENT_SHIFT_MS, seed=job.seed(), size=Look().size)
    why = f"synth.py events, sound {EVENT_SHIFT_MS:.0f} ms after each flash: av_offset_ms near +{EVENT_SHIFT_MS:.0f}"
    return SampleFile("event_shift", path, KEPT, why, 8.0)


# --- rejected and broken -------------------------------------------------------------------------------


def _black_silent(job: _Job) -> SampleFile:
    look, seconds = Look(), 8.0
    graph = (f"color=black:s={_size(look)}:r={look.fps}:d={seconds},format=yuv420p[v];"
             f"anoisesrc=c=white:a=0.0005:seed={job.seed()}:r={look.sample_rate}:d={seconds}[a]")
    path = job.folder / "black_silent.mp4"
    _ffmpeg(["-filter_complex", graph, "-map", "[v]", "-map", "[a]", *_H264, *_AAC, *_BITEXACT, str(path)])
    return SampleFile("black_silent", path, REJECTED, "black picture, audio at -70 dBFS: filters reject it", seconds)


def _audio_only(job: _Job) -> SampleFile:
    speech = _speech(job, "There is no picture in this file.")
    path = job.folder / "audio_only.mp4"  # .mp4, as DASH audio tracks are: a folder scan must list it
    graph = _audio_graph(Look(), 6.0, job, []) + "[a]"
    _ffmpeg(["-i", str(speech), "-filter_complex", graph, "-map", "[a]", *_AAC, *_BITEXACT, str(path)])
    return SampleFile("audio_only", path, FAILED, "no video stream", 6.0, error_type="probe")


def _video_only(job: _Job) -> SampleFile:
    graph = _video_graph([Scene("testsrc2", 3.0), Scene(_gradients(job), 3.0)], Look(), [])
    path = job.folder / "video_only.mp4"
    _ffmpeg(["-filter_complex", graph, "-map", "[v]", *_H264, *_BITEXACT, str(path)])
    return SampleFile("video_only", path, FAILED, "no audio stream", 6.0, error_type="probe")


def _unsupported_codec(job: _Job) -> SampleFile:
    """An AVI whose video FourCC names no codec, so libavcodec has no decoder for it."""
    look, seconds = Look(), 4.0
    graph = _video_graph([Scene("testsrc2", seconds)], look, []) + f";sine=f=440:r={look.sample_rate}:d={seconds}[a]"
    path = job.folder / "unsupported_codec.avi"
    _ffmpeg(["-filter_complex", graph, "-map", "[v]", "-map", "[a]", "-c:v", "mpeg4", "-vtag", "FMP4",
             "-c:a", "pcm_s16le", *_BITEXACT, str(path)])
    _patch_avi_fourcc(path, UNKNOWN_FOURCC)
    why = f"MPEG-4 video with its FourCC patched to {UNKNOWN_FOURCC.decode()}: no decoder; PCM audio"
    return SampleFile("unsupported_codec", path, FAILED, why, seconds, error_type="probe")


def _truncated(folder: Path, good: Path) -> SampleFile:
    data = good.read_bytes()
    path = folder / "truncated.mp4"
    path.write_bytes(data[: int(len(data) * TRUNCATE_FRACTION)])
    # ffmpeg writes the moov atom last, so the cut removes the index: nothing can be located.
    why = f"first {TRUNCATE_FRACTION:.0%} of {good.name}: no moov atom"
    return SampleFile("truncated", path, FAILED, why, error_type="probe")


def _empty(folder: Path) -> SampleFile:
    path = folder / "empty.mp4"
    path.write_bytes(b"")
    return SampleFile("empty", path, FAILED, "zero bytes", error_type="probe")


def _random_bytes(folder: Path, seed: int) -> SampleFile:
    path = folder / "random_bytes.mp4"
    path.write_bytes(random.Random(f"{seed}:random_bytes").randbytes(64 * 1024))
    return SampleFile("random_bytes", path, FAILED, "64 KiB of random bytes named .mp4", error_type="probe")


def _hang(folder: Path) -> SampleFile:
    path = folder / "hang.mp4"
    if path.exists() or path.is_symlink():
        path.unlink()
    os.mkfifo(path)
    return SampleFile("hang", path, FAILED, "a FIFO: opening it for reading blocks forever", error_type="timeout")


_GENERATORS: dict[str, Callable[[_Job], SampleFile]] = {
    # talk first: the truncated file is cut from it.
    "talk": _talk,
    "street": _street,
    "nature_vp9": _nature_vp9,
    "odd_name": _odd_name,
    "late_audio": _late_audio,
    "rotated": _rotated,
    "vfr": _vfr,
    "event_shift": _event_shift,
    "black_silent": _black_silent,
    "audio_only": _audio_only,
    "video_only": _video_only,
    "unsupported_codec": _unsupported_codec,
}


# --- building blocks -----------------------------------------------------------------------------------


def _av_video(job: _Job, name: str, scenes: Sequence[Scene], look: Look, text: str,
              codecs: Sequence[str] = (*_H264, *_AAC)) -> Path:
    """Shots cut together with flash/beep events, speech over a noise bed."""
    seconds = sum(s.seconds for s in scenes)
    events = _event_times(job.rng, 0.4, seconds, look.fps)
    speech = _speech(job, text)
    graph = ";".join([_video_graph(scenes, look, events), _audio_graph(look, seconds, job, events) + "[a]"])
    path = job.folder / name
    _encode(speech, graph, path, codecs=codecs)
    return path


def _encode(speech: Path, graph: str, path: Path, *, codecs: Sequence[str] = (*_H264, *_AAC),
            extra: Sequence[str] = ()) -> None:
    """Run a graph whose input 0 is the speech and whose outputs are [v] and [a]."""
    _ffmpeg(["-i", str(speech), "-filter_complex", graph, "-map", "[v]", "-map", "[a]", *extra, *codecs,
             *_BITEXACT, str(path)])


def _gradients(job: _Job, speed: float = 0.1, kind: str = "linear") -> str:
    """The gradients source draws 'random' colours from the clock, not from its seed: name them."""
    c0, c1 = (f"0x{job.rng.randrange(1 << 24):06x}" for _ in range(2))
    return f"gradients=seed={job.seed()}:speed={speed}:type={kind}:c0={c0}:c1={c1}"


def _life(job: _Job, alive: str, dead: str) -> str:
    """Sparse life in light colours: busy but not dark (the default black would count as black frames)."""
    return f"life=seed={job.seed()}:ratio=0.2:life_color={alive}:death_color={dead}"


def _event_times(rng: random.Random, start: float, end: float, fps: int) -> list[float]:
    """Irregular gaps (so a sync search cannot lock onto a wrong period), on the frame grid (so each flash
    shows on the very frame its beep starts)."""
    times, t = [], start
    while t < end - 0.3:
        times.append(round(t * fps) / fps)
        t += rng.uniform(0.4, 1.0)
    return times


def _size(look: Look) -> str:
    return f"{look.size[0]}x{look.size[1]}"


def _scene_filter(scene: Scene, look: Look) -> str:
    name, _, options = scene.source.partition("=")
    source = f"{name}=s={_size(look)}:r={look.fps}" + (f":{options}" if options else "")
    post = f",{scene.post}" if scene.post else ""
    trim = f"trim=start={scene.skip_s}:duration={scene.seconds},setpts=PTS-STARTPTS"
    return f"{source}{post},{trim},format=yuv420p,setsar=1"


def _flash(events: Sequence[float], fps: int) -> str:
    """One drawbox per fade step; step k covers frame k after each event (events lie on the frame grid)."""
    if not events:
        return "null"
    frame, slack = 1.0 / fps, 0.25 / fps  # slack absorbs rounding in frame times
    steps = []
    for k, opacity in enumerate(_FLASH_FADE):
        on = "+".join(f"gte(t,{t + k * frame - slack:.4f})*lt(t,{t + k * frame + slack:.4f})" for t in events)
        steps.append(f"{_FLASH_BOX}:color=white@{opacity}:enable='{on}'")
    return ",".join(steps)


def _video_graph(scenes: Sequence[Scene], look: Look, events: Sequence[float], label: str = "v") -> str:
    shots = [f"{_scene_filter(s, look)}[s{i}]" for i, s in enumerate(scenes)]
    inputs = "".join(f"[s{i}]" for i in range(len(scenes)))
    return ";".join([*shots, f"{inputs}concat=n={len(scenes)}:v=1:a=0,{_flash(events, look.fps)}[{label}]"])


def _audio_graph(look: Look, seconds: float, job: _Job, events: Sequence[float]) -> str:
    """Speech (input 0) over a pink-noise bed, and a beep at each event.

    Returns a chain without its output label, so callers can append filters.
    """
    rate = look.sample_rate
    gate = "+".join(f"between(t,{t:.4f},{t + _BEEP_S:.4f})" for t in events) or "0"
    # Stereo with unequal channels, so a downmix is exercised, not just a channel pick.
    layout = "pan=stereo|c0=c0|c1=0.7*c0" if look.stereo else "aformat=channel_layouts=mono"
    return ";".join([
        f"[0:a]aresample={rate},volume={_SPEECH_GAIN},adelay=500:all=1,apad,atrim=duration={seconds}[speech]",
        f"anoisesrc=c=pink:a={_BED_AMPLITUDE}:seed={job.seed()}:r={rate}:d={seconds}[bed]",
        f"aevalsrc='{_BEEP_AMPLITUDE}*sin(2*PI*880*t)*({gate})':s={rate}:d={seconds}[beeps]",
        f"[speech][bed][beeps]amix=inputs=3:normalize=0,{layout}",
    ])


def _speech(job: _Job, text: str) -> Path:
    path = job.scratch / "speech.wav"
    _run(["espeak-ng", "-v", "en", "-s", "165", "-w", str(path), text])
    return path


def _patch_avi_fourcc(path: Path, fourcc: bytes) -> None:
    """Overwrite the video FourCC in both places AVI keeps it: strh's handler and strf's biCompression."""
    data = bytearray(path.read_bytes())
    strh = data.find(b"strh")
    strf = data.find(b"strf", strh)
    if strh < 0 or strf < 0 or data[strh + 8 : strh + 12] != b"vids":
        raise SampleError(f"{path}: the first stream header is not a video one; cannot patch its FourCC")
    data[strh + 12 : strh + 16] = fourcc  # "strh", size, fccType "vids", then fccHandler
    data[strf + 24 : strf + 28] = fourcc  # "strf", size, then BITMAPINFOHEADER: biCompression at offset 16
    path.write_bytes(bytes(data))


def _ffmpeg(args: Sequence[str]) -> None:
    _run(["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-y", *args])


def _run(cmd: Sequence[str]) -> None:
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SampleError(f"{cmd[0]} failed ({done.returncode}): {done.stderr.strip()[-2000:]}")


def _require_tools() -> None:
    missing = [tool for tool in ("ffmpeg", "espeak-ng") if shutil.which(tool) is None]
    if missing:
        raise SampleError(f"{', '.join(missing)} not found on PATH; install them (scripts/setup.sh does)")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Write avcurate's demo videos, good and broken, into FOLDER.")
    parser.add_argument("folder")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    samples = make_sample_set(args.folder, seed=args.seed)
    for f in samples.files:
        length = f"{f.duration_s:5.1f} s" if f.duration_s else "    - "
        print(f"{f.expect:9} {length}  {f.name!r:45}  {f.why}")
    print(f"{len(samples.files)} files in {samples.folder} ({samples.seconds:.1f} s)")


if __name__ == "__main__":
    main()
