"""Run decoding in a child process that can be killed: every source is bounded in time, memory, CPU and file size.

A file can make a decoder block forever (a pipe, a stalled mount) or allocate without end; neither can be
interrupted from Python inside the same process. The child is started once per worker and reused; it is
replaced after a timeout or a crash, and the source that caused it is reported as failed.

The child is started isolated (`python -I`, a private working directory, a minimal environment, no network
where the kernel allows it) and answers in JSON, never pickles. What this does and does not protect against:
docs/sandbox.md.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import errno
import importlib
import json
import math
import os
import pickle
import resource
import select
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import traceback
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Callable

from . import timings
from .fsutil import OPTIONS_ENV, StorageError, filesystems
from .probe import MediaError


_STARTUP_TIMEOUT_S = 120.0  # a fresh interpreter importing PyAV, numpy (and Beam, for remote sources)
_BEAT_EVERY_S = 0.5  # heartbeats are rate-limited: calling `heartbeat` every frame costs one clock read
# No single file the child writes (scratch audio, encoded clips) may grow past this: a runaway decoder cannot
# fill the disk through one file. A day of 48 kHz stereo float32 scratch audio is 33 GB.
_MAX_FILE_BYTES = 64 << 30
# The directory holding the avcurate package the parent imported: the child imports that one, whatever
# PYTHONPATH, the working directory or an editable install elsewhere would pick.
_PACKAGE_ROOT = str(Path(__file__).resolve().parents[1])
_CLONE_NEWNET = 0x40000000

# The environment a decoder of local files gets; everything else (storage keys, tokens, ...) is dropped.
_BASE_ENV = ("PATH", "HOME", "LANG", "LANGUAGE", "TZ", "TMPDIR", "LD_LIBRARY_PATH", "CUDA_VISIBLE_DEVICES",
             "NVIDIA_VISIBLE_DEVICES", "OMP_NUM_THREADS", "HF_HOME", "HF_HUB_CACHE", "TORCH_HOME",
             "AVCURATE_FAULTS")  # fmt: skip
# Models the decoder loads (speaker stages) come from local files or a cache the launcher filled: never the
# network (the child has none), never telemetry.
# glibc's per-thread cache off: blocks it serves escape the zero fill the clip encoder relies on
# (avcurate/encode.py, _ZeroedAllocations).
DETERMINISTIC_MALLOC = {"GLIBC_TUNABLES": "glibc.malloc.tcache_count=0"}
_CHILD_ENV = {"HF_HUB_OFFLINE": "1", "PYANNOTE_METRICS_ENABLED": "false", **DETERMINISTIC_MALLOC}
# Added only for a child that reads or writes remote storage: credentials, proxies, CA bundles.
_STORAGE_ENV_PREFIXES = ("AWS_", "GOOGLE_", "GCLOUD_", "CLOUDSDK_", "AZURE_", "HADOOP_", "KRB5")
_STORAGE_ENV = ("HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy", "SSL_CERT_FILE",
                "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE")  # fmt: skip

_FULL_DISK = (errno.ENOSPC, errno.EDQUOT, errno.EROFS)  # writing fails for the storage's sake, never the input's


class SourceFailure(Exception):
    """A source that failed in the sandbox: `kind` goes to the ledger's error_type, the message to error."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.times: timings.Times = {}  # what the source's calls spent before it failed, by stage


@dataclass(frozen=True)
class Deadline:
    """When a call in the child is stopped.

    Any call is stopped after `cap_s`. A call that reports progress (`heartbeat`) is also stopped when it has
    been silent for `stall_s`, or when it has run longer than `base_s` plus `per_media_s` per second of media it
    says it has done: measured progress, not what a file's header claims.
    """

    cap_s: float
    stall_s: float = math.inf
    base_s: float = math.inf
    per_media_s: float = 0.0
    settings: str = ""  # the config keys that set these bounds, named in the timeout message

    def overdue(self, elapsed_s: float, silent_s: float, media_s: float) -> str | None:
        """Why the call must stop now, or None."""
        if elapsed_s >= self.cap_s:
            return f"took longer than {self.cap_s:.0f} s"
        if silent_s >= self.stall_s:
            return f"made no progress for {self.stall_s:.0f} s (stalled after {media_s:.1f} s of media)"
        if elapsed_s >= self._allowed_s(media_s):
            return (f"was too slow: {media_s:.1f} s of media in {elapsed_s:.0f} s (allowed: {self.base_s:.0f} s + "
                    f"{self.per_media_s:g} s per second of media)")  # fmt: skip
        return None

    def wait_s(self, elapsed_s: float, silent_s: float, media_s: float) -> float:
        """How long nothing can become overdue."""
        left = min(self.cap_s - elapsed_s, self.stall_s - silent_s, self._allowed_s(media_s) - elapsed_s)
        return max(left, 0.01)

    def _allowed_s(self, media_s: float) -> float:
        return self.base_s + self.per_media_s * media_s


# The child's side -------------------------------------------------------------------------------------------

_channel: BinaryIO | None = None  # set in the child only: `heartbeat` is a no-op anywhere else
_last_beat = 0.0


def heartbeat(media_s: float | None = None) -> None:
    """Tell the parent this call is making progress; `media_s`: seconds of media done so far, if it knows.

    Cheap enough to call every frame: at most one message per half second.
    """
    global _last_beat
    if _channel is None:
        return
    now = time.monotonic()
    if now - _last_beat < _BEAT_EVERY_S:
        return
    _last_beat = now
    _send_json(_channel, {"beat": media_s})


def _plain(value: Any) -> Any:
    """JSON for what json does not know: the model's dataclasses, numpy scalars."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if hasattr(value, "item") and callable(value.item):  # a numpy scalar
        return value.item()
    raise TypeError(f"{type(value).__name__} cannot cross the sandbox boundary as JSON")


def _encode(message: dict[str, Any]) -> bytes:
    data = json.dumps(message, default=_plain).encode()
    return struct.pack("<Q", len(data)) + data


def _send_json(stream: BinaryIO, message: dict[str, Any]) -> None:
    stream.write(_encode(message))
    stream.flush()


def exception_chain(error: BaseException) -> list[BaseException]:
    """The error, then what caused it, and so on."""
    chain: list[BaseException] = []
    current: BaseException | None = error
    while current is not None and current not in chain:
        chain.append(current)
        current = current.__cause__ or current.__context__
    return chain


def _is_memory(error: BaseException) -> bool:
    # av.error.MemoryError is a MemoryError; an encoder that cannot open raises an ExternalError whose cause
    # `encode.py` marks as MemoryError when the library said so.
    return (
        isinstance(error, MemoryError)
        or (isinstance(error, OSError) and error.errno == errno.ENOMEM)
        or "Cannot allocate memory" in str(error)
    )


def _failure(error: BaseException, memory_limit_mb: int, own_file_limit: bool) -> tuple[str, str]:
    """(kind, message) for an exception raised in the child: what went wrong, and what to do about it."""
    chain = exception_chain(error)
    if any(_is_memory(e) for e in chain):
        return "memory", f"decoding needed more than {memory_limit_mb} MiB (decode.memory_limit_mb): {error}"
    too_big = [e for e in chain if isinstance(e, OSError) and e.errno == errno.EFBIG]
    if too_big and own_file_limit:
        return "too_large", (f"a scratch file of this source passed the decoder's {_MAX_FILE_BYTES >> 30} GiB "
                             f"file size limit ({error}); split the source")  # fmt: skip
    storage = [e for e in chain if isinstance(e, StorageError)] or too_big or [
        e for e in chain if isinstance(e, OSError) and e.errno in _FULL_DISK
    ]
    if storage and isinstance(storage[0], StorageError):
        return "storage", str(storage[0])
    if storage:
        return "storage", (f"writing failed: {storage[0]}: the scratch folder (TMPDIR) or the staging area is full "
                           "or read-only; free space there or point TMPDIR / --output elsewhere")  # fmt: skip
    if isinstance(error, MediaError):
        return error.kind, str(error)
    # An unexpected failure still belongs to this source, with where it happened.
    where = traceback.format_exception(error, limit=-3)
    lines = [line for part in where for line in part.strip().splitlines()]
    return "internal", f"{type(error).__name__}: {error} [{' | '.join(lines[-4:-1])}]"


def _isolate_network() -> bool:
    """A network namespace of its own, where the kernel lets this process make one (root, or CAP_SYS_ADMIN)."""
    libc = ctypes.CDLL(None, use_errno=True)
    return libc.unshare(_CLONE_NEWNET) == 0


def _serve(memory_limit_mb: int, isolate_network: bool) -> None:
    """The child's loop: receive (fn, args, cpu_s), send {"ok": {"value": result, "times": seconds by stage}}
    or {"error": [kind, message, seconds by stage]}."""
    global _channel
    network_isolated = isolate_network and _isolate_network()
    limit = memory_limit_mb * 1024 * 1024
    # The data limit caps what a process can allocate (heap and private writable mappings) but not the address
    # space that shared libraries and reservations take: PyTorch alone maps 3.6 GB of address space on import,
    # CUDA far more, and a learned shot detector runs in this process.
    resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))
    # A crash must not leave a core file the size of the decoder's memory.
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    _, file_hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    file_limit = _MAX_FILE_BYTES if file_hard == resource.RLIM_INFINITY else min(_MAX_FILE_BYTES, file_hard)
    resource.setrlimit(resource.RLIMIT_FSIZE, (file_limit, file_hard))
    own_file_limit = file_limit == _MAX_FILE_BYTES  # else EFBIG is the run's limit (ulimit -f), not ours
    # The protocol owns the original stdout; anything a library prints goes to stderr instead.
    _channel = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    # Imports (and Beam's FileSystems, for remote sources) before saying ready, so that no source's deadline
    # pays for them.
    importlib.import_module("avcurate.process")
    if os.environ.get(OPTIONS_ENV):
        filesystems()
    _send_json(_channel, {"ready": {"network_isolated": network_isolated}})
    while True:
        try:
            fn, args, cpu_s = _receive_pickle(0)
        except EOFError:
            return
        # CPU time is limited per call, relative to what the reused child has used so far; exceeding it kills
        # the child (SIGXCPU).
        usage = resource.getrusage(resource.RUSAGE_SELF)
        _, cpu_hard = resource.getrlimit(resource.RLIMIT_CPU)
        cpu_soft = math.ceil(usage.ru_utime + usage.ru_stime + cpu_s)
        if cpu_hard != resource.RLIM_INFINITY:
            cpu_soft = min(cpu_soft, cpu_hard)
        resource.setrlimit(resource.RLIMIT_CPU, (cpu_soft, cpu_hard))
        timings.start_call()
        try:
            result = fn(*args)
            reply = _encode({"ok": {"value": result, "times": timings.call_totals()}})
        except Exception as e:
            reply = _encode({"error": [*_failure(e, memory_limit_mb, own_file_limit), timings.call_totals()]})
        _channel.write(reply)
        _channel.flush()


def _receive_pickle(fd: int) -> Any:
    """A request from the parent (trusted: it chose the function and its arguments)."""
    (size,) = struct.unpack("<Q", _read_exact(fd, 8))
    return pickle.loads(_read_exact(fd, size))


# The parent's side ------------------------------------------------------------------------------------------


def child_environment(storage: bool) -> dict[str, str]:
    """What the child may see of this process's environment: locale, paths, GPU selection; storage
    credentials and proxies only for a child that reads or writes remote storage."""
    env = {k: v for k, v in os.environ.items() if k in _BASE_ENV or k.startswith("LC_")}
    env.update(_CHILD_ENV)
    if storage:
        env.update(
            (k, v) for k, v in os.environ.items() if k in _STORAGE_ENV or k.startswith(_STORAGE_ENV_PREFIXES)
        )
    return env


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _read_exact(fd: int, size: int) -> bytes:
    """`size` bytes from a pipe (EOFError if it closes first): the framing both sides read."""
    data = bytearray()
    while len(data) < size:
        chunk = os.read(fd, size - len(data))
        if not chunk:
            raise EOFError
        data += chunk
    return bytes(data)


def _receive_json(fd: int) -> dict[str, Any]:
    """One message from the child: plain data only, decoded by the caller into its types."""
    (size,) = struct.unpack("<Q", _read_exact(fd, 8))
    message = json.loads(_read_exact(fd, size))
    if not isinstance(message, dict) or len(message) != 1:
        raise ValueError("malformed message from the decoder process")
    return message


def _reap(process: subprocess.Popen[bytes], workdir: str) -> None:
    if process.poll() is None:
        process.kill()
    process.wait()
    shutil.rmtree(workdir, ignore_errors=True)


class Sandbox:
    def __init__(self, memory_limit_mb: int, filesystem_options: dict[str, Any] | None = None) -> None:
        """`filesystem_options`: the pipeline options, for Beam's FileSystems in the child (remote sources)."""
        self.memory_limit_mb = memory_limit_mb
        self.filesystem_options = filesystem_options
        self.network_isolated = False  # known once the child has started
        self._process: subprocess.Popen[bytes] | None = None
        self._workdir: str | None = None
        self._storage = False  # whether the running child was given storage credentials and the network
        self.last_times: timings.Times = {}  # the last successful call's seconds by stage (`avcurate.timings`)

    def call(
        self,
        fn: Callable[..., Any],
        *args: Any,
        deadline: Deadline | float,
        what: str = "decoding",
        storage: bool = False,
        cpu_s: float | None = None,
    ) -> Any:
        """fn(*args) in the child; its result as plain JSON data (dicts, lists, numbers, strings).

        `deadline`: a Deadline, or seconds. `storage`: the call reads or writes remote storage, so the child
        needs credentials and the network. `cpu_s`: CPU seconds the call may use (default: the deadline's cap
        on every core, a backstop for a child its parent can no longer stop). Raises SourceFailure on a media
        error, timeout or crash of the child.
        """
        if not isinstance(deadline, Deadline):
            deadline = Deadline(cap_s=deadline)
        if cpu_s is None:
            cpu_s = deadline.cap_s * (os.cpu_count() or 1)
        self.last_times = {}  # a call whose child dies reports none
        self._start(storage)
        assert self._process is not None and self._process.stdin and self._process.stdout
        out = self._process.stdout.fileno()
        try:
            _write_all(self._process.stdin.fileno(), _request(fn, args, cpu_s))
        except OSError:
            pass  # the child is gone: reading below reports it
        started = silent_since = time.monotonic()
        media_s = 0.0
        while True:
            now = time.monotonic()
            overdue = deadline.overdue(now - started, now - silent_since, media_s)
            if overdue:
                self._stop()
                raise SourceFailure(
                    "timeout",
                    f"{what} {overdue} and was stopped (a pipe, a stalled network mount or a decoder stuck on a "
                    f"damaged file); raise {deadline.settings or 'the deadline'} if it is just slow",
                )
            ready, _, _ = select.select([out], [], [], deadline.wait_s(now - started, now - silent_since, media_s))
            if not ready:
                continue
            try:
                message = _receive_json(out)
            except (EOFError, OSError, ValueError):
                raise self._died(what, cpu_s) from None
            if "beat" in message:
                silent_since = time.monotonic()
                media_s = max(media_s, float(message["beat"] or 0.0))
            elif "ok" in message:
                self.last_times = message["ok"]["times"]
                return message["ok"]["value"]
            elif "error" in message:
                kind, text, self.last_times = message["error"]
                raise SourceFailure(str(kind), str(text))
            else:
                raise self._died(what, cpu_s)

    def _died(self, what: str, cpu_s: float) -> SourceFailure:
        code = self._stop()
        if code == -24:  # SIGXCPU
            return SourceFailure(
                "timeout",
                f"the decoder process used more than {cpu_s:.0f} CPU seconds during {what} and was stopped; raise "
                "decode.max_timeout_s if the source is just long",
            )
        kind = "memory" if code in (-9, -6) else "crash"
        return SourceFailure(
            kind,
            f"the decoder process died during {what} (exit code {code}); the file is probably damaged, or "
            f"needed more than {self.memory_limit_mb} MiB (decode.memory_limit_mb)",
        )

    def _start(self, storage: bool) -> None:
        if self._process is not None and self._process.poll() is None:
            if self._storage or not storage:
                return
            self._stop()  # a child without credentials cannot read remote storage: start one that can
        storage = storage or bool(self.filesystem_options)
        env = child_environment(storage)
        if self.filesystem_options:
            env[OPTIONS_ENV] = json.dumps(self.filesystem_options, default=str)
        # A fresh interpreter (not fork: Beam workers hold threads; not multiprocessing's spawn: it would
        # re-run the caller's __main__), isolated (-I: no PYTHON* variables, no user site, not the working
        # directory on sys.path), importing this very avcurate, in a working directory of its own.
        bootstrap = (f"import sys; sys.path.insert(0, {_PACKAGE_ROOT!r}); from avcurate.sandbox import _serve; "
                     f"_serve({int(self.memory_limit_mb)}, {not storage})")  # fmt: skip
        self._workdir = tempfile.mkdtemp(prefix="avcurate-sandbox-")
        self._process = subprocess.Popen(
            [sys.executable, "-I", "-c", bootstrap],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            cwd=self._workdir,
            bufsize=0,  # several messages may arrive per call: no buffer may hide one from select
        )
        self._storage = storage
        # Reap the child even if the owner is never closed (Beam does not always call teardown): an orphan
        # would outlive the worker and its CPU time would be lost to accounting.
        weakref.finalize(self, _reap, self._process, self._workdir)
        assert self._process.stdout is not None
        out = self._process.stdout.fileno()
        ready, _, _ = select.select([out], [], [], _STARTUP_TIMEOUT_S)
        try:
            message = _receive_json(out) if ready else {"silent": None}
        except (EOFError, OSError, ValueError):
            message = {"died": None}
        if "ready" not in message:
            code = self._stop()
            raise SourceFailure(
                "crash", f"the decoder process did not start ({next(iter(message))}, exit code {code}); see the "
                "worker's log"
            )
        self.network_isolated = bool(message["ready"]["network_isolated"])

    def _stop(self) -> int | None:
        if self._process is None:
            return None
        process, self._process = self._process, None
        if process.poll() is None:
            process.kill()
        code = process.wait(timeout=30)
        for stream in (process.stdin, process.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None
        return code

    def close(self) -> None:
        self._stop()


def _request(fn: Callable[..., Any], args: tuple[Any, ...], cpu_s: float) -> bytes:
    data = pickle.dumps((fn, args, cpu_s), protocol=pickle.HIGHEST_PROTOCOL)
    return struct.pack("<Q", len(data)) + data
