#!/usr/bin/env python3
"""End-to-end benchmark of `avcurate run` against a plain ffmpeg transcode, on inputs it generates itself.

    .venv/bin/python benchmarks/bench_pipeline.py [--quick] [--json results.json]

Sections (all measured in the same run, so ratios are comparable even on a busy machine):

  baseline  one `ffmpeg` per input doing the same transcode as the pipeline (decode, 25 fps, short side 256,
            16 kHz mono, libx264 veryfast crf 23 + AAC, one thread for decoder, filters and encoder)
  pipeline  `avcurate run` on the same inputs; CPU time of the whole process tree (CLI, Beam workers,
            sandboxed decoders), with the fixed start-up cost measured on a 2-second input and subtracted
  scaling   wall clock of `--workers 1` vs `--workers 2` (decode.threads: 1) on equal-length inputs
  memory    peak RSS of the sandboxed decoder (and of the whole tree) for a short and a long input

CPU accounting: the benchmark makes itself a child subreaper (prctl PR_SET_CHILD_SUBREAPER), so every
descendant that its parent does not wait for is re-parented to it and reaped here; RUSAGE_CHILDREN then
covers the whole tree exactly. Independently, a thread polls /proc/<pid>/stat and /status of every
descendant every `--poll-interval` seconds and keeps the last utime+stime and the peak RSS seen per process;
the two CPU figures are reported side by side (polling misses at most one interval per process).
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import platform
import random
import resource
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024
PR_SET_CHILD_SUBREAPER = 36

TARGET_CPU_RATIO = 1.3
TARGET_SPEEDUP = 1.7
TARGET_MEMORY_RATIO = 1.25  # "about 1": long-input peak within 25 % of the short one

# --------------------------------------------------------------------------------------------- helpers


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def system_cpu_ticks() -> tuple[int, int]:
    """(busy, steal) clock ticks of the whole machine since boot, from /proc/stat."""
    with open("/proc/stat", encoding="ascii") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    user, nice, system, idle, iowait, irq, softirq, steal = (values + [0] * 8)[:8]
    return user + nice + system + irq + softirq, steal


def busy_cores(window_s: float = 1.0) -> float:
    """Cores busy (with anything) on average over the next `window_s` seconds."""
    busy0, _ = system_cpu_ticks()
    time.sleep(window_s)
    busy1, _ = system_cpu_ticks()
    return (busy1 - busy0) / CLK_TCK / window_s


def wait_quiet(max_wait_s: float, threshold: float, window_s: float = 2.0) -> tuple[float, float]:
    """Wait (at most `max_wait_s`) until the machine's busy cores fall below `threshold`: (waited s, busy cores)."""
    started = time.monotonic()
    while True:
        busy = busy_cores(window_s)
        waited = time.monotonic() - started
        if busy < threshold or waited >= max_wait_s:
            return round(waited, 1), round(busy, 2)


def ffmpeg_version(tool: str = "ffmpeg") -> str:
    try:
        out = subprocess.run([tool, "-hide_banner", "-version"], capture_output=True, text=True, check=True).stdout
        return out.splitlines()[0]
    except (OSError, subprocess.CalledProcessError):
        return "unavailable"


def media_duration(path: Path) -> float:
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0", str(path)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return float(out.strip())


def avcurate_command() -> list[str]:
    script = Path(sys.executable).with_name("avcurate")
    return [str(script)] if script.exists() else [sys.executable, "-m", "avcurate.cli"]


def code_state() -> dict[str, Any]:
    """Which avcurate code was measured: commit, uncommitted files, and a digest of the package sources."""
    import hashlib

    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=True).stdout
        except (OSError, subprocess.CalledProcessError):
            return ""

    digest = hashlib.sha256()
    for path in sorted((REPO / "avcurate").rglob("*.py")):
        digest.update(str(path.relative_to(REPO)).encode() + b"\0" + path.read_bytes())
    dirty = [line[3:] for line in git("status", "--porcelain", "--", "avcurate").splitlines()]
    return {"commit": git("rev-parse", "--short", "HEAD").strip(), "uncommitted": dirty, "avcurate_sha256": digest.hexdigest()[:16]}


def become_subreaper() -> bool:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


# --------------------------------------------------------------------------------------------- process tree


@dataclass
class ProcStats:
    pid: int
    ppid: int
    role: str
    cmd: str
    cpu_ticks: int = 0  # last utime + stime seen
    rss_max_kb: int = 0  # max VmRSS over polls
    hwm_kb: int = 0  # last VmHWM seen (the kernel's own peak, exact up to the last poll)
    anon_max_kb: int = 0  # max RssAnon over polls
    file_max_kb: int = 0  # max RssFile over polls
    vm_peak_kb: int = 0  # last VmPeak seen: peak address space, what the sandbox's RLIMIT_AS caps
    polls: int = 0
    first_seen_s: float = 0.0  # seconds since the measurement started
    last_seen_s: float = 0.0
    first_active_s: float | None = None  # first and last poll at which its CPU time had grown
    last_active_s: float | None = None
    series: list[tuple[float, int, int]] = field(default_factory=list)  # (s, RSS kB, RssAnon kB), about 1 per s

    @property
    def cpu_s(self) -> float:
        return self.cpu_ticks / CLK_TCK


def _role(cmd: str, is_root: bool) -> str:
    if "avcurate.sandbox" in cmd:
        return "sandbox"
    if "avcurate.beam.worker" in cmd or "sdk_worker_main" in cmd:
        return "beam_worker"
    if is_root:
        return "root"
    return "other"


def _read_stat(pid: int) -> tuple[int, int, int, int] | None:
    """(ppid, starttime, cpu ticks, rss pages) of `pid`, or None once it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    rest = data[data.rfind(b")") + 2 :].split()
    if rest[0] == b"Z":  # a zombie has released its memory; its CPU shows in the reaper's rusage
        return None
    return int(rest[1]), int(rest[19]), int(rest[11]) + int(rest[12]), int(rest[21])


def _read_status(pid: int) -> dict[str, int]:
    out: dict[str, int] = {}
    try:
        with open(f"/proc/{pid}/status", "rb") as f:
            for line in f:
                key, _, value = line.partition(b":")
                if key in (b"VmHWM", b"VmRSS", b"RssAnon", b"RssFile", b"VmPeak"):
                    out[key.decode()] = int(value.split()[0])
    except (OSError, ValueError, IndexError):
        pass
    return out


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode("utf-8", "replace").strip()
    except OSError:
        return ""


class TreeMonitor(threading.Thread):
    """Polls every descendant of `root` (including ones re-parented away from it) until stopped."""

    def __init__(self, root: int, interval: float) -> None:
        super().__init__(daemon=True)
        self.root, self.interval = root, interval
        self.procs: dict[tuple[int, int], ProcStats] = {}  # (pid, starttime) -> stats
        self._alive: dict[int, int] = {}  # pid -> starttime of tracked, live processes
        self._ignored: dict[int, int] = {}  # pid -> starttime of processes known not to be ours
        self.peak_total_rss_kb = 0
        self.peak_total_at_s = 0.0
        self.started = time.monotonic()
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            self.poll()
            self._halt.wait(self.interval)

    def stop(self) -> None:
        self._halt.set()
        self.join()

    def alive_pids(self) -> list[int]:
        return list(self._alive)

    def poll(self) -> None:
        listed = {int(name) for name in os.listdir("/proc") if name.isdigit()}
        for pid in list(self._ignored):
            if pid not in listed:
                del self._ignored[pid]
        new = [pid for pid in listed if pid not in self._alive and pid not in self._ignored]
        stats: dict[int, tuple[int, int, int, int]] = {}
        for pid in new:
            st = _read_stat(pid)
            if st is not None:
                stats[pid] = st
        # Adopt new processes whose parent is ours, until nothing changes (a child and a grandchild can both
        # appear between two polls).
        ours = set(self._alive) | {self.root}
        pending = dict(stats)
        changed = True
        while changed:
            changed = False
            for pid, st in list(pending.items()):
                if pid == self.root or st[0] in ours:
                    ours.add(pid)
                    self._alive[pid] = st[1]
                    cmd = _cmdline(pid)
                    now = time.monotonic() - self.started
                    self.procs[(pid, st[1])] = ProcStats(
                        pid, st[0], _role(cmd, pid == self.root), cmd, first_seen_s=now, last_seen_s=now
                    )
                    del pending[pid]
                    changed = True
        for pid, st in pending.items():
            self._ignored[pid] = st[1]
        total = 0
        for pid, start in list(self._alive.items()):
            st = stats.get(pid) or _read_stat(pid)
            if st is None or st[1] != start:
                del self._alive[pid]
                continue
            rec = self.procs[(pid, start)]
            if rec.polls < 40 or rec.role in ("other", "root"):  # exec() after fork changes the command line
                rec.cmd = _cmdline(pid) or rec.cmd
                rec.role = _role(rec.cmd, pid == self.root)
            now = time.monotonic() - self.started
            rec.last_seen_s = now
            if st[2] > rec.cpu_ticks:
                if rec.first_active_s is None:
                    rec.first_active_s = now
                rec.last_active_s = now
            rec.cpu_ticks = max(rec.cpu_ticks, st[2])
            status = _read_status(pid)
            rss = status.get("VmRSS", st[3] * PAGE_KB)
            rec.rss_max_kb = max(rec.rss_max_kb, rss)
            rec.hwm_kb = max(rec.hwm_kb, status.get("VmHWM", 0))
            rec.anon_max_kb = max(rec.anon_max_kb, status.get("RssAnon", 0))
            rec.file_max_kb = max(rec.file_max_kb, status.get("RssFile", 0))
            rec.vm_peak_kb = max(rec.vm_peak_kb, status.get("VmPeak", 0))
            if not rec.series or now - rec.series[-1][0] >= 1.0:
                rec.series.append((round(now, 2), rss, status.get("RssAnon", 0)))
            rec.polls += 1
            total += rss
        if total > self.peak_total_rss_kb:
            self.peak_total_rss_kb = total
            self.peak_total_at_s = time.monotonic() - self.started


@dataclass
class Measurement:
    label: str
    command: list[str]
    rc: int
    wall_s: float
    cpu_user_s: float  # RUSAGE_CHILDREN delta (whole tree, thanks to the subreaper)
    cpu_sys_s: float
    cpu_polled_s: float  # sum over processes of the last utime+stime polled
    maxrss_rusage_kb: int  # ru_maxrss of RUSAGE_CHILDREN: the largest single process (ever, not per run)
    peak_tree_rss_kb: int  # max over polls of the summed RSS of the tree
    load_before: list[float]
    load_after: list[float]
    foreign_cpu_cores: float  # average cores busy with processes outside this tree during the run
    steal_cores: float
    processes: list[dict[str, Any]] = field(default_factory=list)
    stdout_tail: str = ""
    stderr_tail: str = ""
    quiet_wait_s: float = 0.0  # how long --wait-quiet waited before the run
    busy_cores_before: float | None = None  # machine-wide busy cores measured just before the run

    @property
    def cpu_s(self) -> float:
        return self.cpu_user_s + self.cpu_sys_s

    @property
    def cpu_best_s(self) -> float:
        """Both figures are lower bounds of the truth (polling misses each process's last interval)."""
        return max(self.cpu_s, self.cpu_polled_s)

    def by_role(self) -> dict[str, dict[str, float]]:
        roles: dict[str, dict[str, float]] = {}
        for p in self.processes:
            r = roles.setdefault(p["role"], {"count": 0, "cpu_s": 0.0, "max_rss_mb": 0.0, "max_hwm_mb": 0.0})
            r["count"] += 1
            r["cpu_s"] = round(r["cpu_s"] + p["cpu_s"], 2)
            r["max_rss_mb"] = max(r["max_rss_mb"], p["rss_max_mb"])
            r["max_hwm_mb"] = max(r["max_hwm_mb"], p["hwm_mb"])
        return roles

    def summary(self) -> dict[str, Any]:
        d = asdict(self)
        d["cpu_s"] = round(self.cpu_s, 3)
        d["cpu_best_s"] = round(self.cpu_best_s, 3)
        d["by_role"] = self.by_role()
        return d


_RUSAGE_LOCK = threading.Lock()


def measure(label: str, command: list[str], *, cwd: Path, interval: float, log_dir: Path, linger_s: float = 60.0) -> Measurement:
    """Run `command` to completion; CPU and memory of it and every descendant."""
    with _RUSAGE_LOCK:
        stdout_path, stderr_path = log_dir / f"{label}.stdout", log_dir / f"{label}.stderr"
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        busy0, steal0 = system_cpu_ticks()
        load_before = loadavg()
        started = time.monotonic()
        with open(stdout_path, "wb") as out, open(stderr_path, "wb") as err:
            process = subprocess.Popen(command, cwd=cwd, stdout=out, stderr=err, stdin=subprocess.DEVNULL)
        monitor = TreeMonitor(process.pid, interval)
        monitor.start()
        rc: int | None = None
        wall = 0.0
        while rc is None:  # reap the root, and any orphan re-parented to us meanwhile
            pid, status, _ = os.wait4(-1, 0)
            if pid == process.pid:
                wall = time.monotonic() - started
                rc = os.waitstatus_to_exitcode(status)
                process.returncode = rc  # reaped here: keep Popen from waiting for it again
        busy1, steal1 = system_cpu_ticks()
        deadline = time.monotonic() + linger_s
        while True:  # descendants still running (detached workers): wait for them, then stop them
            try:
                pid, _, _ = os.wait4(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid:
                continue
            if time.monotonic() > deadline:
                for leftover in monitor.alive_pids():
                    try:
                        os.kill(leftover, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                deadline = float("inf")
            time.sleep(0.02)
        monitor.stop()
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
    processes = [
        {
            "pid": p.pid,
            "role": p.role,
            "cmd": p.cmd[:160],
            "cpu_s": round(p.cpu_s, 2),
            "rss_max_mb": round(p.rss_max_kb / 1024, 1),
            "hwm_mb": round(p.hwm_kb / 1024, 1),
            "anon_max_mb": round(p.anon_max_kb / 1024, 1),
            "file_max_mb": round(p.file_max_kb / 1024, 1),
            "vm_peak_mb": round(p.vm_peak_kb / 1024, 1),
            "series": p.series if p.role == "sandbox" else [],
            "polls": p.polls,
            "seen_s": [round(p.first_seen_s, 2), round(p.last_seen_s, 2)],
            "active_s": [round(p.first_active_s or 0.0, 2), round(p.last_active_s or 0.0, 2)],
        }
        for p in monitor.procs.values()
    ]
    polled = sum(p.cpu_ticks for p in monitor.procs.values()) / CLK_TCK
    user = after.ru_utime - before.ru_utime
    system = after.ru_stime - before.ru_stime
    own_ticks = (user + system) * CLK_TCK
    foreign = max(0.0, (busy1 - busy0) - min(own_ticks, busy1 - busy0)) / CLK_TCK / max(wall, 1e-6)
    return Measurement(
        label=label,
        command=command,
        rc=rc,
        wall_s=round(wall, 3),
        cpu_user_s=round(user, 3),
        cpu_sys_s=round(system, 3),
        cpu_polled_s=round(polled, 3),
        maxrss_rusage_kb=after.ru_maxrss,
        peak_tree_rss_kb=monitor.peak_total_rss_kb,
        load_before=load_before,
        load_after=loadavg(),
        foreign_cpu_cores=round(foreign, 2),
        steal_cores=round((steal1 - steal0) / CLK_TCK / max(wall, 1e-6), 2),
        processes=processes,
        stdout_tail=stdout_path.read_text(errors="replace")[-4000:],
        stderr_tail=stderr_path.read_text(errors="replace")[-2000:],
    )


# --------------------------------------------------------------------------------------------- inputs

_SCENES = [
    "testsrc2=s={S}:r=30:d={d}",
    "mandelbrot=s={S}:r=30:start_scale={z},trim=duration={d},setpts=PTS-STARTPTS",
    "testsrc=s={S}:r=30:d={d},hue=h={h}",
    "life=s={S}:r=30:mold=10:ratio=0.1:seed={seed}:death_color=#202020:life_color=#00ff80,"
    "trim=duration={d},setpts=PTS-STARTPTS",
    "testsrc2=s={S}:r=30:d={d},hue=H=2*t:s=1.5",
]


def make_source(path: Path, seconds: float, size: str, seed: int) -> None:
    """A synthetic source: scenes of 3-14 s from different lavfi generators (hard cuts between them), 30 fps
    H.264, and 44.1 kHz stereo AAC (a tone that changes pitch every 5 s over pink noise)."""
    rng = random.Random(seed)
    durations: list[float] = []
    left = seconds
    while left > 1e-6:
        d = min(left, round(rng.uniform(3.0, 14.0), 2))
        if 0 < left - d < 2.0:  # no sub-2 s tail scene
            d = left
        durations.append(round(d, 3))
        left -= d
    args = ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-y"]
    order = list(range(len(_SCENES)))
    rng.shuffle(order)
    for i, d in enumerate(durations):
        template = _SCENES[order[i % len(order)]]
        spec = template.format(S=size, d=d, z=rng.choice([3, 2, 1.5]), h=rng.randint(0, 359), seed=rng.randint(1, 10**6))
        args += ["-f", "lavfi", "-i", spec]
    base = 300 + 50 * (seed % 5)
    tone = (
        f"aevalsrc=0.3*sin(2*PI*({base}+90*mod(floor(t/5)\\,7))*t)|0.3*sin(2*PI*({base + 7}+90*mod(floor(t/5)\\,7))*t)"
        f":s=44100:d={seconds}"
    )
    args += ["-f", "lavfi", "-i", tone, "-f", "lavfi", "-i", f"anoisesrc=c=pink:r=44100:a=0.05:d={seconds}:seed={seed}"]
    n = len(durations)
    video_in = "".join(f"[{i}:v]" for i in range(n))
    graph = (
        f"{video_in}concat=n={n}:v=1:a=0,format=yuv420p[v];"
        f"[{n}:a][{n + 1}:a]amix=inputs=2:normalize=0,aformat=channel_layouts=stereo[a]"
    )
    args += ["-filter_complex", graph, "-map", "[v]", "-map", "[a]"]
    args += ["-c:v", "libx264", "-preset", "veryfast", "-crf", "20", "-g", "60", "-c:a", "aac", "-b:a", "128k"]
    args += ["-ar", "44100", "-movflags", "+faststart", str(path)]
    subprocess.run(args, check=True)


def make_long(path: Path, source: Path, copies: int) -> None:
    """`copies` x `source`, joined without re-encoding (concat demuxer, stream copy): seconds to make."""
    listing = path.with_suffix(".txt")
    listing.write_text("".join(f"file '{source}'\n" for _ in range(copies)))
    subprocess.run(
        ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-y", "-f", "concat", "-safe", "0",
         "-i", str(listing), "-c", "copy", str(path)],
        check=True,
    )


# --------------------------------------------------------------------------------------------- runs


def baseline_command(src: Path, dst: Path, size: str) -> list[str]:
    width, height = (int(v) for v in size.split("x"))
    scale = "-2:256" if width >= height else "256:-2"
    return [
        "ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-y",
        "-threads", "1", "-i", str(src),
        "-filter_threads", "1", "-filter_complex_threads", "1",
        "-vf", f"fps=25,scale={scale}:flags=bilinear,setsar=1,format=yuv420p",
        "-af", "aresample=16000", "-ac", "1", "-ar", "16000",
        "-c:v", "libx264", "-preset", "veryfast", "-crf", "23", "-threads", "1",
        "-c:a", "aac", "-b:a", "64k",
        str(dst),
    ]  # fmt: skip


def pipeline_command(input_dir: Path, output_dir: Path, config: Path, workers: int) -> list[str]:
    return [*avcurate_command(), "run", "--input", str(input_dir), "--output", str(output_dir),
            "--config", str(config), "--workers", str(workers), "--overwrite", "--json"]  # fmt: skip


def run_summary(m: Measurement) -> dict[str, Any]:
    """The CLI's own JSON summary (printed on stdout with --json), if it printed one."""
    text = m.stdout_tail
    start = text.find("{")
    if start < 0:
        return {}
    try:
        data = json.loads(text[start:])
    except json.JSONDecodeError:
        return {}
    keep = ("wall_s", "counters")
    out = {k: data[k] for k in keep if k in data}
    for k in ("inputs", "clips", "shards"):
        if k in data:
            out[k] = data[k]
    return out


def _deciles(series: list[tuple[float, int, int]]) -> list[float]:
    """Max RssAnon (MiB) of the sandbox in each tenth of its life: flat if memory does not grow with length."""
    if len(series) < 10:
        return [round(max(a for _, _, a in series) / 1024, 1)] if series else []
    out = []
    for k in range(10):
        chunk = series[k * len(series) // 10 : (k + 1) * len(series) // 10]
        out.append(round(max(a for _, _, a in chunk) / 1024, 1))
    return out


def timeline(m: Measurement) -> dict[str, Any]:
    """When the decoders worked within a run: start-up before the first, tail after the last, overlap."""
    boxes = [p for p in m.processes if p["role"] == "sandbox" and p["cpu_s"] > 0.5]
    if not boxes:
        return {}
    starts = sorted(p["active_s"][0] for p in boxes)
    ends = sorted(p["active_s"][1] for p in boxes)
    out: dict[str, Any] = {
        "sandboxes_active_s": [p["active_s"] for p in boxes],
        "before_first_decoder_s": round(starts[0], 2),
        "after_last_decoder_s": round(m.wall_s - ends[-1], 2),
    }
    if len(boxes) >= 2:
        out["decoders_overlap_s"] = round(max(0.0, ends[0] - starts[-1]), 2)
    return out


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.work = Path(args.workdir or tempfile.mkdtemp(prefix="avcurate-bench-"))
        self.work.mkdir(parents=True, exist_ok=True)
        self.logs = self.work / "logs"
        self.logs.mkdir(exist_ok=True)
        self.results: dict[str, Any] = {}
        self.config = self.work / "threads1.yaml"
        self.config.write_text("decode:\n  threads: 1\n")
        self.warnings: list[str] = []
        self.failed_runs: list[str] = []

    def m(self, label: str, command: list[str]) -> Measurement:
        waited, busy = 0.0, None
        if self.args.wait_quiet > 0:
            waited, busy = wait_quiet(self.args.wait_quiet, self.args.quiet_threshold)
        if self.args.nice:
            command = ["nice", "-n", str(self.args.nice), *command]
        log(f"{label}: {shlex.join(command)[:100]} ... (load {loadavg()}, busy cores {busy}, waited {waited} s)")
        result = measure(label, command, cwd=REPO, interval=self.args.poll_interval, log_dir=self.logs)
        result.quiet_wait_s, result.busy_cores_before = waited, busy
        note = "" if result.rc == 0 else f"  rc={result.rc}"
        log(f"{label}: wall {result.wall_s:.1f} s, cpu {result.cpu_s:.1f} s (polled {result.cpu_polled_s:.1f} s){note}")
        if result.rc != 0:
            self.failed_runs.append(label)
            self.warnings.append(f"{label}: exit code {result.rc}; stderr tail: {result.stderr_tail[-300:]!r}")
        return result

    # ---- inputs
    def make_inputs(self) -> None:
        a = self.args
        inputs = self.work / "inputs"
        self.multi = inputs / "multi"
        self.tiny = inputs / "tiny"
        self.short = inputs / "mem_short"
        self.long = inputs / "mem_long"
        for d in (self.multi, self.tiny, self.short, self.long):
            d.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        self.sources = [self.multi / f"src{i:02d}.mp4" for i in range(a.sources)]
        self.tiny_source = self.tiny / "tiny.mp4"
        self.short_source = self.short / "short.mp4"
        self.long_source = self.long / "long.mp4"
        # A kept --workdir keeps its inputs: they are made again only if the parameters changed.
        stamp = inputs / "params.json"
        params = json.dumps([a.sources, a.seconds, a.size, a.tiny_seconds, a.long_copies, _SCENES])
        if stamp.exists() and stamp.read_text() == params:
            log(f"reusing the inputs in {inputs}")
        else:
            stamp.unlink(missing_ok=True)
            log(f"generating {a.sources} x {a.seconds:g} s at {a.size} (+ a {a.tiny_seconds:g} s input and the memory inputs)")
            for i, path in enumerate(self.sources):
                make_source(path, a.seconds, a.size, seed=i)
            make_source(self.tiny_source, a.tiny_seconds, a.size, seed=99)
            shutil.copy(self.sources[0], self.short_source)
            make_long(self.long_source, self.sources[0], a.long_copies)
            stamp.write_text(params)
        durations = {str(p.relative_to(inputs)): round(media_duration(p), 3) for p in [*self.sources, self.tiny_source, self.short_source, self.long_source]}
        self.multi_minutes = sum(media_duration(p) for p in self.sources) / 60.0
        self.tiny_minutes = media_duration(self.tiny_source) / 60.0
        self.short_minutes = media_duration(self.short_source) / 60.0
        self.long_minutes = media_duration(self.long_source) / 60.0
        self.results["inputs"] = {
            "size": a.size,
            "fps": 30,
            "video": "H.264 (libx264 veryfast crf 20, GOP 60)",
            "audio": "AAC 44.1 kHz stereo",
            "durations_s": durations,
            "multi_minutes": round(self.multi_minutes, 3),
            "generation_wall_s": round(time.monotonic() - started, 1),
        }

    # ---- sections
    def cpu_and_scaling(self, with_pipeline: bool) -> None:
        """Baseline and pipeline runs interleaved in rounds (baseline, then --workers 1 and 2 in alternating
        order), so that a change in machine load during the benchmark hits both sides of every ratio alike.
        The CPU figures and the scaling figures come from the same runs."""
        a, out, media_min = self.args, self.work / "baseline", self.multi_minutes
        out.mkdir(exist_ok=True)
        base_tiny = self.m("baseline_tiny", baseline_command(self.tiny_source, out / "tiny.mp4", a.size))
        tiny: dict[int, Measurement] = {}
        # Every run ends with its report (avcurate/report/), a fixed cost per run once its examples are chosen:
        # rebuilt on its own after each run (`avcurate report`) so the ratio can be given with and without it.
        reports: dict[Any, Measurement] = {}
        if with_pipeline:
            for w in (1, 2):
                tiny[w] = self.m(f"pipeline_tiny_w{w}", pipeline_command(self.tiny, self.work / f"out_tiny_w{w}", self.config, w))
            reports["tiny"] = self.m("report_tiny", [*avcurate_command(), "report", str(self.work / "out_tiny_w1")])
        rounds: list[dict[Any, Any]] = []
        for k in range(a.repeats):
            rnd: dict[Any, Any] = {
                "baseline": [self.m(f"baseline_{p.stem}_r{k}", baseline_command(p, out / p.name, a.size)) for p in self.sources]
            }
            if with_pipeline:
                for w in [1, 2] if k % 2 == 0 else [2, 1]:
                    rnd[w] = self.m(f"pipeline_w{w}_r{k}", pipeline_command(self.multi, self.work / f"out_w{w}", self.config, w))
                if k == 0:
                    reports["multi"] = self.m("report_multi", [*avcurate_command(), "report", str(self.work / "out_w1")])
            rounds.append(rnd)
        # The machine's own ceiling for 2-way parallelism: the same ffmpeg commands, two at a time.
        lanes = [" ; ".join(shlex.join(baseline_command(p, out / f"par-{p.name}", a.size)) for p in self.sources[k::2])
                 for k in range(2)]
        parallel = self.m("baseline_parallel2", ["sh", "-c", " & ".join(f"( {lane} )" for lane in lanes if lane) + " & wait"])

        n = len(self.sources)
        base_cpu = [sum(r.cpu_best_s for r in rnd["baseline"]) for rnd in rounds]
        base_wall = [sum(r.wall_s for r in rnd["baseline"]) for rnd in rounds]
        base_net = [(c - n * base_tiny.cpu_best_s) / (media_min - n * self.tiny_minutes) for c in base_cpu]
        med = statistics.median
        self.results["baseline"] = {
            "command": " ".join(baseline_command(Path("IN.mp4"), Path("OUT.mp4"), a.size)),
            "ffmpeg": ffmpeg_version(),
            "cpu_s": round(med(base_cpu), 2),
            "cpu_s_rounds": [round(c, 2) for c in base_cpu],
            "wall_s": round(med(base_wall), 2),
            "cpu_s_per_media_min": round(med(base_cpu) / media_min, 3),
            "tiny_cpu_s": round(base_tiny.cpu_best_s, 3),
            "cpu_s_per_media_min_net": round(med(base_net), 3),
            "cpu_s_per_media_min_net_rounds": [round(x, 3) for x in base_net],
            "max_rss_mb": max(max(p["hwm_mb"], p["rss_max_mb"]) for rnd in rounds for r in rnd["baseline"] for p in r.processes),
            "parallel2": {
                "wall_s": parallel.wall_s,
                "cpu_s": round(parallel.cpu_best_s, 2),
                "sequential_wall_s": round(base_wall[-1], 2),
                "speedup": round(base_wall[-1] / parallel.wall_s, 3),
                "cpu_inflation": round(parallel.cpu_best_s / base_cpu[-1], 3),
                "foreign_cpu_cores": parallel.foreign_cpu_cores,
            },
            "runs": [r.summary() for rnd in rounds for r in rnd["baseline"]] + [base_tiny.summary(), parallel.summary()],
        }
        if not with_pipeline:
            return
        section: dict[str, Any] = {"config": self.config.read_text(), "rounds": a.repeats}
        for w in (1, 2):
            rs: list[Measurement] = [rnd[w] for rnd in rounds]
            t = tiny[w]
            cpu = [r.cpu_best_s for r in rs]
            net = [(c - t.cpu_best_s) / (media_min - self.tiny_minutes) for c in cpu]
            ratio_net = [x / b for x, b in zip(net, base_net)]
            ratio_raw = [c / b for c, b in zip(cpu, base_cpu)]
            # The report's part of the full runs' CPU beyond the tiny run's (both rebuilt alone, so the
            # process start-up cancels out): what the report adds for this output's examples.
            report_extra = reports["multi"].cpu_best_s - reports["tiny"].cpu_best_s
            net_wo = [(c - t.cpu_best_s - report_extra) / (media_min - self.tiny_minutes) for c in cpu]
            ratio_wo = [x / b for x, b in zip(net_wo, base_net)]
            section[f"workers{w}"] = {
                "cpu_s": round(med(cpu), 2),
                "cpu_rusage_s": [round(r.cpu_s, 2) for r in rs],
                "cpu_polled_s": [round(r.cpu_polled_s, 2) for r in rs],
                "wall_s": round(med(r.wall_s for r in rs), 2),
                "walls_s": [r.wall_s for r in rs],
                "cpu_s_per_media_min": round(med(cpu) / media_min, 3),
                "startup_cpu_s": round(t.cpu_best_s, 2),
                "startup_wall_s": round(t.wall_s, 2),
                "cpu_s_per_media_min_net": round(med(net), 3),
                "cpu_s_per_media_min_net_rounds": [round(x, 3) for x in net],
                "ratio_raw": round(med(ratio_raw), 3),
                "ratio_net": round(med(ratio_net), 3),
                "ratio_net_rounds": [round(x, 3) for x in ratio_net],
                "report_cpu_s": {"tiny": round(reports["tiny"].cpu_best_s, 2), "multi": round(reports["multi"].cpu_best_s, 2)},
                "ratio_net_without_report": round(med(ratio_wo), 3),
                "ratio_net_without_report_rounds": [round(x, 3) for x in ratio_wo],
                "by_role": rs[0].by_role(),
                "sandbox_cpu_s": sorted((p["cpu_s"] for p in rs[0].processes if p["role"] == "sandbox"), reverse=True),
                "timeline": timeline(rs[0]),
                "foreign_cpu_cores": [r.foreign_cpu_cores for r in rs],
                "summary": run_summary(rs[0]),
                "runs": [r.summary() for r in [*rs, t]],
            }
        self.results["pipeline"] = section
        w1, w2 = section["workers1"], section["workers2"]
        speedups = [a_.wall_s / b_.wall_s for a_, b_ in zip((rnd[1] for rnd in rounds), (rnd[2] for rnd in rounds))]
        def decoding_span(m: Measurement) -> float:
            boxes = [p["active_s"] for p in m.processes if p["role"] == "sandbox" and p["cpu_s"] > 0.5]
            return max(e for _, e in boxes) - min(b for b, _ in boxes) if boxes else float("nan")

        # Start-up excluded: from the first decoder starting work to the last one finishing.
        net_speedups = [decoding_span(rnd[1]) / max(1e-6, decoding_span(rnd[2])) for rnd in rounds]
        self.results["scaling"] = {
            "sources": n,
            "wall_w1_s": w1["wall_s"],
            "wall_w2_s": w2["wall_s"],
            "speedup": round(med(speedups), 3),
            "speedup_rounds": [round(x, 3) for x in speedups],
            "speedup_decoding_phase": round(med(net_speedups), 3),
            "sandbox_cpu_s_w2": w2["sandbox_cpu_s"],
            "timeline_w1": w1["timeline"],
            "timeline_w2": w2["timeline"],
            "foreign_cpu_cores_w1": w1["foreign_cpu_cores"],
            "foreign_cpu_cores_w2": w2["foreign_cpu_cores"],
        }

    def memory(self) -> None:
        short = self.m("memory_short", pipeline_command(self.short, self.work / "out_mem_short", self.config, 1))
        long = self.m("memory_long", pipeline_command(self.long, self.work / "out_mem_long", self.config, 1))
        section: dict[str, Any] = {"short_minutes": round(self.short_minutes, 3), "long_minutes": round(self.long_minutes, 3)}
        for name, m in (("short", short), ("long", long)):
            sandboxes = [p for p in m.processes if p["role"] == "sandbox"]
            biggest = max(m.processes, key=lambda p: max(p["hwm_mb"], p["rss_max_mb"])) if m.processes else {}
            section[name] = {
                "sandbox_peak_rss_mb": max((max(p["hwm_mb"], p["rss_max_mb"]) for p in sandboxes), default=None),
                "sandbox_max_anon_mb": max((p["anon_max_mb"] for p in sandboxes), default=None),
                "sandbox_max_file_mb": max((p["file_max_mb"] for p in sandboxes), default=None),
                "sandbox_vm_peak_mb": max((p["vm_peak_mb"] for p in sandboxes), default=None),
                "sandbox_anon_by_decile_mb": _deciles(sandboxes[0]["series"]) if sandboxes else None,
                "tree_peak_rss_mb": round(m.peak_tree_rss_kb / 1024, 1),
                "max_process_rss_mb": max(biggest.get("hwm_mb", 0), biggest.get("rss_max_mb", 0)) if biggest else None,
                "max_process_role": biggest.get("role"),
                "rusage_maxrss_mb": round(m.maxrss_rusage_kb / 1024, 1),
                "cpu_s": round(m.cpu_best_s, 2),
                "wall_s": m.wall_s,
                "summary": run_summary(m),
                "run": m.summary(),
            }

        def ratio(key: str) -> float | None:
            a, b = section["short"][key], section["long"][key]
            return round(b / a, 3) if a and b else None

        section["ratio_sandbox_peak"] = ratio("sandbox_peak_rss_mb")
        section["ratio_sandbox_anon"] = ratio("sandbox_max_anon_mb")
        section["ratio_tree_peak"] = ratio("tree_peak_rss_mb")
        section["long_cpu_s_per_media_min"] = round(long.cpu_best_s / self.long_minutes, 3)
        section["short_cpu_s_per_media_min"] = round(short.cpu_best_s / self.short_minutes, 3)
        self.results["memory"] = section

    # ---- report
    def targets(self) -> dict[str, Any]:
        t: dict[str, Any] = {}
        p, s, mem = self.results.get("pipeline"), self.results.get("scaling"), self.results.get("memory")
        if p and "ratio_net" in p.get("workers1", {}):
            # Per minute of media, as the target is meant: net of the fixed costs of a run, the start-up and the
            # report's previews (bounded by its example count whatever the run's size); with the report, too.
            worst = max(p["workers1"]["ratio_net_without_report"], p["workers2"]["ratio_net_without_report"])
            spread = p["workers1"]["ratio_net_without_report_rounds"] + p["workers2"]["ratio_net_without_report_rounds"]
            with_report = max(p["workers1"]["ratio_net"], p["workers2"]["ratio_net"])
            t["cpu_ratio"] = {"target": f"< {TARGET_CPU_RATIO}", "value": worst, "met": worst < TARGET_CPU_RATIO,
                              "note": f"worse of --workers 1 and 2 (median over rounds), start-up and the report's "
                                      f"fixed cost subtracted; rounds ranged {min(spread):.2f}-{max(spread):.2f}; "
                                      f"{with_report} with the report on these {self.multi_minutes:.0f} min"}
        if s:
            t["speedup"] = {"target": f">= {TARGET_SPEEDUP}", "value": s["speedup"], "met": s["speedup"] >= TARGET_SPEEDUP,
                            "note": f"raw wall clock, start-up included, median over rounds {s['speedup_rounds']}"}
        if mem and mem.get("ratio_sandbox_peak"):
            worst = max(v for v in (mem["ratio_sandbox_peak"], mem["ratio_tree_peak"]) if v)
            t["memory_ratio"] = {"target": f"<= {TARGET_MEMORY_RATIO} (flat)", "value": worst,
                                 "met": worst <= TARGET_MEMORY_RATIO,
                                 "note": "worse of sandbox peak RSS and whole-tree peak RSS, long/short input"}
        return t

    def report(self) -> str:
        r = self.results
        lines = []
        m = r["machine"]
        lines.append(f"machine: {m['nproc']} x {m['cpu_model']}; load before {m['load_start']} after {m.get('load_end')}")
        lines.append(f"inputs: {r['inputs']['durations_s']}")

        def row(*cells: Any) -> str:
            return f"{cells[0]:<44}" + "".join(f"{c:>14}" for c in cells[1:])

        if "baseline" in r or "pipeline" in r:
            lines.append("")
            lines.append(row("CPU (s of CPU per minute of media)", "raw", "net of start", "ratio (net)", "start-up cpu"))
            if "baseline" in r:
                b = r["baseline"]
                lines.append(row("baseline ffmpeg, 1 thread", b["cpu_s_per_media_min"], b["cpu_s_per_media_min_net"], 1.0, b["tiny_cpu_s"]))
            if "pipeline" in r:
                for w in (1, 2):
                    x = r["pipeline"][f"workers{w}"]
                    lines.append(row(f"avcurate run --workers {w}", x["cpu_s_per_media_min"], x["cpu_s_per_media_min_net"],
                                     x.get("ratio_net", "-"), x["startup_cpu_s"]))
                    lines.append(row("  ratio (net) per round", "", "", str(x["ratio_net_rounds"]), ""))
                    lines.append(row("  without the report's extra cost", "", "", x["ratio_net_without_report"],
                                     f"report {x['report_cpu_s']['multi']} vs {x['report_cpu_s']['tiny']}"))
                    lines.append(row("  rusage vs polled (s)", "", "", str(x["cpu_rusage_s"]), str(x["cpu_polled_s"])))
                    lines.append(row("  by process role (s)", "", "", "", ""))
                    for role, v in x["by_role"].items():
                        lines.append(row(f"    {role} x{v['count']}", "", "", "", v["cpu_s"]))
        if "scaling" in r:
            s = r["scaling"]
            lines.append("")
            lines.append(row("SCALING (wall s)", "workers 1", "workers 2", "speed-up", "decode phase"))
            lines.append(row(f"{s['sources']} equal sources", s["wall_w1_s"], s["wall_w2_s"], s["speedup"], s["speedup_decoding_phase"]))
            par = r.get("baseline", {}).get("parallel2")
            if par:
                lines.append(row("ceiling: ffmpeg baseline 1 vs 2 at a time", par["sequential_wall_s"], par["wall_s"], par["speedup"],
                                 f"cpu x{par['cpu_inflation']}"))
            lines.append(f"  sandbox CPU per worker (w2): {s['sandbox_cpu_s_w2']}; foreign load (cores) w1 {s['foreign_cpu_cores_w1']} w2 {s['foreign_cpu_cores_w2']}")
            for w in (1, 2):
                tl = s[f"timeline_w{w}"]
                if tl:
                    lines.append(f"  workers {w}: decoders active {tl['sandboxes_active_s']} s; start-up before the first "
                                 f"{tl['before_first_decoder_s']} s, tail after the last {tl['after_last_decoder_s']} s"
                                 + (f", overlap {tl['decoders_overlap_s']} s" if "decoders_overlap_s" in tl else ""))
        if "memory" in r:
            mm = r["memory"]
            lines.append("")
            lines.append(row("MEMORY (MiB)", f"{mm['short_minutes']:.1f} min", f"{mm['long_minutes']:.1f} min", "ratio", ""))
            for key, label in (("sandbox_peak_rss_mb", "sandbox peak RSS (VmHWM)"), ("sandbox_max_anon_mb", "sandbox max RssAnon"),
                               ("sandbox_max_file_mb", "sandbox max RssFile"),
                               ("sandbox_vm_peak_mb", "sandbox VmPeak (address space)"), ("tree_peak_rss_mb", "whole tree peak (sum of RSS)"),
                               ("max_process_rss_mb", "largest single process")):
                a, b = mm["short"][key], mm["long"][key]
                lines.append(row(label, a, b, round(b / a, 3) if a and b else "-", ""))
            lines.append(f"  largest process role: short {mm['short']['max_process_role']}, long {mm['long']['max_process_role']}")
            lines.append(f"  sandbox RssAnon by tenth of the long run (MiB): {mm['long'].get('sandbox_anon_by_decile_mb')}")
            lines.append(f"  CPU s per media minute: short {mm['short_cpu_s_per_media_min']}, long {mm['long_cpu_s_per_media_min']}")
        lines.append("")
        lines.append("TARGETS" + (" (--quick: inputs too short for these to mean anything; a smoke test only)"
                                   if self.args.quick else ""))
        for name, t in r.get("targets", {}).items():
            lines.append(f"  {name:<14} {t['target']:<18} measured {t['value']:<8} {'MET' if t['met'] else 'MISSED'}  ({t['note']})")
        for w in self.warnings:
            lines.append(f"WARNING {w}")
        return "\n".join(lines)

    def run(self) -> dict[str, Any]:
        a = self.args
        self.results["machine"] = {
            "nproc": os.cpu_count(),
            "affinity": len(os.sched_getaffinity(0)),
            "cpu_model": cpu_model(),
            "kernel": platform.release(),
            "python": sys.version.split()[0],
            "ffmpeg_cli": ffmpeg_version(),
            "load_start": loadavg(),
            "subreaper": become_subreaper(),
        }
        self.results["code"] = code_state()
        try:
            import av

            self.results["machine"]["pyav"] = f"{av.__version__} (libavcodec {'.'.join(map(str, av.library_versions['libavcodec']))})"
        except Exception as e:  # noqa: BLE001 - informational only
            self.results["machine"]["pyav"] = f"unavailable: {e}"
        self.results["params"] = {k: v for k, v in vars(a).items() if k != "json"}
        started = time.monotonic()
        self.make_inputs()
        sections = set(a.sections.split(","))
        if sections & {"baseline", "pipeline", "scaling"}:
            self.cpu_and_scaling(with_pipeline=bool(sections & {"pipeline", "scaling"}))
        if "memory" in sections:
            self.memory()
        self.results["machine"]["load_end"] = loadavg()
        end_code = code_state()
        if {k: v for k, v in end_code.items() if k != "commit"} != {k: v for k, v in self.results["code"].items() if k != "commit"}:
            self.results["code_at_end"] = end_code
            self.warnings.append(f"avcurate's code changed during the run: {self.results['code']} -> {end_code}")
        self.results["total_wall_s"] = round(time.monotonic() - started, 1)
        self.results["targets"] = self.targets()
        self.results["warnings"] = self.warnings
        return self.results


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="short inputs: a smoke test of every section (~1-2 min)")
    parser.add_argument("--json", help="write the results as JSON to this path")
    parser.add_argument("--sources", type=int, help="equal-length sources for the CPU and scaling runs (default 4)")
    parser.add_argument("--seconds", type=float, help="length of each source (default 60)")
    parser.add_argument("--size", default="640x360", help="source size WxH (default 640x360)")
    parser.add_argument("--tiny-seconds", type=float, default=2.0, help="start-up probe input length (default 2)")
    parser.add_argument("--long-copies", type=int, help="memory test: the long input is this many x one source (default 20)")
    parser.add_argument("--repeats", type=int,
                        help="rounds of baseline + --workers 1 + --workers 2 runs (alternating order; medians reported; "
                        "default 2, --quick 1)")
    parser.add_argument("--sections", default="baseline,pipeline,scaling,memory", help="comma-separated subset")
    parser.add_argument("--poll-interval", type=float, default=0.05, help="seconds between /proc polls")
    parser.add_argument("--wait-quiet", type=float, default=0.0, metavar="S",
                        help="before each measured run, wait up to S seconds for the machine to be quiet")
    parser.add_argument("--quiet-threshold", type=float, default=0.4, metavar="CORES",
                        help="'quiet' means fewer busy cores than this, over 2 s (default 0.4)")
    parser.add_argument("--nice", type=int, default=0,
                        help="run the measured commands at this nice value (negative, as root: less disturbed by "
                        "other work on a shared machine)")
    parser.add_argument("--workdir", help="keep inputs and outputs here (default: a temporary folder, removed)")
    args = parser.parse_args(argv)
    defaults = (
        {"sources": 2, "seconds": 8.0, "long_copies": 4, "repeats": 1}
        if args.quick
        else {"sources": 4, "seconds": 60.0, "long_copies": 20, "repeats": 2}
    )
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.sources < 1 or args.seconds <= args.tiny_seconds:
        parser.error("need at least one source, longer than --tiny-seconds")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    bench = Bench(args)
    try:
        results = bench.run()
        print(bench.report())
        if args.json:
            Path(args.json).parent.mkdir(parents=True, exist_ok=True)
            Path(args.json).write_text(json.dumps(results, indent=2, default=str) + "\n")
            log(f"results written to {args.json}")
    finally:
        if not args.workdir:
            shutil.rmtree(bench.work, ignore_errors=True)
    # A missed target is a finding, not a failure; a command that failed is (so a smoke test can rely on it).
    return 1 if bench.failed_runs else 0


if __name__ == "__main__":
    sys.exit(main())
