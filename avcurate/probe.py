"""Probe a source: streams, codecs, geometry, timing. Opens the container and reads headers only."""

from __future__ import annotations

import os
from typing import Any

import av

from .fsutil import filesystems
from .model import ProbeInfo


class MediaError(Exception):
    """A source that cannot become clips. `kind` is the short class recorded in the ledger."""

    kind = "media"


class ProbeError(MediaError):
    kind = "probe"


class NotFoundError(MediaError):
    kind = "not_found"


def open_container(uri: str) -> Any:
    """Open a local path or any Beam filesystem URI (gs://, s3://, ...) with PyAV."""
    if "://" in uri and not uri.startswith("file://"):
        fs = filesystems()
        if not fs.exists(uri):
            raise NotFoundError(f"{uri} does not exist (check the path and your credentials for its filesystem)")
        if fs.get_filesystem(uri).metadata(uri).size_in_bytes == 0:
            raise ProbeError(_EMPTY)
        return _open_av(fs.open(uri, compression_type="uncompressed"))
    path = uri[len("file://") :] if uri.startswith("file://") else uri
    if not os.path.exists(path):
        raise NotFoundError(f"{path} does not exist")
    if os.path.isfile(path) and os.path.getsize(path) == 0:
        raise ProbeError(_EMPTY)
    return _open_av(path)


_EMPTY = "the file is empty (0 bytes); re-download or re-export it"


def _open_av(source: Any) -> Any:
    try:
        return av.open(source, mode="r")
    except (av.error.InvalidDataError, av.error.FFmpegError) as e:
        raise ProbeError(
            f"not a readable media container ({e.__class__.__name__}: {_ffmpeg_message(e)}); the file is "
            "truncated, corrupt or not a video. Check it with `ffprobe`, or re-export it"
        ) from e


def main_streams(container: Any) -> tuple[Any, Any]:
    """The video and audio streams to use (None where absent), picked much as the ffmpeg CLI picks them.

    Cover art (an attached picture: a one-frame video stream) is not video. Among the rest, a stream flagged
    default wins, then the largest picture for video and the first stream for audio (the main language track
    comes first in practice; the most channels is often a surround mix of the same).
    """
    def is_default(stream: Any) -> bool:
        return bool(stream.disposition & av.stream.Disposition.default)

    def area(stream: Any) -> int:
        ctx = stream.codec_context
        return ctx.width * ctx.height if ctx is not None else 0

    videos = [s for s in container.streams.video if not s.disposition & av.stream.Disposition.attached_pic]
    video = max(videos, key=lambda s: (is_default(s), area(s)), default=None)  # max keeps the first of equals
    audio = max(container.streams.audio, key=is_default, default=None)
    return video, audio


def probe_container(container: Any) -> ProbeInfo:
    """Describe an open container. Raises ProbeError for inputs avcurate cannot turn into AV clips."""
    video, audio = main_streams(container)
    duration = _duration_s(container, video, audio)
    info = ProbeInfo(
        format_name=container.format.name,
        duration_s=duration,
        size_bytes=container.size if container.size and container.size > 0 else None,
        has_video=video is not None,
        has_audio=audio is not None,
    )
    if video is not None:
        ctx = video.codec_context  # None when this FFmpeg has no decoder for the codec
        info.video_codec = ctx.name if ctx is not None else None
        info.width, info.height = (ctx.width, ctx.height) if ctx is not None else (None, None)
        rate = video.average_rate or video.guessed_rate or video.base_rate
        info.fps = float(rate) if rate else None
        info.rotation = _rotation(video)
        info.video_start_s = _start_s(video)
    if audio is not None:
        info.audio_codec = audio.codec_context.name if audio.codec_context is not None else None
        info.sample_rate = audio.rate
        info.channels = audio.channels
        info.audio_start_s = _start_s(audio)
    return info


def check_decodable(info: ProbeInfo, container: Any) -> None:
    """Fail early, with the cause and the fix, for sources that can never give audio-visual clips."""
    if not info.has_video and not info.has_audio:
        raise ProbeError("the container has no audio or video stream")
    if not info.has_video:
        raise ProbeError("audio-only input: no video stream; avcurate makes audio-visual clips and needs both")
    if not info.has_audio:
        raise ProbeError("video-only input: no audio stream; avcurate makes audio-visual clips and needs both")
    for kind, stream in zip(("video", "audio"), main_streams(container)):
        if stream.codec_context is None or not stream.codec_context.codec.is_decoder:
            tag = getattr(stream.codec_context, "codec_tag", None) if stream.codec_context else None
            raise ProbeError(
                f"unsupported {kind} codec (no decoder in this FFmpeg build{f' for tag {tag!r}' if tag else ''}); "
                "transcode the source to H.264/AAC first, e.g. `ffmpeg -i in -c:v libx264 -c:a aac out.mp4`"
            )
    if not info.width or not info.height:
        raise ProbeError("the video stream has no frame size; the file is probably truncated or corrupt")


def _duration_s(container: Any, video: Any, audio: Any) -> float:
    if container.duration is not None and container.duration > 0:
        return container.duration / av.time_base
    for stream in (video, audio):
        if stream is not None and stream.duration and stream.time_base:
            return float(stream.duration * stream.time_base)
    return 0.0


def _start_s(stream: Any) -> float | None:
    if stream.start_time is None or stream.time_base is None:
        return None
    return float(stream.start_time * stream.time_base)


def _rotation(video: Any) -> int:
    """Display rotation from stream tags where the demuxer exposes it; the decoder confirms it per frame."""
    tag = video.metadata.get("rotate")
    return normalise_rotation(-float(tag)) if tag else 0


def normalise_rotation(degrees: float) -> int:
    return int(round(degrees / 90.0)) * 90 % 360


def _ffmpeg_message(e: Exception) -> str:
    return getattr(e, "strerror", None) or str(e)
