"""A/B of the allocation settings around x264 (the script behind encode_fix_ab_in_process.log): the CPU of
process_source on one source, in this process, after a warm-up run.

    [GLIBC_TUNABLES=glibc.malloc.tcache_count=0] .venv/bin/python THIS {percall|none} SOURCE.mp4 REPEATS

percall: the code as it is (x264's allocations zeroed around its calls); none: that zeroing patched out (B-frames
kept, unlike the no-mallopt fallback). glibc's per-thread cache is the caller's choice, through GLIBC_TUNABLES."""
import shutil
import sys
import tempfile
import time

import avcurate.encode as enc
from avcurate.config import Config
from avcurate.model import Source
from avcurate.process import process_source

mode, src, reps = sys.argv[1], sys.argv[2], int(sys.argv[3])
if mode == "none":
    enc._ZeroedAllocations.__enter__ = lambda self: None
    enc._ZeroedAllocations.__exit__ = lambda self, *a: None
cfg = Config.from_dict({"decode": {"threads": 1}})
source = Source.from_uri(src)


def once():
    st, sc = tempfile.mkdtemp(), tempfile.mkdtemp()
    c = time.process_time(); process_source(source, cfg, st, sc); c = time.process_time() - c
    shutil.rmtree(st); shutil.rmtree(sc); return c


once()
print(mode, [round(once(), 2) for _ in range(reps)], flush=True)
