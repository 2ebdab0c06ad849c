"""The clip encoder (`avcurate.encode.VideoClipWriter`) gives the same bytes for the same pictures, whatever the
process did before and whatever frame types the source's decoder set."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest
from av.video.frame import PictureType

from avcurate.config import Config
from avcurate.decode import AlignedDecoder
from avcurate.encode import VideoClipWriter
from avcurate.sandbox import DETERMINISTIC_MALLOC
from avcurate.synth import write_shots_video

DECODE = Config().decode
# Frames 280-390 of this source (one shot, 456x256 after decoding): x264's B-frame planning reads memory it never
# wrote there, which gives different encodings under the malloc patterns below without the fix (the control).
FIRST, END = 280, 390

ENCODE_IN_A_FRESH_PROCESS = """
import hashlib, sys
import av
from avcurate.config import Config
from avcurate.decode import AlignedDecoder
from avcurate import encode
from avcurate.encode import VideoClipWriter
source, out, first, end = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
if sys.argv[5] == "no-mallopt":
    encode._ZEROED.available = False  # as where the C library has no mallopt: no B-frames
elif sys.argv[5] == "unfixed":
    encode._ZEROED._mallopt = lambda *_: 1  # B-frames, and x264's allocations left as they come
cfg = Config()
with av.open(source) as container:
    decoder = AlignedDecoder(container, cfg.decode)
    writer = None
    for frame in decoder:
        if frame.index >= end:
            break
        if frame.index >= first:
            writer = writer or VideoClipWriter(out, decoder.fps, decoder.size, cfg.encode, cfg.decode.threads)
            writer.write(frame.video)
    writer.close()
print(hashlib.sha256(open(out, "rb").read()).hexdigest(), encode._ZEROED.available)
"""


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # One x264 thread and no B-frames: the same source every time (the ffmpeg CLI's x264 has the flaw we test).
    extra = ("-g", "50", "-threads", "1", "-x264-params", "bframes=0")
    return write_shots_video(tmp_path_factory.mktemp("encode") / "shots.mp4", size="480x270", preset="veryfast", extra=extra)


def encode_under_malloc_patterns(source: Path, tmp_path: Path, mode: str) -> set[str]:
    """The clip's digests, encoded in fresh processes whose blocks glibc fills with different patterns
    (MALLOC_PERTURB_): memory the encoder reads without writing it first shows as different bytes."""
    digests = set()
    for pattern in ("17", "85", "170"):
        out = tmp_path / f"clip-{mode}-{pattern}.mp4"
        done = subprocess.run(
            [sys.executable, "-c", ENCODE_IN_A_FRESH_PROCESS, str(source), str(out), str(FIRST), str(END), mode],
            env={**os.environ, **DETERMINISTIC_MALLOC, "MALLOC_PERTURB_": pattern},  # as in a sandboxed decoder
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        digest, available = done.stdout.split()
        assert available == str(mode != "no-mallopt")  # glibc here: the zeroing is there unless taken away
        digests.add(digest)
        with av.open(str(out)) as container:
            types = {PictureType(f.pict_type).name for f in container.decode(video=0)}
        assert ("B" in types) == (mode != "no-mallopt")
    return digests


def test_the_same_pictures_encode_to_the_same_bytes_whatever_memory_held(source: Path, tmp_path: Path) -> None:
    # The control: without the zeroing, this clip's bytes follow the memory's contents (else the test proves nothing).
    assert len(encode_under_malloc_patterns(source, tmp_path, "unfixed")) > 1
    assert len(encode_under_malloc_patterns(source, tmp_path, "glibc")) == 1
    assert len(encode_under_malloc_patterns(source, tmp_path, "no-mallopt")) == 1  # no B-frames: no such reads


def test_the_source_frame_types_do_not_steer_the_clip_encoding(source: Path, tmp_path: Path) -> None:
    with av.open(str(source)) as container:
        decoder = AlignedDecoder(container, DECODE)
        frames = [f.video for f in decoder if f.index < 120]
    assert {PictureType(f.pict_type).name for f in frames} == {"I", "P"}  # the source's, as decoded

    def encode(name: str, pictures: list[av.VideoFrame]) -> tuple[bytes, list[str]]:
        path = tmp_path / name
        writer = VideoClipWriter(str(path), decoder.fps, decoder.size, Config().encode, 1)
        for picture in pictures:
            writer.write(picture)
        writer.close()
        with av.open(str(path)) as container:
            types = [PictureType(f.pict_type).name for f in container.decode(video=0)]
        return path.read_bytes(), types

    as_decoded, types = encode("as-decoded.mp4", frames)
    for frame in frames:
        frame.pict_type = PictureType.I
    all_intra, _ = encode("all-intra.mp4", frames)
    assert hashlib.sha256(as_decoded).digest() == hashlib.sha256(all_intra).digest()
    assert "B" in types  # x264 plans its own frame types, B-frames included (glibc here)
    assert np.count_nonzero(np.array(types) == "I") < 5
