"""The sandbox bounds every source in time and memory, and survives what kills its child."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from avcurate.beam.pipeline import pipeline_options
from avcurate.beam.transforms import storage_options
from avcurate.process import probe_source
from avcurate.sandbox import Sandbox, SourceFailure


@pytest.fixture
def sandbox():
    box = Sandbox(memory_limit_mb=1024)
    yield box
    box.close()


def test_result_comes_back_and_child_is_reused(sandbox: Sandbox) -> None:
    assert sandbox.call(os.getpid, deadline=30) == sandbox.call(os.getpid, deadline=30) != os.getpid()


def test_a_blocking_open_times_out_and_the_next_call_works(sandbox: Sandbox, tmp_path: Path) -> None:
    fifo = tmp_path / "hang.mp4"
    os.mkfifo(fifo)  # opening a pipe with no writer blocks forever inside the demuxer
    started = time.monotonic()
    with pytest.raises(SourceFailure, match="took longer than 2 s") as failure:
        sandbox.call(probe_source, str(fifo), deadline=2, what="probing")
    assert failure.value.kind == "timeout"
    assert time.monotonic() - started < 20
    assert sandbox.call(sum, [1, 2], deadline=30) == 3


def test_memory_is_capped(sandbox: Sandbox) -> None:
    with pytest.raises(SourceFailure) as failure:
        sandbox.call(bytearray, 4 * 1024**3, deadline=30)
    assert failure.value.kind == "memory"
    assert "decode.memory_limit_mb" in str(failure.value)


def test_a_dying_child_is_reported_and_replaced(sandbox: Sandbox) -> None:
    with pytest.raises(SourceFailure, match="died") as failure:
        sandbox.call(os._exit, 3, deadline=30)
    assert failure.value.kind == "crash"
    assert sandbox.call(sum, [2, 2], deadline=30) == 4


def test_media_errors_keep_their_kind(sandbox: Sandbox, tmp_path: Path) -> None:
    with pytest.raises(SourceFailure, match="does not exist") as failure:
        sandbox.call(probe_source, str(tmp_path / "missing.mp4"), deadline=30)
    assert failure.value.kind == "not_found"


BEAM_LOADED = "'apache_beam' in __import__('sys').modules"


def test_decoders_of_local_files_never_import_beam(sandbox: Sandbox, tmp_path: Path) -> None:
    """Beam costs a decoder seconds of CPU and over 1 GB of address space: only storage options bring it in."""
    video = tmp_path / "v.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "testsrc2=d=1", "-f", "lavfi", "-i", "sine=d=1",
                    "-c:v", "libx264", "-preset", "ultrafast", "-c:a", "aac", str(video)], check=True)  # fmt: skip
    assert sandbox.call(probe_source, str(video), deadline=30)["has_audio"]
    assert sandbox.call(eval, BEAM_LOADED, deadline=30) is False
    # A local run has pipeline options, but none for storage: its decoders get nothing.
    assert storage_options(pipeline_options("local", 2, [])) == {}
    s3 = storage_options(pipeline_options("local", 2, ["--s3_endpoint_url=http://minio:9000", "--project=p"]))
    assert s3 == {"s3_endpoint_url": "http://minio:9000", "project": "p"}
    remote = Sandbox(memory_limit_mb=2048, filesystem_options=s3)
    try:  # configured before it said ready, so no source's deadline pays for the import
        assert remote.call(eval, BEAM_LOADED, deadline=30) is True
    finally:
        remote.close()
