#!/usr/bin/env python3
"""Which library is fastest for each media job avcurate does, on the same generated input.

    .venv/bin/python benchmarks/bench_decoders.py [--quick] [--install] [--json results.json]

Jobs (every candidate limited to one decoder/filter/encoder thread, as avcurate runs them):
  video   decode + resample video to 25 fps, short side 256 -> numpy frames (yuv420p or rgb24)
  audio   decode + resample audio to 16 kHz mono -> float32 numpy
  encode  encode three 10 s clips (25 fps, short side 256, yuv420p; a fresh encoder per clip, as avcurate does)
          with libx264 veryfast crf 23 + 16 kHz mono AAC 64k

Candidates: avcurate's own code (AlignedDecoder, VideoClipWriter + mux_clip), PyAV used directly, the ffmpeg
CLI piping rawvideo / f32le to Python, torchcodec and decord. torchcodec and decord are not project
dependencies: `--install` puts them into a throw-away `--target` folder (`--deps`, default
/tmp/avcurate-bench-deps) that only this benchmark's worker processes put on sys.path. A candidate that cannot
be installed or loaded is reported with the reason, and the benchmark goes on.

Each (candidate, job) runs `--repeats` times, each time in a fresh worker process; the worker times the job
alone (wall clock, and user+sys CPU of the worker and the children it waited for), so import cost is
excluded (it is reported separately). Medians are reported.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
DEFAULT_DEPS = "/tmp/avcurate-bench-deps"
FPS = 25
SHORT_SIDE = 256
RATE = 16000
CLIP_S = 10.0
CLIPS = 3  # the encode job encodes this many CLIP_S clips, each with a fresh encoder, as the pipeline does
CRF, PRESET, AUDIO_BITRATE = 23, "veryfast", 64000
BATCH = 50  # frames per batch for the batch-oriented decoders (bounded memory)


def log(message: str) -> None:
    print(f"[bench_decoders {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# =============================================================================================== worker side


class _Sink:
    """Consumes frames the same cheap way for every candidate (a sparse checksum), so nothing is optimised away."""

    def __init__(self) -> None:
        self.frames = 0
        self.checksum = 0
        self.shape: tuple[int, ...] | None = None

    def __call__(self, array: Any) -> None:
        self.frames += 1
        self.shape = tuple(array.shape)
        self.checksum += int(array[::37, ::41].sum())


def _target_size(width: int, height: int) -> tuple[int, int]:
    if width <= height:
        return SHORT_SIDE, max(2, 2 * round(height * SHORT_SIDE / width / 2))
    return max(2, 2 * round(width * SHORT_SIDE / height / 2)), SHORT_SIDE


# ---- video jobs


def video_avcurate(path: str, sink: _Sink, w: int, h: int) -> dict[str, Any]:
    """avcurate.decode.AlignedDecoder: demuxes and decodes BOTH streams (decode once), yuv420p planes."""
    from avcurate.config import DecodeConfig
    from avcurate.decode import AlignedDecoder, chroma, luma
    from avcurate.probe import open_container

    samples = 0
    with open_container(path) as container:
        for frame in AlignedDecoder(container, DecodeConfig(threads=1)):
            y = luma(frame.video)
            u, v = chroma(frame.video)
            sink(y)
            samples += frame.audio.shape[1]
    return {"audio_samples": samples, "note": "video + audio (decode once)"}


def _graph_frames(path: str, w: int, h: int, pix: str, threads: int = 1) -> Any:
    import av

    container = av.open(path)
    stream = container.streams.video[0]
    stream.codec_context.thread_count = 1
    graph = av.filter.Graph()
    graph.threads = threads
    chain = [graph.add_buffer(template=stream), graph.add("fps", str(FPS)),
             graph.add("scale", f"{w}:{h}:flags=bilinear"), graph.add("format", pix), graph.add("buffersink")]
    for a, b in zip(chain, chain[1:]):
        a.link_to(b)
    graph.configure()

    def drain() -> Any:
        while True:
            try:
                yield graph.pull()
            except (av.error.BlockingIOError, av.error.EOFError):
                return

    try:
        for frame in container.decode(stream):
            graph.push(frame)
            yield from drain()
        graph.push(None)
        yield from drain()
    finally:
        container.close()


def video_pyav_graph_yuv(path: str, sink: _Sink, w: int, h: int) -> dict[str, Any]:
    """PyAV decode + filter graph fps=25,scale,format=yuv420p + to_ndarray (one copy)."""
    for frame in _graph_frames(path, w, h, "yuv420p"):
        sink(frame.to_ndarray())
    return {}


def video_pyav_graph_rgb(path: str, sink: _Sink, w: int, h: int) -> dict[str, Any]:
    """PyAV decode + filter graph fps=25,scale,format=rgb24 + to_ndarray."""
    for frame in _graph_frames(path, w, h, "rgb24"):
        sink(frame.to_ndarray())
    return {}


def video_pyav_reformat_rgb(path: str, sink: _Sink, w: int, h: int) -> dict[str, Any]:
    """PyAV decode, 25 fps picked in Python, one swscale call per output frame (scale + rgb24) via to_ndarray."""
    import av

    with av.open(path) as container:
        stream = container.streams.video[0]
        stream.codec_context.thread_count = 1
        pending, n = None, 0

        def emit_until(t: float) -> None:
            """Output instants before `t` show the pending frame, converted once."""
            nonlocal n
            array = None
            while n / FPS < t - 1e-4:
                array = array if array is not None else pending.to_ndarray(
                    width=w, height=h, format="rgb24", interpolation="BILINEAR", threads=1)
                sink(array)
                n += 1

        for frame in container.decode(stream):
            if pending is not None:
                emit_until(float(frame.time))
            pending = frame
        if pending is not None:
            emit_until(float(pending.time) + 1.0 / float(stream.average_rate or FPS))
    return {}


def _cli_video(path: str, sink: _Sink, w: int, h: int, pix: str) -> dict[str, Any]:
    import numpy as np

    frame_bytes = w * h * 3 if pix == "rgb24" else w * h * 3 // 2
    shape = (h, w, 3) if pix == "rgb24" else (h * 3 // 2, w)
    cmd = ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-threads", "1", "-i", path, "-an",
           "-filter_threads", "1", "-vf", f"fps={FPS},scale={w}:{h}:flags=bilinear,format={pix}",
           "-f", "rawvideo", "-pix_fmt", pix, "pipe:1"]
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, bufsize=0) as process:
        assert process.stdout is not None
        while True:
            array = np.empty(frame_bytes, np.uint8)
            view, got = memoryview(array), 0
            while got < frame_bytes:
                n = process.stdout.readinto(view[got:])
                if not n:
                    break
                got += n
            if got < frame_bytes:
                break
            sink(array.reshape(shape))
    if process.returncode:
        raise RuntimeError(f"ffmpeg exited with {process.returncode}")
    return {}


def video_ffmpeg_cli_yuv(path: str, sink: _Sink, w: int, h: int) -> dict[str, Any]:
    """ffmpeg CLI (fps, scale, yuv420p) -> rawvideo on a pipe -> numpy."""
    return _cli_video(path, sink, w, h, "yuv420p")


def video_ffmpeg_cli_rgb(path: str, sink: _Sink, w: int, h: int) -> dict[str, Any]:
    """ffmpeg CLI (fps, scale, rgb24) -> rawvideo on a pipe -> numpy."""
    return _cli_video(path, sink, w, h, "rgb24")


def video_torchcodec(path: str, sink: _Sink, w: int, h: int) -> dict[str, Any]:
    """torchcodec VideoDecoder, decoder-native Resize, fps=25 resampling, NHWC rgb24 tensors -> numpy."""
    import torch
    from torchcodec.decoders import VideoDecoder
    from torchcodec.transforms import Resize

    torch.set_num_threads(1)
    decoder = VideoDecoder(path, dimension_order="NHWC", num_ffmpeg_threads=1, seek_mode="approximate",
                           transforms=[Resize((h, w))])
    begin = float(decoder.metadata.begin_stream_seconds or 0.0)
    end = float(decoder.metadata.end_stream_seconds)
    step = BATCH / FPS
    t = begin
    while t < end - 1e-6:
        stop = min(end, t + step)
        batch = decoder.get_frames_played_in_range(t, stop, fps=FPS)
        for array in batch.data.numpy():
            sink(array)
        t = stop
    return {}


def video_decord(path: str, sink: _Sink, w: int, h: int) -> dict[str, Any]:
    """decord VideoReader (built-in resize, rgb24), frames picked for 25 fps, get_batch -> numpy."""
    from decord import VideoReader, cpu

    reader = VideoReader(path, ctx=cpu(0), width=w, height=h, num_threads=1)
    fps_in, n_in = float(reader.get_avg_fps()), len(reader)
    n_out = int(n_in / fps_in * FPS + 1e-6)
    indices = [min(n_in - 1, int(k * fps_in / FPS + 1e-6)) for k in range(n_out)]
    for start in range(0, len(indices), BATCH):
        for array in reader.get_batch(indices[start : start + BATCH]).asnumpy():
            sink(array)
    return {}


# ---- audio jobs


def audio_pyav(path: str) -> Any:
    """PyAV decode + AudioResampler(flt, mono, 16 kHz)."""
    import av
    import numpy as np

    with av.open(path) as container:
        stream = container.streams.audio[0]
        stream.codec_context.thread_count = 1
        resampler = av.AudioResampler(format="flt", layout="mono", rate=RATE)
        chunks = []
        for frame in container.decode(stream):
            chunks.extend(f.to_ndarray() for f in resampler.resample(frame))
        chunks.extend(f.to_ndarray() for f in resampler.resample(None))
    return np.concatenate(chunks, axis=1).ravel()


def audio_ffmpeg_cli(path: str) -> Any:
    """ffmpeg CLI -vn -ac 1 -ar 16000 -f f32le on a pipe -> numpy."""
    import numpy as np

    cmd = ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-threads", "1", "-i", path, "-vn",
           "-ac", "1", "-ar", str(RATE), "-f", "f32le", "pipe:1"]
    data = subprocess.run(cmd, capture_output=True, check=True).stdout
    return np.frombuffer(data, np.float32)


def audio_torchcodec(path: str) -> Any:
    """torchcodec AudioDecoder(sample_rate=16000, num_channels=1).get_all_samples()."""
    import torch
    from torchcodec.decoders import AudioDecoder

    torch.set_num_threads(1)
    return AudioDecoder(path, sample_rate=RATE, num_channels=1).get_all_samples().data.numpy().ravel()


def audio_decord(path: str) -> Any:
    """decord AudioReader(sample_rate=16000, mono=True) (decodes everything on construction)."""
    from decord import AudioReader, cpu

    return AudioReader(path, ctx=cpu(0), sample_rate=RATE, mono=True)[:].asnumpy().ravel()


# ---- encode jobs (the clip is prepared before timing starts)


def _prepare_clips(path: str, w: int, h: int) -> list[tuple[list[Any], Any]]:
    """CLIPS consecutive clips of CLIP_S seconds: (yuv420p frames as numpy, 16 kHz mono float32 audio)."""
    import numpy as np

    per_clip, samples = int(CLIP_S * FPS), int(CLIP_S * RATE)
    frames = []
    for frame in _graph_frames(path, w, h, "yuv420p"):
        frames.append(frame.to_ndarray())
        if len(frames) >= per_clip * CLIPS:
            break
    audio = np.ascontiguousarray(audio_pyav(path), dtype=np.float32)
    if len(frames) < per_clip:  # a short input (--quick): one shorter clip
        per_clip, samples = len(frames), len(frames) * RATE // FPS
    return [(frames[k * per_clip : (k + 1) * per_clip], audio[k * samples : (k + 1) * samples])
            for k in range(len(frames) // per_clip)]


def encode_avcurate(frames: list[Any], audio: Any, w: int, h: int, work: str, prep: dict[str, Any]) -> int:
    """avcurate.encode: VideoClipWriter (video-only MP4 while frames stream) then mux_clip (AAC + remux)."""
    from avcurate.config import EncodeConfig
    from avcurate.encode import VideoClipWriter, mux_clip

    cfg = EncodeConfig()
    video_path = os.path.join(work, "video.mp4")
    writer = VideoClipWriter(video_path, FPS, (w, h), cfg, 1)
    for frame in prep["av_frames"]:
        writer.write(frame)
    writer.close()
    return len(mux_clip(video_path, audio[None, :], RATE, cfg))


def encode_pyav(frames: list[Any], audio: Any, w: int, h: int, work: str, prep: dict[str, Any]) -> int:
    """PyAV, one pass: libx264 + AAC into one in-memory MP4, interleaved by the second."""
    from fractions import Fraction

    import av
    import numpy as np

    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="mp4") as out:
        video = out.add_stream("libx264", rate=FPS)
        video.width, video.height, video.pix_fmt = w, h, "yuv420p"
        video.codec_context.thread_count = 1
        video.options = {"crf": str(CRF), "preset": PRESET}
        aac = out.add_stream("aac", rate=RATE, layout="mono")
        aac.bit_rate = AUDIO_BITRATE
        aac.codec_context.thread_count = 1
        sent = 0
        for i, frame in enumerate(prep["av_frames"]):
            frame.pts, frame.time_base = i, Fraction(1, FPS)
            out.mux(video.encode(frame))
            while sent < min(len(audio), (i + 1) * RATE // FPS):
                chunk = np.ascontiguousarray(audio[None, sent : sent + 1024])
                af = av.AudioFrame.from_ndarray(chunk, format="fltp", layout="mono")
                af.sample_rate, af.pts, af.time_base = RATE, sent, Fraction(1, RATE)
                out.mux(aac.encode(af))
                sent += chunk.shape[1]
        out.mux(video.encode(None))
        out.mux(aac.encode(None))
    return len(buffer.getvalue())


def encode_ffmpeg_cli(frames: list[Any], audio: Any, w: int, h: int, work: str, prep: dict[str, Any]) -> int:
    """ffmpeg CLI: rawvideo yuv420p on stdin + f32le audio from a file -> libx264 + AAC MP4."""
    audio_path, out_path = os.path.join(work, "audio.f32"), os.path.join(work, "cli.mp4")
    audio.tofile(audio_path)
    cmd = ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-y",
           "-f", "rawvideo", "-pix_fmt", "yuv420p", "-s", f"{w}x{h}", "-r", str(FPS), "-i", "pipe:0",
           "-f", "f32le", "-ar", str(RATE), "-ac", "1", "-i", audio_path, "-map", "0:v", "-map", "1:a",
           "-c:v", "libx264", "-preset", PRESET, "-crf", str(CRF), "-threads", "1",
           "-c:a", "aac", "-b:a", str(AUDIO_BITRATE), out_path]
    cmd.remove("-nostdin")  # stdin carries the frames
    with subprocess.Popen(cmd, stdin=subprocess.PIPE) as process:
        assert process.stdin is not None
        for frame in frames:
            process.stdin.write(frame.tobytes())
        process.stdin.close()
    if process.returncode:
        raise RuntimeError(f"ffmpeg exited with {process.returncode}")
    return os.path.getsize(out_path)


def encode_torchcodec(frames: list[Any], audio: Any, w: int, h: int, work: str, prep: dict[str, Any]) -> int:
    """torchcodec VideoEncoder (takes RGB: converts to yuv420p inside) + AudioEncoder; two files, no mux."""
    import torch
    from torchcodec.encoders import AudioEncoder, VideoEncoder

    torch.set_num_threads(1)
    video_path, audio_path = os.path.join(work, "tc.mp4"), os.path.join(work, "tc.m4a")
    VideoEncoder(prep["rgb_nchw"], frame_rate=FPS).to_file(
        video_path, codec="libx264", pixel_format="yuv420p", crf=CRF, preset=PRESET, extra_options={"threads": 1})
    AudioEncoder(torch.from_numpy(audio[None, :]), sample_rate=RATE).to_file(audio_path, bit_rate=AUDIO_BITRATE)
    return os.path.getsize(video_path) + os.path.getsize(audio_path)


VIDEO: dict[str, Callable[..., dict[str, Any]]] = {
    "avcurate_aligned": video_avcurate,
    "pyav_graph_yuv": video_pyav_graph_yuv,
    "pyav_graph_rgb": video_pyav_graph_rgb,
    "pyav_reformat_rgb": video_pyav_reformat_rgb,
    "ffmpeg_cli_yuv": video_ffmpeg_cli_yuv,
    "ffmpeg_cli_rgb": video_ffmpeg_cli_rgb,
    "torchcodec": video_torchcodec,
    "decord": video_decord,
}
AUDIO: dict[str, Callable[[str], Any]] = {
    "pyav": audio_pyav,
    "ffmpeg_cli": audio_ffmpeg_cli,
    "torchcodec": audio_torchcodec,
    "decord": audio_decord,
}
ENCODE: dict[str, Callable[..., int]] = {
    "avcurate_writer_mux": encode_avcurate,
    "pyav_one_pass": encode_pyav,
    "ffmpeg_cli": encode_ffmpeg_cli,
    "torchcodec": encode_torchcodec,
}
JOBS = {"video": VIDEO, "audio": AUDIO, "encode": ENCODE}
UNSUPPORTED = {("encode", "decord"): "decord has no encoder"}


def _requirements(job: str, name: str) -> list[str]:
    """Modules imported before the clock starts, so import time never counts as work."""
    modules = ["numpy"]
    if job == "encode" or name.startswith(("pyav", "avcurate")):
        modules.append("av")
    if name.startswith("avcurate"):
        modules += ["avcurate.config", "avcurate.decode", "avcurate.encode", "avcurate.probe"]
    if name == "torchcodec":
        modules += ["torch", "torchcodec", "torchcodec.decoders", "torchcodec.encoders", "torchcodec.transforms"]
    if name == "decord":
        modules.append("decord")
    return modules


def probe(path: str) -> dict[str, Any]:
    """Size and duration with ffprobe (so no candidate's process loads a library it does not use)."""
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries", "stream=width,height:format=duration",
         "-of", "json", path],
        capture_output=True, text=True, check=True,
    ).stdout
    data = json.loads(out)
    stream = data["streams"][0]
    return {"width": int(stream["width"]), "height": int(stream["height"]), "duration": float(data["format"]["duration"])}


def _loaded_ffmpeg() -> list[str]:
    """The libavcodec builds mapped into this process (which FFmpeg a candidate really used)."""
    found = set()
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as f:
            for line in f:
                if "libavcodec" in line:
                    found.add(os.path.basename(line.split()[-1]))
    except OSError:
        pass
    return sorted(found)


def _cpu() -> float:
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def worker(spec: dict[str, Any]) -> dict[str, Any]:
    job, name, path = spec["job"], spec["candidate"], spec["input"]
    sys.path.append(spec["deps"])  # after the venv: only adds what the venv lacks
    out: dict[str, Any] = {"job": job, "candidate": name}
    started_cpu = _cpu()
    try:
        import importlib

        for module in _requirements(job, name):
            mod = importlib.import_module(module)
            if "." not in module and module != "numpy":
                out.setdefault("versions", {})[module] = getattr(mod, "__version__", "?")
        info = spec["info"]
        w, h = _target_size(info["width"], info["height"])
        out["size"] = [w, h]
        if job == "encode":
            import av

            clips = _prepare_clips(path, w, h)
            preps: list[dict[str, Any]] = []
            for frames, _ in clips:
                prep = {}
                if name in ("avcurate_writer_mux", "pyav_one_pass"):
                    prep["av_frames"] = [av.VideoFrame.from_ndarray(f, format="yuv420p") for f in frames]
                if name == "torchcodec":
                    import numpy as np
                    import torch

                    rgb = [av.VideoFrame.from_ndarray(f, format="yuv420p").to_ndarray(format="rgb24") for f in frames]
                    prep["rgb_nchw"] = torch.from_numpy(np.stack(rgb)).permute(0, 3, 1, 2).contiguous()
                preps.append(prep)
            media_s = sum(len(frames) for frames, _ in clips) / FPS
        else:
            media_s = info["duration"]
        out["setup_cpu_s"] = round(_cpu() - started_cpu, 3)
        work = tempfile.mkdtemp(prefix="bench-dec-")
        cpu0, wall0 = _cpu(), time.perf_counter()
        if job == "video":
            sink = _Sink()
            extra = VIDEO[name](path, sink, w, h)
            out.update(frames=sink.frames, checksum=sink.checksum, shape=sink.shape, **extra)
        elif job == "audio":
            samples = AUDIO[name](path)
            out.update(samples=int(samples.shape[0]), rms=round(float((samples.astype("float64") ** 2).mean() ** 0.5), 5))
        else:
            sizes = [ENCODE[name](frames, audio, w, h, work, prep) for (frames, audio), prep in zip(clips, preps)]
            out.update(bytes=sum(sizes), frames=sum(len(frames) for frames, _ in clips), clips=len(clips))
        out["wall_s"] = time.perf_counter() - wall0
        out["cpu_s"] = _cpu() - cpu0
        shutil.rmtree(work, ignore_errors=True)
        out["media_s"] = media_s
        out["ffmpeg_libs"] = _loaded_ffmpeg()
        out["ok"] = True
    except BaseException as e:  # noqa: BLE001 - reported, never fatal for the benchmark
        out["ok"] = False
        out["error"] = f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"[:400]
    return out


# =============================================================================================== parent side


def make_input(path: Path, seconds: float, size: str) -> None:
    sys.path.insert(0, str(HERE))
    from bench_pipeline import make_source

    make_source(path, seconds, size, seed=7)


def torchcodec_spec() -> str:
    """The torchcodec release built for the installed torch (0.N pairs with torch 2.N from 2.10 on)."""
    try:
        import torch
    except ImportError:
        return "torchcodec"
    major, minor = (int(x) for x in torch.__version__.split("+")[0].split(".")[:2])
    table = {(2, 9): "0.9", (2, 8): "0.7", (2, 7): "0.5"}
    version = f"0.{minor}" if major == 2 and minor >= 10 else table.get((major, minor))
    return f"torchcodec=={version}.*" if version else "torchcodec"


def install_candidates(deps: str) -> list[dict[str, Any]]:
    """pip-install torchcodec and decord (no dependencies) into `deps`; every attempt is reported."""
    packages = [torchcodec_spec(), "decord"]
    py = f"{sys.version_info.major}.{sys.version_info.minor}"
    attempts = [
        [sys.executable, "-m", "pip", "install", "--no-deps", "--only-binary=:all:", "--target", deps],
        ["uv", "pip", "install", "--no-deps", "--python", sys.executable, "--target", deps],
        ["python3", "-m", "pip", "install", "--no-deps", "--only-binary=:all:", "--python-version", py, "--target", deps],
    ]
    report = []
    for package in packages:
        entry: dict[str, Any] = {"package": package, "ok": False, "tried": []}
        for base in attempts:
            if shutil.which(base[0]) is None and not os.path.exists(base[0]):
                continue
            done = subprocess.run([*base, package], capture_output=True, text=True)
            tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or [""]
            entry["tried"].append({"command": " ".join([*base, package]), "rc": done.returncode, "message": tail[0][:300]})
            if done.returncode == 0:
                entry["ok"] = True
                break
        report.append(entry)
        log(f"install {package}: {'ok' if entry['ok'] else 'FAILED'} ({entry['tried'][-1]['message'] if entry['tried'] else 'no installer'})")
    return report


def run_worker(spec: dict[str, Any], timeout: float) -> dict[str, Any]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    try:
        done = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(spec)],
                              capture_output=True, text=True, timeout=timeout, cwd=REPO)
    except subprocess.TimeoutExpired:
        return {"ok": False, "error": f"timed out after {timeout:.0f} s", **spec}
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if not lines:
        err = done.stderr.strip().splitlines()
        return {"ok": False, "error": f"worker exited {done.returncode}: {err[-1] if err else 'no output'}"[:400], **spec}
    result = json.loads(lines[-1])
    result["process_wall_s"] = round(time.perf_counter() - started, 3)
    result["process_cpu_s"] = round(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime, 3)
    return result


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    ok = [r for r in runs if r.get("ok")]
    if not ok:
        return {"ok": False, "error": runs[-1].get("error", "failed") if runs else "not run"}
    first = ok[0]
    wall = statistics.median(r["wall_s"] for r in ok)
    cpu = statistics.median(r["cpu_s"] for r in ok)
    media_min = first["media_s"] / 60.0
    out: dict[str, Any] = {
        "ok": True,
        "repeats": len(ok),
        "wall_s": round(wall, 3),
        "cpu_s": round(cpu, 3),
        "cpu_s_per_media_min": round(cpu / media_min, 3),
        # noise on a shared machine only ever adds time: the best run is the steadiest estimate of the cost
        "cpu_s_per_media_min_best": round(min(r["cpu_s"] for r in ok) / media_min, 3),
        "realtime_x": round(first["media_s"] / wall, 1),
        "walls_s": [round(r["wall_s"], 3) for r in ok],
        "cpus_s": [round(r["cpu_s"], 3) for r in ok],
        "process_cpu_s": statistics.median(r["process_cpu_s"] for r in ok),
        "versions": first.get("versions"),
        "ffmpeg_libs": first.get("ffmpeg_libs"),
    }
    if "frames" in first:
        out["frames"] = first["frames"]
        out["frames_per_s"] = round(first["frames"] / wall, 1)
    for key in ("shape", "checksum", "samples", "rms", "bytes", "note", "audio_samples"):
        if key in first:
            out[key] = first[key]
    return out


def report(results: dict[str, Any]) -> str:
    lines = [f"machine: {results['machine']['nproc']} x {results['machine']['cpu_model']}; "
             f"load {results['machine']['load_start']} -> {results['machine'].get('load_end')}",
             f"input: {results['input']}"]
    for job, title in (("video", "VIDEO: decode + 25 fps + short side 256 -> numpy"),
                       ("audio", "AUDIO: decode + 16 kHz mono float32 -> numpy"),
                       ("encode", f"ENCODE: {CLIP_S:g} s clips, x264 {PRESET} crf {CRF} + AAC")):
        if job not in results["jobs"]:
            continue
        lines += ["", f"{title:<52}{'frames/s':>10}{'x realtime':>12}{'CPU s/min':>11}{'best':>8}{'wall s':>9}  libavcodec"]
        for name, r in results["jobs"][job].items():
            if not r.get("ok"):
                lines.append(f"  {name:<50}unavailable: {r.get('error')}")
                continue
            libs = ", ".join(r.get("ffmpeg_libs") or [])
            if name.startswith("ffmpeg_cli"):
                libs = f"CLI: {results['machine']['ffmpeg_cli'].split(' Copyright')[0]}" + (f" (+ {libs} in Python)" if libs else "")
            lines.append(f"  {name:<50}{r.get('frames_per_s', '-'):>10}{r['realtime_x']:>12}{r['cpu_s_per_media_min']:>11}"
                         f"{r['cpu_s_per_media_min_best']:>8}{r['wall_s']:>9}  {libs}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--quick", action="store_true", help="an 8 s input, one repeat (smoke test)")
    parser.add_argument("--seconds", type=float, help="input length (default 60)")
    parser.add_argument("--size", default="640x360", help="input size WxH (default 640x360)")
    parser.add_argument("--input", help="use this file instead of a generated one")
    parser.add_argument("--repeats", type=int, help="runs per candidate and job (default 3; median reported)")
    parser.add_argument("--jobs", default="video,audio,encode")
    parser.add_argument("--candidates", help="comma-separated subset of candidate names")
    parser.add_argument("--deps", default=DEFAULT_DEPS, help=f"folder with torchcodec/decord (default {DEFAULT_DEPS})")
    parser.add_argument("--install", action="store_true", help="pip-install torchcodec and decord into --deps first")
    parser.add_argument("--json", help="write the results as JSON to this path")
    parser.add_argument("--timeout", type=float, default=600, help="seconds per worker run")
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))), flush=True)
        return 0
    seconds = args.seconds or (8.0 if args.quick else 60.0)
    repeats = args.repeats or (1 if args.quick else 3)
    sys.path.insert(0, str(HERE))
    from bench_pipeline import cpu_model, ffmpeg_version, loadavg

    results: dict[str, Any] = {
        "machine": {"nproc": os.cpu_count(), "cpu_model": cpu_model(), "kernel": platform.release(),
                    "ffmpeg_cli": ffmpeg_version(), "load_start": loadavg()},
        "params": {"seconds": seconds, "size": args.size, "repeats": repeats, "threads": 1},
        "jobs": {},
    }
    if args.install:
        results["install"] = install_candidates(args.deps)
    work = Path(tempfile.mkdtemp(prefix="avcurate-bench-dec-"))
    try:
        if args.input:
            source = Path(args.input).resolve()
        else:
            source = work / "input.mp4"
            log(f"generating a {seconds:g} s {args.size} input")
            make_input(source, seconds, args.size)
        results["input"] = {"path": str(source) if args.input else f"generated {args.size} 30 fps H.264 + AAC 44.1 kHz stereo",
                            "seconds": seconds}
        info = probe(str(source))
        results["input"]["probe"] = info
        wanted = set(args.candidates.split(",")) if args.candidates else None
        for job in args.jobs.split(","):
            results["jobs"][job] = {}
            names = list(JOBS[job]) + [n for (j, n) in UNSUPPORTED if j == job]
            for name in names:
                if wanted and name not in wanted:
                    continue
                if (job, name) in UNSUPPORTED:
                    results["jobs"][job][name] = {"ok": False, "error": UNSUPPORTED[(job, name)]}
                    continue
                spec = {"job": job, "candidate": name, "input": str(source), "deps": args.deps, "info": info}
                runs = []
                for _ in range(repeats):
                    r = run_worker(spec, args.timeout)
                    runs.append(r)
                    if not r.get("ok"):
                        break  # a candidate that cannot load will not load on the next try either
                summary = summarise(runs)
                if not summary.get("ok") and "ModuleNotFoundError" in str(summary.get("error")):
                    summary["error"] += " (not installed: rerun with --install, or point --deps at a folder that has it)"
                results["jobs"][job][name] = summary
                if summary.get("ok"):
                    log(f"{job:<6} {name:<22} cpu {summary['cpu_s']:.2f} s, wall {summary['wall_s']:.2f} s (load {loadavg()})")
                else:
                    log(f"{job:<6} {name:<22} unavailable: {summary['error']}")
        results["machine"]["load_end"] = loadavg()
        if args.json:
            Path(args.json).parent.mkdir(parents=True, exist_ok=True)
            Path(args.json).write_text(json.dumps(results, indent=2, default=str) + "\n")
            log(f"results written to {args.json}")
        print(report(results))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
