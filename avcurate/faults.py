"""Named points where a test can make a run fail the way real runs fail: a crash, a lost worker, a whole run
killed. Off unless `AVCURATE_FAULTS` is set, and then a dictionary lookup per point reached.

`AVCURATE_FAULTS` is JSON: a list of {"at": POINT, "do": ACTION, "after": N, "once": MARKER_FILE}. The fault
fires the N-th time (default 1) this process reaches POINT; with "once", only in the first process of the run
to get there (it creates MARKER_FILE). Actions: "raise" (an exception: a task that fails), "exit" (this process
dies at once: a lost worker or decoder), "kill-run" (SIGKILL to this process's whole process group: the run and
every process it started, as `kill -9` of the tree would).

Points: "curate" (a Beam worker, before curating a source), "decode" (inside the sandboxed decoder, at each
decoded frame), "embedded" (after a clip's embeddings are saved and its inputs deleted), "shard" (a shard
writer, after each clip is in the tar, before the tar is complete), "finished" (every output written and the run
marked finished, before its staging area is deleted).
"""

from __future__ import annotations

import json
import os
import signal
from collections import Counter

ENV = "AVCURATE_FAULTS"
_faults: list[dict] | None = None
_reached: Counter[str] = Counter()


class InjectedFault(RuntimeError):
    pass


def fault_point(name: str) -> None:
    global _faults
    if _faults is None:
        _faults = json.loads(os.environ.get(ENV) or "[]")
    if not _faults:
        return
    _reached[name] += 1
    for fault in _faults:
        if fault["at"] != name or _reached[name] != fault.get("after", 1) or not _first(fault.get("once")):
            continue
        action = fault["do"]
        if action == "raise":
            raise InjectedFault(f"fault injected at {name} ({ENV})")
        if action == "exit":
            os._exit(137)
        if action == "kill-run":
            os.killpg(os.getpgrp(), signal.SIGKILL)
        raise ValueError(f"{ENV}: unknown action {action!r}")


def _first(marker: str | None) -> bool:
    if marker is None:
        return True
    try:
        os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        return True
    except FileExistsError:
        return False
