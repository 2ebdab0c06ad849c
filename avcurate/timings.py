"""Where a run's time goes: CPU and wall seconds per stage, counted as the work happens.

Inside a sandboxed decoder, each call's time is split between the stages it runs through (`stage`); anything
outside a named stage counts as "other". The parent adds the call's totals to the source's result, and the
Beam layer turns every result's totals into counters (`count_times`), as it does in-process stages it times
itself (`timed`): model inference, near-duplicates, writing. The run's record (`avcurate.runrecord`) keeps the
sums with the output.

CPU is the process's CPU time while the stage ran, its threads included (libav's decoding threads, the
encoder's, PyTorch's): a decoder process runs one source at a time, so that is the stage's own. In a Beam
worker running several bundles at once (Dataflow, a Dask worker with threads), stages timed there overlap and
each counts the whole process's CPU meanwhile, so their sum can exceed what was used. Wall seconds are summed
over workers, so their total exceeds the run's wall clock when workers run side by side.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import TypeVar

OTHER = "other"
# Flow order, for display; a stage "score:x" or "model:y" sorts by its prefix.
ORDER = (
    "list", "exclude", "probe", "decode", "cut", "encode", "score", "speakers", "model_inputs", "filter", "stage",
    OTHER, "model", "dedup", "write",
)  # fmt: skip
_CPU, _WALL = "stage_cpu_us:", "stage_wall_us:"

Times = dict[str, list[float]]  # stage -> [cpu_s, wall_s]
T = TypeVar("T")


class StageClock:
    """Exclusive seconds per stage in one process: time goes to whichever stage is current, and a nested
    stage pauses the one around it."""

    def __init__(self, first: str = OTHER) -> None:
        self.times: Times = {}
        self.current = first
        self._cpu, self._wall = time.process_time(), time.perf_counter()

    def switch(self, stage: str) -> str:
        """Charge the time since the last switch to the current stage and make `stage` current; the one before."""
        cpu, wall = time.process_time(), time.perf_counter()
        spent = self.times.setdefault(self.current, [0.0, 0.0])
        spent[0] += cpu - self._cpu
        spent[1] += wall - self._wall
        self._cpu, self._wall = cpu, wall
        before, self.current = self.current, stage
        return before

    def totals(self) -> Times:
        self.switch(self.current)
        return {stage: [round(cpu, 6), round(wall, 6)] for stage, (cpu, wall) in self.times.items()}


_clock: StageClock | None = None  # a decoder process's clock for the call it is serving


def start_call() -> None:
    """A sandboxed call begins: its time is counted from here (see `sandbox._serve`)."""
    global _clock
    _clock = StageClock()


def call_totals() -> Times:
    return _clock.totals() if _clock is not None else {}


@contextmanager
def stage(name: str) -> Iterator[None]:
    """Charge what runs inside to `name`; a no-op outside a sandboxed call (a test calling a stage directly)."""
    if _clock is None:
        yield
        return
    before = _clock.switch(name)
    try:
        yield
    finally:
        _clock.switch(before)


def charge(name: str) -> str:
    """Make `name` the current stage without a block (for a loop that switches often); returns the one before."""
    return _clock.switch(name) if _clock is not None else name


def add(into: Times, more: Times) -> Times:
    for name, (cpu, wall) in more.items():
        spent = into.setdefault(name, [0.0, 0.0])
        spent[0] += cpu
        spent[1] += wall
    return into


def count_times(namespace: str, times: Times) -> None:
    """Stage seconds as Beam counters (microseconds: counters are integers, and a per-clip stage takes less
    than a millisecond), so every runner sums them."""
    from apache_beam.metrics import Metrics  # here: decoder processes import this module, never Beam

    for name, (cpu, wall) in times.items():
        Metrics.counter(namespace, _CPU + name).inc(round(cpu * 1e6))
        Metrics.counter(namespace, _WALL + name).inc(round(wall * 1e6))


@contextmanager
def timed(namespace: str, name: str) -> Iterator[None]:
    """A stage run in a Beam worker's own process, counted when it ends."""
    cpu, wall = time.process_time(), time.perf_counter()
    try:
        yield
    finally:
        count_times(namespace, {name: [time.process_time() - cpu, time.perf_counter() - wall]})


def timed_iter(namespace: str, name: str, items: Iterable[T]) -> Iterator[T]:
    """`items`, with the time spent producing them (not consuming them) counted as stage `name`."""
    cpu = wall = 0.0
    iterator = iter(items)
    try:
        while True:
            cpu0, wall0 = time.process_time(), time.perf_counter()
            try:
                item = next(iterator)
            except StopIteration:
                return
            finally:
                cpu, wall = cpu + time.process_time() - cpu0, wall + time.perf_counter() - wall0
            yield item
    finally:
        count_times(namespace, {name: [cpu, wall]})


def stages_from_counters(counters: dict[str, int]) -> list[dict[str, float | str]]:
    """The run's stages in flow order, from its counters: [{"stage", "cpu_s", "wall_s"}]."""
    names = {key[len(_CPU) :] for key in counters if key.startswith(_CPU)}
    names |= {key[len(_WALL) :] for key in counters if key.startswith(_WALL)}
    return [
        {"stage": name, "cpu_s": counters.get(_CPU + name, 0) / 1e6, "wall_s": counters.get(_WALL + name, 0) / 1e6}
        for name in sorted(names, key=_flow_rank)
    ]


def _flow_rank(name: str) -> tuple[int, str]:
    prefix = name.split(":", 1)[0]
    return (ORDER.index(prefix) if prefix in ORDER else len(ORDER), name)


def is_time_counter(name: str) -> bool:
    return name.startswith((_CPU, _WALL))
