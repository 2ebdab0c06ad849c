"""What a local run has done so far, shown while it works.

On a terminal, a live display (rich): sources done of total, media hours, clips kept and rejected, failures,
throughput and a time-to-finish estimate. Elsewhere (a log file, a CI job) one plain line a minute. The local
runner runs every stage in this process, so its stages report here directly (`listed`, `finished`); on other
runners the same numbers are Beam counters (`avcurate.beam.transforms.count_result`; docs/distributed.md).
"""

from __future__ import annotations

import sys
import threading
import time
from dataclasses import dataclass
from typing import TextIO

from rich.console import Console
from rich.progress import (
    BarColumn, MofNCompleteColumn, Progress, ProgressColumn, Task, TaskProgressColumn, TextColumn, TimeElapsedColumn,
)  # fmt: skip
from rich.text import Text

from .model import EXCLUDED, FAILED, KEPT, SourceResult

LOG_EVERY_S = 60.0


@dataclass
class Counts:
    sources: int | None = None  # to curate; None until listing has finished
    done: int = 0
    media_s: float = 0.0
    kept: int = 0
    rejected: int = 0
    failed: int = 0
    excluded: int = 0

    def tallies(self, elapsed_s: float) -> str:
        """Media, clips, failures and speed: what the live display and the log line both say."""
        speed = self.media_s / elapsed_s if elapsed_s > 0 else 0.0
        return (
            f"{_media(self.media_s)} media · kept {self.kept} · rejected {self.rejected} · failed {self.failed}"
            + (f" · excluded {self.excluded}" if self.excluded else "") + f" · {speed:.1f}x real time"
        )

    def line(self, elapsed_s: float) -> str:
        total = "?" if self.sources is None else str(self.sources)
        eta = _eta(self, elapsed_s)
        return (f"{self.done}/{total} sources · {self.tallies(elapsed_s)}"
                + (f" · about {_duration(eta)} left" if eta is not None else ""))  # fmt: skip


class RunProgress:
    """Counts a run's progress and shows it: `mode` "live" (a terminal), "log" (a line every `every_s`) or
    "quiet". Thread-safe: stages report from Beam's threads."""

    def __init__(self, mode: str, stream: TextIO | None = None, every_s: float = LOG_EVERY_S) -> None:
        self.mode, self.stream, self.every_s = mode, stream or sys.stderr, every_s
        self.counts = Counts()
        self._lock = threading.Lock()
        self._listed = 0
        self._started = time.monotonic()
        self._stop = threading.Event()
        self._progress: Progress | None = None
        self._logger: threading.Thread | None = None

    def __enter__(self) -> "RunProgress":
        self._started = time.monotonic()
        if self.mode == "live":
            console = Console(file=self.stream)
            self._progress = Progress(
                TextColumn("[bold]curating"), BarColumn(), MofNCompleteColumn(), TaskProgressColumn(),
                TextColumn("{task.fields[status]}"), TimeElapsedColumn(), _TimeLeftColumn(),
                console=console, refresh_per_second=2,
            )  # fmt: skip
            self._task = self._progress.add_task("sources", total=None, status="listing inputs", finish_at=None)
            self._progress.start()
        elif self.mode == "log":
            self._logger = threading.Thread(target=self._log_every, name="avcurate-progress", daemon=True)
            self._logger.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._progress is not None:
            self._update()
            self._progress.stop()
        if self._logger is not None:
            self._logger.join()
            self._log()  # the last word: what the run did in all

    def listed(self, n: int = 1) -> None:
        """`n` more sources to curate. Listing finishes before curating starts (Beam stage order), so the total
        is known from the first finished source on."""
        with self._lock:
            self._listed += n
            if self.counts.sources is not None:  # a source excluded while listing went on came first
                self.counts.sources = self._listed
        if self._progress is not None:
            self._update()

    def finished(self, result: SourceResult) -> None:
        with self._lock:
            counts = self.counts
            if result.status == EXCLUDED:  # split off before curating, so never counted as listed
                self._listed += 1
            counts.sources = self._listed
            counts.done += 1
            if result.status == EXCLUDED:
                counts.excluded += 1
            elif result.status == FAILED:
                counts.failed += 1
            if result.probe is not None:
                counts.media_s += result.probe.duration_s
            for clip in result.clips:
                if clip.status == KEPT:
                    counts.kept += 1
                else:
                    counts.rejected += 1
        if self._progress is not None:
            self._update()

    def _update(self) -> None:
        assert self._progress is not None
        with self._lock:
            counts = self.counts
            total = counts.sources if counts.sources is not None else (self._listed or None)
            if not counts.done:
                status = "starting" if total else "listing inputs"
                self._progress.update(self._task, total=total, completed=0, status=status)
                return
            elapsed = max(time.monotonic() - self._started, 1e-9)
            # Our own estimate (the pace of whole sources so far), not rich's: its speed window over the first
            # few sources promised a second where thirty were left.
            eta = _eta(counts, elapsed)
            finish_at = None if eta is None else time.monotonic() + eta
            self._progress.update(self._task, total=total, completed=counts.done, status=counts.tallies(elapsed),
                                  finish_at=finish_at)  # fmt: skip

    def _log_every(self) -> None:
        while not self._stop.wait(self.every_s):
            self._log()

    def _log(self) -> None:
        with self._lock:
            line = self.counts.line(time.monotonic() - self._started)
        print(f"{time.strftime('%H:%M:%S')} avcurate progress: {line}", file=self.stream, flush=True)


class _TimeLeftColumn(ProgressColumn):
    """The estimate counted down between finished sources, redrawn with the rest."""

    def render(self, task: Task) -> Text:
        if task.total is not None and task.completed >= task.total:
            return Text("done")
        finish_at = task.fields.get("finish_at")
        if finish_at is None:
            return Text("")
        left = finish_at - time.monotonic()
        return Text(f"about {_duration(left)} left" if left >= 1 else "finishing")


def _eta(counts: Counts, elapsed_s: float) -> float | None:
    """Seconds left at the pace so far, by sources (their lengths are unknown until each is probed)."""
    if counts.sources is None or counts.done == 0 or counts.done >= counts.sources:
        return None
    return elapsed_s / counts.done * (counts.sources - counts.done)


def _media(seconds: float) -> str:
    """Hours, as the issue counts media, once there are a few of them."""
    return f"{seconds / 3600:.2f} h" if seconds >= 360 else f"{seconds / 60:.1f} min"


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


_active: RunProgress | None = None


def activate(progress: RunProgress | None) -> None:
    """Stages in this process report to `progress` (the local runner's); None: to nothing."""
    global _active
    _active = progress


def listed(n: int = 1) -> None:
    if _active is not None:
        _active.listed(n)


def finished(result: SourceResult) -> None:
    if _active is not None:
        _active.finished(result)


def display_mode(stream: TextIO, quiet: bool) -> str:
    if quiet:
        return "quiet"
    return "live" if Console(file=stream).is_terminal else "log"
