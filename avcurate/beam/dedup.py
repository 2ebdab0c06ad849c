"""Near-duplicate clips across the whole run, spread over Beam workers (the algorithm: avcurate/dedup.py)."""

from __future__ import annotations

from typing import Any, Iterable, Iterator

import apache_beam as beam
import numpy as np

from . import NAMESPACE
from ..config import DedupConfig
from ..dedup import bucket_duplicates, cluster_count, nearest_centroids, sample_rank, train_centroids
from ..timings import timed

Keyed = tuple[str, np.ndarray]


class NearDuplicates(beam.PTransform):
    """PCollection[(key, embedding)] -> PCollection[(key, (duplicate_of, similarity))], duplicates only.

    One worker trains k-means on a sample; every clip is then sent to the buckets of its `probes` nearest
    centroids, and each bucket is compared exactly on its own worker. Gives exactly `find_duplicates`'s answer.
    """

    def __init__(self, cfg: DedupConfig) -> None:
        super().__init__()
        self.cfg = cfg

    def expand(self, clips: beam.PCollection) -> beam.PCollection:
        cfg = self.cfg
        count = clips | "Count" >> beam.combiners.Count.Globally()
        centroids = (
            clips
            | "Rank" >> beam.Map(lambda clip: (sample_rank(clip[0]), clip[1]))
            | "Sample" >> beam.combiners.Top.Smallest(cfg.sample_size, key=lambda ranked: ranked[0])
            | "Train" >> beam.Map(_train, count=beam.pvalue.AsSingleton(count), cfg=cfg)
        )
        return (
            clips
            | "Assign" >> beam.FlatMap(_to_buckets, centroids=beam.pvalue.AsSingleton(centroids), probes=cfg.probes)
            | "Buckets" >> beam.GroupByKey()
            | "Compare" >> beam.FlatMap(_bucket_duplicates, threshold=cfg.threshold)
            | "Smallest" >> beam.CombinePerKey(min)  # a key's duplicate_of is the smallest found in any bucket
        )


def _train(ranked: list[tuple[str, np.ndarray]], count: int, cfg: DedupConfig) -> np.ndarray | None:
    if not ranked:
        return None  # no clips: nothing will be assigned
    # Trained in rank order, as find_duplicates does, so both get the same centroids.
    sample = np.stack([embedding for _, embedding in sorted(ranked, key=lambda item: item[0])])
    with timed(NAMESPACE, "dedup"):
        return train_centroids(sample, cluster_count(count, cfg), cfg.iterations, cfg.seed)


def _to_buckets(clip: Keyed, centroids: np.ndarray, probes: int) -> Iterator[tuple[int, Keyed]]:
    for cluster in nearest_centroids(clip[1][np.newaxis], centroids, probes)[0]:
        yield int(cluster), clip


def _bucket_duplicates(bucket: tuple[int, Iterable[Keyed]], threshold: float) -> Iterator[tuple[str, Any]]:
    keys, embeddings = zip(*bucket[1])
    with timed(NAMESPACE, "dedup"):
        found = list(bucket_duplicates(keys, np.stack(embeddings), threshold))
    for key, duplicate_of, similarity in found:
        yield key, (duplicate_of, similarity)
