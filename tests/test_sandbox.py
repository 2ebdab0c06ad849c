"""The sandbox bounds every source in time, memory and CPU, keeps the child apart from the caller's working
directory and secrets, tells the run's own failures from the inputs', and survives what kills its child."""

from __future__ import annotations

import contextlib
import os
import pickle
import socket
import struct
import subprocess
import threading
import time
from pathlib import Path

import pytest

import avcurate
from avcurate import process
from avcurate.beam.pipeline import pipeline_options
from avcurate.beam.transforms import storage_options
from avcurate.config import Config, DecodeConfig
from avcurate.fsutil import StorageError
from avcurate.model import Source, SourceResult
from avcurate.process import curate_source, decode_deadline, probe_source, process_source
from avcurate.replies import probe_info
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
    """A real native allocation: x264 encoding an 8192x8192 picture needs more than the 1024 MiB limit, at the
    open or at the first frame. It fails as a generic "external library" error, which must still be reported as
    memory, not as a bug."""
    encode_8k = (
        "import av\nfrom avcurate.config import EncodeConfig\nfrom avcurate.encode import VideoClipWriter\n"
        "writer = VideoClipWriter('/dev/null', 25.0, (8192, 8192), EncodeConfig(), 1)\n"
        "writer.write(av.VideoFrame(8192, 8192, 'yuv420p'))\n"
    )
    with pytest.raises(SourceFailure) as failure:
        sandbox.call(exec, encode_8k, deadline=60)
    assert failure.value.kind == "memory", failure.value
    assert "decode.memory_limit_mb" in str(failure.value)
    assert sandbox.call(sum, [1, 1], deadline=30) == 2


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


def make_video(path: Path, seconds: float, *extra: str, size: str = "320x240") -> Path:
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", f"testsrc2=s={size}:d={seconds}:r=25", "-f",
                    "lavfi", "-i", f"sine=d={seconds}", *extra, str(path)], check=True)  # fmt: skip
    return path


def test_the_deadline_ignores_a_header_duration_of_1e12_s() -> None:
    deadline = decode_deadline(DecodeConfig())
    # Whatever a header says, and even if a decoder claimed that much progress, the hard cap holds.
    assert deadline.overdue(elapsed_s=7200.0, silent_s=0.0, media_s=1e12) == "took longer than 7200 s"
    assert deadline.overdue(elapsed_s=7199.0, silent_s=0.0, media_s=1e12) is None
    assert "no progress for 60 s" in deadline.overdue(elapsed_s=100.0, silent_s=60.0, media_s=50.0)
    assert "too slow" in deadline.overdue(elapsed_s=100.0, silent_s=0.0, media_s=10.0)  # 60 + 3 x 10 s allowed


def test_an_mkv_claiming_1e12_s_that_stalls_is_stopped_by_its_progress(sandbox: Sandbox, tmp_path: Path) -> None:
    """The header says 1e12 s (a budget of 3e12 s by duration); the file then stalls half-way, as a pipe or a
    hung mount does. The stall timeout stops it, with where it stalled."""
    mkv = make_video(tmp_path / "v.mkv", 4, "-c:v", "libx264", "-preset", "ultrafast", "-c:a", "aac")
    data = mkv.read_bytes()
    at = data.index(b"\x44\x89\x88")  # EBML Duration: an 8-byte float, in TimestampScale units (ms)
    data = data[: at + 3] + struct.pack(">d", 1e15) + data[at + 11 :]
    patched = tmp_path / "patched.mkv"
    patched.write_bytes(data)
    assert probe_source(str(patched)).duration_s == pytest.approx(1e12)
    fifo = tmp_path / "stalls.mkv"
    os.mkfifo(fifo)
    release = threading.Event()

    def serve() -> None:  # the probe reads the whole file; decoding gets half of it, then nothing more
        for part in (data, data[: len(data) // 2]):
            with contextlib.suppress(BrokenPipeError), open(fifo, "wb") as f:
                f.write(part)
                f.flush()
                if part is not data:
                    release.wait(120)

    threading.Thread(target=serve, daemon=True).start()
    cfg = Config(decode=DecodeConfig(stall_timeout_s=2.0, timeout_s=60.0, max_timeout_s=3600.0))
    outcome: list[SourceResult] = []
    worker = threading.Thread(target=lambda: outcome.append(curate_source(Source.from_uri(str(fifo)), cfg,
                                                                          str(tmp_path / "staging"), sandbox)))
    started = time.monotonic()
    worker.start()
    worker.join(60)
    release.set()
    if worker.is_alive():
        sandbox.close()  # unblock it before failing
        pytest.fail("a stalled source with a huge header duration was not stopped within 60 s")
    assert time.monotonic() - started < 30
    result = outcome[0]
    assert result.error_type == "timeout", result.error
    assert "made no progress for 2 s (stalled after" in result.error and "of media)" in result.error
    assert "raise decode.stall_timeout_s" in result.error and "probe_timeout_s" not in result.error


def test_a_long_stream_without_duration_is_not_cut_at_a_flat_budget(sandbox: Sandbox, tmp_path: Path) -> None:
    """A streamed WebM has no duration: budgeting by the header gave it timeout_s flat. Measured progress lets it
    finish (timeout_s shrunk to 3 s so that the test is quick; the source takes longer than that)."""
    webm = tmp_path / "live.webm"
    with open(webm, "wb") as out:
        subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "testsrc2=s=320x240:d=60:r=25", "-f", "lavfi",
                        "-i", "sine=d=60", "-c:v", "libvpx", "-deadline", "realtime", "-cpu-used", "8", "-b:v", "200k",
                        "-c:a", "libopus", "-f", "webm", "-live", "1", "pipe:1"], stdout=out, check=True)  # fmt: skip
    assert probe_source(str(webm)).duration_s == 0.0
    cfg = Config(decode=DecodeConfig(timeout_s=3.0))
    sandbox.call(sum, [], deadline=30)  # started before the clock runs, as a worker's is
    started = time.monotonic()
    result = curate_source(Source.from_uri(str(webm)), cfg, str(tmp_path / "staging"), sandbox)
    assert result.error is None, result.error
    assert result.clips and result.clips[-1].end_s == pytest.approx(60.0, abs=0.1)
    print(f"60 s streamed WebM curated in {time.monotonic() - started:.1f} s")


def test_cpu_time_is_capped_per_call(sandbox: Sandbox) -> None:
    started = time.monotonic()
    with pytest.raises(SourceFailure, match="more than 1 CPU seconds") as failure:
        sandbox.call(exec, "while True: pass", deadline=120, cpu_s=1)
    assert failure.value.kind == "timeout"
    assert time.monotonic() - started < 30
    sandbox.call(exec, "sum(range(10**7))", deadline=30, cpu_s=30)  # the next call gets its own allowance


def test_the_child_is_isolated_from_the_working_directory_and_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A module named like a standard one in the working directory is not imported; storage keys stay out of a
    decoder of local files; the child imports this very avcurate."""
    video = make_video(tmp_path / "v.mp4", 1, "-c:v", "libx264", "-preset", "ultrafast", "-c:a", "aac")
    hostile = tmp_path / "cwd"
    hostile.mkdir()
    marker = tmp_path / "hostile-code-ran"
    for name in ("numbers", "random", "json"):
        (hostile / f"{name}.py").write_text(f"import os\nopen({str(marker)!r}, 'w').write({name!r})\nos._exit(3)\n")
    monkeypatch.chdir(hostile)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-for-decoders")
    box = Sandbox(memory_limit_mb=1024)
    try:
        assert box.call(probe_source, str(video), deadline=30)["has_audio"]
        assert not marker.exists()
        assert box.call(os.getcwd, deadline=30) != str(hostile)
        assert box.call(os.getenv, "AWS_SECRET_ACCESS_KEY", deadline=30) is None
        package = box.call(eval, "__import__('avcurate').__file__", deadline=30)
        assert Path(package).resolve() == Path(avcurate.__file__).resolve()
        # A child that reads remote storage does get the credentials.
        assert box.call(os.getenv, "AWS_SECRET_ACCESS_KEY", deadline=30, storage=True) == "not-for-decoders"
    finally:
        box.close()
    assert not marker.exists()


def test_replies_are_plain_data_never_unpickled(sandbox: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    video = make_video(tmp_path / "v.mp4", 1, "-c:v", "libx264", "-preset", "ultrafast", "-c:a", "aac")
    sandbox.call(sum, [], deadline=30)

    def refuse(*_: object, **__: object) -> None:
        raise AssertionError("the parent unpickled what the child sent")

    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "load", refuse)
    assert probe_info(sandbox.call(probe_source, str(video), deadline=30)).has_video
    with pytest.raises(SourceFailure, match="cannot cross the sandbox boundary") as failure:
        sandbox.call(eval, "object()", deadline=30)  # not plain data: refused in the child
    assert failure.value.kind == "internal"


def test_a_decoder_of_local_files_has_no_network_where_the_kernel_allows(sandbox: Sandbox) -> None:
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    try:
        sandbox.call(sum, [], deadline=30)
        if not sandbox.network_isolated:
            pytest.skip("this kernel does not let the decoder have a network namespace of its own (docs/sandbox.md)")
        connect = f"__import__('socket').create_connection(('127.0.0.1', {port}), timeout=5)"
        with pytest.raises(SourceFailure, match="Error"):
            sandbox.call(eval, connect, deadline=30)
    finally:
        server.close()


def test_a_full_scratch_disk_is_a_storage_failure_not_the_inputs(sandbox: Sandbox, tmp_path: Path) -> None:
    video = make_video(tmp_path / "v.mp4", 3, "-c:v", "libx264", "-preset", "ultrafast", "-c:a", "aac")
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    (scratch / "audio.f32").symlink_to("/dev/full")  # every write: ENOSPC, as on a full disk
    with pytest.raises(SourceFailure, match="No space left") as failure:
        sandbox.call(process_source, Source.from_uri(str(video)), Config(), str(tmp_path / "staging"), str(scratch),
                     deadline=60)  # fmt: skip
    assert failure.value.kind == "storage"


def test_an_unwritable_staging_area_fails_the_run_after_retries(
    sandbox: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not one `internal` failure per input: the run's own storage is the run's problem (even as root, whom
    permissions do not stop, a folder under a file cannot be written)."""
    video = make_video(tmp_path / "v.mp4", 6, "-c:v", "libx264", "-preset", "ultrafast", "-c:a", "aac")
    (tmp_path / "a-file").write_bytes(b"")
    staging = tmp_path / "a-file" / "_staging"
    monkeypatch.setattr(process, "_STORAGE_RETRY_WAITS_S", (0.0, 0.0))
    keep_all = Config(filters=())
    with pytest.raises(StorageError, match=f"cannot write {staging}/.*Not a directory.*tried 3 times"):
        curate_source(Source.from_uri(str(video)), keep_all, str(staging), sandbox)
