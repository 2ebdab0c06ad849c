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
from avcurate.synth import write_shots_video

DECODE = Config().decode
# Frames 280-390 of this source (one shot, 456x256 after decoding): x264's B-frame planning read memory it never
# wrote there, which gave 3 different encodings under the 3 malloc patterns below before it was fixed.
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
    encode._zeroed = False  # as where the C library has no mallopt
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
print(hashlib.sha256(open(out, "rb").read()).hexdigest())
"""


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_shots_video(
        tmp_path_factory.mktemp("encode") / "shots.mp4", size="480x270", preset="veryfast", extra=("-g", "50")
    )


@pytest.mark.parametrize("libc", ["glibc", "no-mallopt"])
def test_the_same_pictures_encode_to_the_same_bytes_whatever_memory_held(
    source: Path, tmp_path: Path, libc: str
) -> None:
    """glibc fills each new block with a pattern chosen by MALLOC_PERTURB_: memory the encoder reads without
    writing it first would show as different bytes. Without mallopt, the clips are encoded without B-frames."""
    digests = set()
    for pattern in ("17", "85", "170"):
        env = {**os.environ, "MALLOC_PERTURB_": pattern}
        out = tmp_path / f"clip-{pattern}.mp4"
        done = subprocess.run(  # a fresh process: the first encoder is what sets glibc up
            [sys.executable, "-c", ENCODE_IN_A_FRESH_PROCESS, str(source), str(out), str(FIRST), str(END), libc],
            env=env, capture_output=True, text=True, check=True,
        )  # fmt: skip
        digests.add(done.stdout.strip())
        with av.open(str(out)) as container:
            assert sum(1 for _ in container.decode(video=0)) == END - FIRST
    assert len(digests) == 1


def test_the_source_frame_types_do_not_steer_the_clip_encoding(source: Path, tmp_path: Path) -> None:
    with av.open(str(source)) as container:
        decoder = AlignedDecoder(container, DECODE)
        frames = [f.video for f in decoder if f.index < 120]
    assert {PictureType(f.pict_type).name for f in frames} == {"I", "P", "B"}  # the source's, as decoded

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
    assert "B" in types  # x264 plans its own frame types, B-frames included
    assert np.count_nonzero(np.array(types) == "I") < 5
