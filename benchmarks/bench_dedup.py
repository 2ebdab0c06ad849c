"""Near-duplicate search at scale on synthetic embeddings: the Beam `NearDuplicates` transform (FnApiRunner, one
worker; BENCH_DEDUP_WORKERS=2 for two worker threads) and `find_duplicates` on one machine, for each number of
probes, against the exact all-pairs answer (`exact_duplicates`) on the same set. Each method runs in a fresh
process: wall time, CPU time, peak RSS; the Beam answer is checked to equal find_duplicates's.

The set: `--n` unit embeddings of `--dim` dimensions with planted near-copies (2 % of the originals get 1-3 copies at
a cosine drawn uniformly in [threshold + 0.005, 0.999], half in the original's source, half in another), on a
background that is either "clustered" (90 % in topics of Zipf-distributed sizes inside a common cone, as CLIP
embeddings are; 10 % uniform on the sphere) or "uniform". It measures mechanics and cost, not quality on real clips.

    python benchmarks/bench_dedup.py [--n 100000] [--dim 512] [--probes 1 2] [--backgrounds clustered uniform]
                                     [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from avcurate.config import DedupConfig
from avcurate.dedup import (
    cluster_count,
    exact_duplicates,
    find_duplicates,
    nearest_centroids,
    sample_rank,
    train_centroids,
)

CLIPS_PER_SOURCE = 20
PLANTED_FRACTION = 0.02
UNIFORM_FRACTION = 0.1  # of a clustered background
METHODS = ("beam", "find_duplicates")  # each run for every number of probes, against "exact"
WORKERS = int(os.environ.get("BENCH_DEDUP_WORKERS", "1"))  # FnApiRunner workers (see docs/benchmarks.md)


def synthetic_set(n: int, dim: int, background: str, threshold: float, seed: int = 0) -> tuple[list[str], np.ndarray]:
    rng = np.random.default_rng(seed)
    n_originals = round(PLANTED_FRACTION * n / (1 + 2 * PLANTED_FRACTION))  # each gets 2 copies on average
    copies = rng.integers(1, 4, n_originals)
    n_background = n - int(copies.sum())
    vectors = _unit(rng.standard_normal((n_background, dim)))
    if background == "clustered":
        n_topics = max(1, n // 33)
        cone = _unit(rng.standard_normal(dim))
        topics = _unit(cone + _unit(rng.standard_normal((n_topics, dim))))  # topics ~0.5 cosine apart
        sizes = 1 / np.arange(1, n_topics + 1) ** 0.7
        topic = rng.choice(n_topics, n_background, p=sizes / sizes.sum())
        spread = rng.uniform(0.6, 1.0, n_topics)[topic, np.newaxis]  # cosine to the topic 0.71-0.86
        clustered = rng.random(n_background) >= UNIFORM_FRACTION
        noise = _unit(rng.standard_normal((int(clustered.sum()), dim)))
        vectors[clustered] = _unit(topics[topic[clustered]] + spread[clustered] * noise)
    n_sources = max(1, n // CLIPS_PER_SOURCE)
    source_of = list(rng.integers(0, n_sources, n_background))
    originals = rng.choice(n_background, n_originals, replace=False)
    planted = []
    for original, n_copies in zip(originals, copies):
        for copy in range(n_copies):
            cosine = rng.uniform(threshold + 0.005, 0.999)
            noise = rng.standard_normal(dim)
            noise = _unit(noise - (noise @ vectors[original]) * vectors[original])
            planted.append(cosine * vectors[original] + np.sqrt(1 - cosine**2) * noise)
            source_of.append(source_of[original] if copy % 2 == 0 else rng.integers(0, n_sources))
    embeddings = np.concatenate([vectors, np.array(planted)]).astype(np.float32)
    clips_in = Counter()
    keys = []
    for source in source_of:
        clips_in[source] += 1
        keys.append(f"{int(source) * 2654435761 % 2**64:016x}-{clips_in[source]:05d}")
    order = rng.permutation(n)  # input order is not key order
    return [keys[i] for i in order], embeddings[order]


def _unit(vectors: np.ndarray) -> np.ndarray:
    return vectors / np.linalg.norm(vectors, axis=-1, keepdims=True)


# --- one method, in its own process ---------------------------------------------------------------------------


def run_method(method: str, data: Path, cfg: DedupConfig) -> dict[str, Any]:
    keys = json.loads((data / "keys.json").read_text())
    started, cpu_started = time.monotonic(), _cpu_s()
    if method == "exact":
        duplicates = exact_duplicates(keys, np.load(data / "embeddings.npy"), cfg.threshold)
    elif method == "find_duplicates":
        found = find_duplicates(keys, np.load(data / "embeddings.npy"), cfg)
        duplicates = [(key, duplicate_of, similarity) for key, (duplicate_of, similarity) in found.items()]
    else:
        duplicates = _run_beam(data, len(keys), cfg)
    return {
        "wall_s": time.monotonic() - started,
        "cpu_s": _cpu_s() - cpu_started,
        "peak_rss_mb": _peak_rss_mb(),
        "duplicates": duplicates,
    }


def _run_beam(data: Path, n: int, cfg: DedupConfig) -> list[tuple[str, str, float]]:
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions
    from apache_beam.runners.portability.fn_api_runner import FnApiRunner

    from avcurate.beam.dedup import NearDuplicates

    def read(bounds: tuple[int, int]) -> Any:  # workers read their share of the clips, as from storage
        keys = json.loads((data / "keys.json").read_text())
        embeddings = np.load(data / "embeddings.npy", mmap_mode="r")
        for i in range(*bounds):
            yield keys[i], np.array(embeddings[i])

    chunks = [(start, min(start + 5000, n)) for start in range(0, n, 5000)]
    mode = "multi_threading" if WORKERS > 1 else "in_memory"
    options = PipelineOptions([], direct_num_workers=WORKERS, direct_running_mode=mode)  # [] : not our argv
    out = data / f"beam-{cfg.probes}"
    with beam.Pipeline(runner=FnApiRunner(), options=options) as p:
        _ = (
            p
            | beam.Create(chunks)
            | beam.FlatMap(read)
            | NearDuplicates(cfg)
            | beam.Map(lambda found: json.dumps([found[0], *found[1]]))
            | beam.io.WriteToText(str(out), num_shards=1)
        )
    lines = Path(f"{out}-00000-of-00001").read_text().splitlines()
    return [tuple(json.loads(line)) for line in lines]


def _peak_rss_mb() -> float:
    # VmHWM, not ru_maxrss: the latter keeps the parent's peak across fork and exec.
    status = Path("/proc/self/status").read_text()
    return int(status.split("VmHWM:")[1].split()[0]) / 1024


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)  # all threads of this process
    return usage.ru_utime + usage.ru_stime


# --- the benchmark ---------------------------------------------------------------------------------------------


def bucket_sizes(keys: list[str], embeddings: np.ndarray, cfg: DedupConfig) -> dict[str, int]:
    """The buckets find_duplicates and NearDuplicates make (same sample, same centroids)."""
    sample = sorted(range(len(keys)), key=lambda i: sample_rank(keys[i]))[: cfg.sample_size]
    centroids = train_centroids(embeddings[sample], cluster_count(len(keys), cfg), cfg.iterations, cfg.seed)
    sizes = np.bincount(nearest_centroids(embeddings, centroids, cfg.probes).ravel(), minlength=len(centroids))
    return {
        "clusters": len(centroids), "largest_bucket": int(sizes.max()), "median_bucket": int(np.median(sizes)),
        "pairs_vs_all_pairs": float((sizes.astype(float) ** 2).sum() / len(keys) ** 2),  # what the buckets cost
    }  # fmt: skip


def score(found: list, exact: list) -> dict[str, float]:
    truth = {key: duplicate_of for key, duplicate_of, _ in exact}
    found_of = {key: duplicate_of for key, duplicate_of, _ in found}
    same = sum(truth.get(key) == duplicate_of for key, duplicate_of in found_of.items())
    rejected = sum(key in truth for key in found_of)
    return {
        "recall": same / max(len(truth), 1),  # exact duplicates found with the same duplicate_of
        "recall_rejected": rejected / max(len(truth), 1),  # exact duplicates rejected at all
        "precision": rejected / max(len(found_of), 1),
        "found": len(found_of),
    }


def bench_background(background: str, args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    keys, embeddings = synthetic_set(args.n, args.dim, background, args.threshold)
    data = folder / background
    data.mkdir()
    (data / "keys.json").write_text(json.dumps(keys))
    np.save(data / "embeddings.npy", embeddings)
    runs = [("exact", 2)] + [(method, probes) for probes in args.probes for method in METHODS]
    results: dict[str, Any] = {}
    for method, probes in runs:
        name = method if method == "exact" else f"{method} probes={probes}"
        print(f"[{background}] {name} ...", file=sys.stderr, flush=True)
        command = [sys.executable, __file__, "--method", method, "--data", str(data), "--probes", str(probes),
                   "--threshold", str(args.threshold)]  # fmt: skip
        results[name] = json.loads(subprocess.run(command, check=True, stdout=subprocess.PIPE, text=True).stdout)
    exact = results["exact"].pop("duplicates")
    summary: dict[str, Any] = {"exact_duplicates": len(exact), "methods": {"exact": results.pop("exact")}}
    for name, result in results.items():
        probes = int(name.split("=")[1])
        cfg = DedupConfig(threshold=args.threshold, probes=probes)
        found = result.pop("duplicates")
        result["answer"] = sorted(map(tuple, found))
        result.update(score(found, exact), **bucket_sizes(keys, embeddings, cfg))
        for measure in ("wall_s", "cpu_s"):
            result[f"{measure}_vs_exact"] = result[measure] / summary["methods"]["exact"][measure]
        summary["methods"][name] = result
    for probes in args.probes:  # the Beam transform must give exactly find_duplicates's answer
        beam_run, one_machine = (summary["methods"][f"{method} probes={probes}"] for method in METHODS)
        beam_run["same_as_find_duplicates"] = beam_run.pop("answer") == one_machine.pop("answer")
    return summary


def print_table(background: str, summary: dict[str, Any]) -> None:
    print(f"\n{background} background: {summary['exact_duplicates']} exact duplicates")
    print(f"{'method':<26}{'recall':>8}{'rejected':>9}{'prec.':>7}{'wall s':>9}{'cpu s':>8}{'wall x':>8}"
          f"{'cpu x':>7}{'RSS MB':>8}{'k':>6}{'max bucket':>11}{'pairs':>7}")  # fmt: skip
    for name, r in summary["methods"].items():
        timing = f"{r['wall_s']:>9.1f}{r['cpu_s']:>8.1f}"
        if "recall" not in r:  # the exact reference
            print(f"{name:<26}{'':>24}{timing}{'':>15}{r['peak_rss_mb']:>8.0f}")
            continue
        quality = f"{r['recall']:>8.4f}{r['recall_rejected']:>9.4f}{r['precision']:>7.3f}"
        ratios = f"{r['wall_s_vs_exact']:>8.3f}{r['cpu_s_vs_exact']:>7.3f}"
        buckets = f"{r['clusters']:>6}{r['largest_bucket']:>11}{r['pairs_vs_all_pairs']:>7.3f}"
        same = {True: "  = find_duplicates", False: "  DIFFERS from find_duplicates", None: ""}[
            r.get("same_as_find_duplicates")
        ]
        print(f"{name:<26}{quality}{timing}{ratios}{r['peak_rss_mb']:>8.0f}{buckets}{same}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--threshold", type=float, default=0.95)
    parser.add_argument("--probes", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--backgrounds", nargs="+", default=["clustered", "uniform"], choices=["clustered", "uniform"])
    parser.add_argument("--json", type=Path)
    parser.add_argument("--method", help=argparse.SUPPRESS)  # internal: run one method in this process
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.method:
        cfg = DedupConfig(threshold=args.threshold, probes=args.probes[0])
        print(json.dumps(run_method(args.method, args.data, cfg)))
        return

    report: dict[str, Any] = {
        "n": args.n, "dim": args.dim, "threshold": args.threshold, "planted_fraction": PLANTED_FRACTION,
        "python": platform.python_version(), "numpy": np.__version__, "backgrounds": {},
    }  # fmt: skip
    with tempfile.TemporaryDirectory() as folder:
        for background in args.backgrounds:
            report["backgrounds"][background] = bench_background(background, args, Path(folder))
            print_table(background, report["backgrounds"][background])
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
