"""Run decoding in a child process that can be killed: every source is bounded in time and memory.

A file can make a decoder block forever (a pipe, a stalled mount) or allocate without end; neither can be
interrupted from Python inside the same process. The child is started once per worker and reused; it is
replaced after a timeout or a crash, and the source that caused it is reported as failed.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import pickle
import resource
import select
import struct
import subprocess
import sys
import traceback
import weakref
from typing import Any, BinaryIO, Callable

from .fsutil import OPTIONS_ENV, filesystems
from .probe import MediaError


_STARTUP_TIMEOUT_S = 120.0  # a fresh interpreter importing PyAV, numpy (and Beam, for remote sources)


class SourceFailure(Exception):
    """A source that failed in the sandbox: `kind` goes to the ledger's error_type, the message to error."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


def _send(stream: BinaryIO, message: Any) -> None:
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(struct.pack("<Q", len(data)) + data)
    stream.flush()


def _receive(stream: BinaryIO) -> Any:
    header = stream.read(8)
    if len(header) < 8:
        raise EOFError
    (size,) = struct.unpack("<Q", header)
    data = stream.read(size)
    if len(data) < size:
        raise EOFError
    return pickle.loads(data)


def _serve(memory_limit_mb: int) -> None:
    """The child's loop: receive (fn, args), send back ("ok", result) or ("error", (kind, message))."""
    limit = memory_limit_mb * 1024 * 1024
    # The data limit caps what a process can allocate (heap and private writable mappings) but not the address
    # space that shared libraries and reservations take: PyTorch alone maps 3.6 GB of address space on import,
    # CUDA far more, and a learned shot detector runs in this process.
    resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))
    # The protocol owns the original stdout; anything a library prints goes to stderr instead.
    channel = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    requests = os.fdopen(0, "rb")
    # Imports (and Beam's FileSystems, for remote sources) before saying ready, so that no source's deadline
    # pays for them.
    importlib.import_module("avcurate.process")
    if os.environ.get(OPTIONS_ENV):
        filesystems()
    _send(channel, ("ready", None))
    while True:
        try:
            fn, args = _receive(requests)
        except EOFError:
            return
        try:
            reply: Any = ("ok", fn(*args))
        except MediaError as e:
            reply = ("error", (e.kind, str(e)))
        except MemoryError:
            reply = ("error", ("memory", f"decoding needed more than {memory_limit_mb} MiB (decode.memory_limit_mb)"))
        except Exception as e:  # an unexpected failure still belongs to this source, with where it happened
            where = traceback.format_exc(limit=-3).strip().splitlines()
            reply = ("error", ("internal", f"{type(e).__name__}: {e} [{' | '.join(where[-3:])}]"))
        _send(channel, reply)


def _reap(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.kill()
    process.wait()


class Sandbox:
    def __init__(self, memory_limit_mb: int, filesystem_options: dict[str, Any] | None = None) -> None:
        """`filesystem_options`: the pipeline options, for Beam's FileSystems in the child (remote sources)."""
        self.memory_limit_mb = memory_limit_mb
        self.filesystem_options = filesystem_options
        self._process: subprocess.Popen[bytes] | None = None

    def call(self, fn: Callable[..., Any], *args: Any, timeout_s: float, what: str = "decoding") -> Any:
        """fn(*args) in the child. Raises SourceFailure on a media error, timeout or crash of the child."""
        self._start()
        assert self._process is not None and self._process.stdin and self._process.stdout
        try:
            _send(self._process.stdin, (fn, args))
            ready, _, _ = select.select([self._process.stdout], [], [], timeout_s)
        except (BrokenPipeError, OSError):
            ready = [self._process.stdout]  # the child is gone: reading below reports it
        if not ready:
            self._stop()
            raise SourceFailure(
                "timeout",
                f"{what} took longer than {timeout_s:.0f} s and was stopped (a pipe, a stalled network mount or "
                "a decoder stuck on a damaged file); raise decode.timeout_s / decode.probe_timeout_s if it is "
                "just slow",
            )
        try:
            status, payload = _receive(self._process.stdout)
        except (EOFError, OSError, pickle.UnpicklingError):
            code = self._stop()
            kind = "memory" if code in (-9, -6) else "crash"
            raise SourceFailure(
                kind,
                f"the decoder process died during {what} (exit code {code}); the file is probably damaged, or "
                f"needed more than {self.memory_limit_mb} MiB (decode.memory_limit_mb)",
            ) from None
        if status == "ok":
            return payload
        kind, message = payload
        raise SourceFailure(kind, message)

    def _start(self) -> None:
        if self._process is not None and self._process.poll() is None:
            return
        # A fresh interpreter (not fork: Beam workers hold threads; not multiprocessing's spawn: it would
        # re-run the caller's __main__).
        env = dict(os.environ)
        if self.filesystem_options:
            env[OPTIONS_ENV] = json.dumps(self.filesystem_options, default=str)
        self._process = subprocess.Popen(
            [sys.executable, "-c", f"from avcurate.sandbox import _serve; _serve({self.memory_limit_mb})"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
        )
        # Reap the child even if the owner is never closed (Beam does not always call teardown): an orphan
        # would outlive the worker and its CPU time would be lost to accounting.
        weakref.finalize(self, _reap, self._process)
        assert self._process.stdout is not None
        ready, _, _ = select.select([self._process.stdout], [], [], _STARTUP_TIMEOUT_S)
        try:
            status, _ = _receive(self._process.stdout) if ready else ("silent", None)
        except (EOFError, OSError, pickle.UnpicklingError):
            status = "died"
        if status != "ready":
            code = self._stop()
            raise SourceFailure(
                "crash", f"the decoder process did not start ({status}, exit code {code}); see the worker's log"
            )

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
        return code

    def close(self) -> None:
        self._stop()
