"""`run.json`: how the output in a folder was made, kept beside it for the report and for people.

The command, runner, inputs and full config; when it ran and for how long; the run's counters; and where the
time went, stage by stage (`avcurate.timings`). Times and dates differ between runs, so this file (like
report.html) is outside the byte-for-byte reproducibility of shards, index and ledger. Layout:
schemas/run.v1.json.
"""

from __future__ import annotations

import json
import re
import time
from typing import Any, Sequence

from . import __version__
from .config import Config
from .fsutil import read_bytes, write_bytes
from .timings import is_time_counter, stages_from_counters

NAME = "run.json"
SCHEMA_VERSION = 1


def run_record(
    *, command: Sequence[str], runner: str, workers: int, inputs: Sequence[str], started: float, wall_s: float,
    resumed: bool, incremental: bool, cfg: Config, counters: dict[str, int],
) -> dict[str, Any]:
    """`started`: the epoch time the run began."""
    return {
        "schema_version": SCHEMA_VERSION,
        "avcurate_version": __version__,
        "command": " ".join(redacted(command)),
        "runner": runner,
        "workers": workers,
        "inputs": [_USER_INFO.sub("***@", uri) for uri in inputs],
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "wall_s": round(wall_s, 3),
        "resumed": resumed,
        "incremental": incremental,
        "config": cfg.to_dict(),
        "config_hash": cfg.hash,
        "counters": {name: value for name, value in sorted(counters.items()) if not is_time_counter(name)},
        "stages": stages_from_counters(counters),
    }


# Option names whose values are secrets (--s3_secret_access_key, --hf-token, ...): the record is written into the
# output, which is shared, so their values never are.
_SECRET_OPTION = re.compile(r"^--?[\w.-]*(key|secret|token|password|passwd|credential)[\w.-]*$", re.I)
_USER_INFO = re.compile(r"(?<=://)[^/@\s]+@")


def redacted(command: Sequence[str]) -> list[str]:
    """`command` with secret option values and the user info of URLs (user:password@) replaced by ***."""
    out: list[str] = []
    hide_next = False
    for arg in command:
        if hide_next:
            out.append("***")
            hide_next = False
            continue
        name, eq, _ = arg.partition("=")
        if _SECRET_OPTION.match(name):
            if eq:
                out.append(f"{name}=***")
            else:
                out.append(arg)
                hide_next = True
            continue
        out.append(_USER_INFO.sub("***@", arg))
    return out


def write_run_record(output_dir: str, record: dict[str, Any]) -> None:
    write_bytes(f"{output_dir.rstrip('/')}/{NAME}", (json.dumps(record, indent=2, ensure_ascii=False) + "\n").encode())


def read_run_record(output_dir: str) -> dict[str, Any] | None:
    """The folder's run.json, or None (an output older than the record)."""
    raw = read_bytes(f"{output_dir.rstrip('/')}/{NAME}")
    return json.loads(raw) if raw is not None else None
