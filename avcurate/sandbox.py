"""Run decoding in a child process that can be killed: every source is bounded in time and memory.

A file can make a decoder block forever (a pipe, a stalled mount) or allocate without end; neither can be
interrupted from Python inside the same process. The child is started once per worker and reused; it is
replaced after a timeout or a crash, and the source that caused it is reported as failed.
"""

from __future__ import annotations

import multiprocessing
import resource
import traceback
from typing import Any, Callable

from .probe import MediaError


class SourceFailure(Exception):
    """A source that failed in the sandbox: `kind` goes to the ledger's error_type, the message to error."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


def _child(conn: Any, memory_limit_mb: int) -> None:
    limit = memory_limit_mb * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    while True:
        try:
            fn, args = conn.recv()
        except EOFError:
            return
        try:
            conn.send(("ok", fn(*args)))
        except MediaError as e:
            conn.send(("error", (e.kind, str(e))))
        except MemoryError:
            conn.send(("error", ("memory", f"decoding needed more than {memory_limit_mb} MiB (decode.memory_limit_mb)")))
        except Exception as e:  # an unexpected failure still belongs to this source, with its traceback
            detail = traceback.format_exc(limit=-3).strip().splitlines()
            conn.send(("error", ("internal", f"{type(e).__name__}: {e} [{' | '.join(detail[-3:])}]")))


class Sandbox:
    def __init__(self, memory_limit_mb: int) -> None:
        self.memory_limit_mb = memory_limit_mb
        self._process: multiprocessing.Process | None = None
        self._conn: Any = None

    def call(self, fn: Callable[..., Any], *args: Any, timeout_s: float, what: str = "decoding") -> Any:
        """fn(*args) in the child. Raises SourceFailure on a media error, timeout or crash of the child."""
        self._start()
        self._conn.send((fn, args))
        if not self._conn.poll(timeout_s):
            self._stop()
            raise SourceFailure(
                "timeout",
                f"{what} took longer than {timeout_s:.0f} s and was stopped (a pipe, a stalled network mount or "
                "a decoder stuck on a damaged file); raise decode.timeout_s / decode.probe_timeout_s if it is "
                "just slow",
            )
        try:
            status, payload = self._conn.recv()
        except (EOFError, OSError):
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
        if self._process is not None and self._process.is_alive():
            return
        context = multiprocessing.get_context("spawn")
        parent, child = context.Pipe()
        self._process = context.Process(target=_child, args=(child, self.memory_limit_mb), daemon=True)
        self._process.start()
        child.close()
        self._conn = parent

    def _stop(self) -> int | None:
        if self._process is None:
            return None
        if self._process.is_alive():
            self._process.kill()
        self._process.join(timeout=10)
        code = self._process.exitcode
        self._conn.close()
        self._process = self._conn = None
        return code

    def close(self) -> None:
        self._stop()
