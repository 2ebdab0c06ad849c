"""Near-duplicate clips by embedding: k-means buckets, exact pairs inside each bucket (as NeMo Curator does).

The rule, independent of scheduling: a clip is a duplicate if some clip with a smaller key has cosine similarity
>= threshold with it, and its `duplicate_of` is the smallest such key. Chains are not collapsed: with A ~ B and
B ~ C but A !~ C (keys A < B < C), B is a duplicate of A and C a duplicate of B, so both B and C are rejected and A is
kept. The exact answer compares all pairs; `find_duplicates` (and the Beam transform in `avcurate/beam/dedup.py`)
only compares clips sharing one of their `probes` nearest k-means centroids, so a pair split across buckets is missed.

Every decision is reproducible whatever the batching: float32 matrix products only shortlist candidates (with a
margin far above their rounding error), and the shortlisted centroid scores and pair similarities are then computed
exactly (`math.fsum` of float64 products, which are exact for float32 inputs). So the same pair has the same
similarity in every bucket, and a clip lands in the same buckets whether it is assigned alone or in a batch.
"""

from __future__ import annotations

import hashlib
import math
from collections import defaultdict
from typing import Sequence

import numpy as np

from .config import DedupConfig

CLIPS_PER_CLUSTER = 1000  # DedupConfig.clusters == 0: one bucket per this many clips
# Float32 products of unit vectors of a few thousand dimensions are off by ~1e-6 at worst: anything within this
# margin of a decision is recomputed exactly.
_MARGIN = 1e-4
_BLOCK_FLOATS = 1 << 22  # a block of scores (rows x columns) holds at most this many float32 (16 MiB)

Duplicate = tuple[str, str, float]  # (key, duplicate_of, similarity)


def sample_rank(key: str) -> str:
    """Keys with the smallest ranks form the k-means sample: a pseudo-random choice every worker agrees on."""
    return hashlib.sha1(key.encode()).hexdigest()


def cluster_count(n_clips: int, cfg: DedupConfig) -> int:
    return cfg.clusters or max(1, round(n_clips / CLIPS_PER_CLUSTER))


def train_centroids(sample: np.ndarray, k: int, iterations: int, seed: int) -> np.ndarray:
    """Spherical k-means: centroids are unit vectors, points go to the centroid of highest cosine.

    Returns min(k, n) centroids (more than one per point would only make empty buckets). Deterministic for a
    given sample order: random initial centroids drawn from the sample (k-means++ would cost k passes over it),
    and an empty cluster is re-seeded with the point farthest from its centroid.
    """
    points = _unit_rows(sample)
    if len(points) == 0:
        raise ValueError("k-means needs at least one sample embedding")
    k = min(k, len(points))
    rng = np.random.default_rng(seed)
    centroids = points[np.sort(rng.choice(len(points), size=k, replace=False))]
    labels = None
    for _ in range(iterations):
        new_labels, best, sums = _assign(points, centroids)
        if labels is not None and np.array_equal(new_labels, labels):
            break
        labels = new_labels
        empty = np.flatnonzero(np.bincount(labels, minlength=k) == 0)
        farthest = np.argsort(best, kind="stable")[: len(empty)]
        sums[empty] = points[farthest]
        centroids = _unit_rows(sums)
    return centroids


def nearest_centroids(embeddings: np.ndarray, centroids: np.ndarray, probes: int) -> np.ndarray:
    """The `probes` centroids of highest cosine for each embedding, int array [n, probes], each row in ascending
    centroid index (a set: which one is nearest does not matter). Exact ties go to the lower index."""
    probes = min(probes, len(centroids))
    points = np.asarray(embeddings, dtype=np.float32)
    unit = _unit_rows(points)
    nearest = np.empty((len(points), probes), dtype=np.int64)
    for start, stop in _blocks(len(points), len(centroids)):
        scores = unit[start:stop] @ centroids.T
        order = np.argsort(-scores, axis=1, kind="stable")
        nearest[start:stop] = order[:, :probes]
        if probes == len(centroids):
            continue
        # The set is certain unless the last probe's score is within the margin of the next one.
        ranked = np.take_along_axis(scores, order[:, : probes + 1], axis=1)
        for row in np.flatnonzero(ranked[:, probes - 1] - ranked[:, probes] < _MARGIN):
            nearest[start + row] = _exact_nearest(points[start + row], centroids, scores[row], probes)
    nearest.sort(axis=1)
    return nearest


def bucket_duplicates(keys: Sequence[str], embeddings: np.ndarray, threshold: float) -> list[Duplicate]:
    """Exact pairs inside one bucket, by the module's rule, sorted by key. Rows are compared in blocks against
    the smaller keys only, so memory is bounded by block x members, never members x members."""
    order = sorted(range(len(keys)), key=keys.__getitem__)
    sorted_keys = [keys[i] for i in order]
    points = np.asarray(embeddings, dtype=np.float32)[order]
    unit = _unit_rows(points)
    found = []
    for start, stop in _blocks(len(points), len(points)):
        scores = unit[start:stop] @ unit[:stop].T
        scores[:, start:stop][np.triu_indices(stop - start)] = -np.inf  # only smaller keys count
        candidates = scores >= threshold - _MARGIN
        for row in np.flatnonzero(candidates.any(axis=1)):
            i = start + row
            for j in np.flatnonzero(candidates[row]):  # ascending key: the first that passes is the smallest
                similarity = _exact_cosine(points[i], points[j])
                if similarity >= threshold:
                    found.append((sorted_keys[i], sorted_keys[j], similarity))
                    break
    return found


def exact_duplicates(keys: Sequence[str], embeddings: np.ndarray, threshold: float) -> list[Duplicate]:
    """The reference: every pair compared (one bucket holding everything)."""
    return bucket_duplicates(keys, embeddings, threshold)


def find_duplicates(keys: Sequence[str], embeddings: np.ndarray, cfg: DedupConfig) -> dict[str, tuple[str, float]]:
    """The whole bucketed search on one machine: what `NearDuplicates` computes, spread over Beam workers."""
    if len(keys) == 0:
        return {}
    ranks = [sample_rank(key) for key in keys]
    sample = sorted(range(len(keys)), key=ranks.__getitem__)[: cfg.sample_size]
    centroids = train_centroids(embeddings[sample], cluster_count(len(keys), cfg), cfg.iterations, cfg.seed)
    buckets = defaultdict(list)
    for index, clusters in enumerate(nearest_centroids(embeddings, centroids, cfg.probes)):
        for cluster in clusters:
            buckets[cluster].append(index)
    duplicates: dict[str, tuple[str, float]] = {}
    for members in buckets.values():
        for key, duplicate_of, similarity in bucket_duplicates([keys[i] for i in members], embeddings[members],
                                                               cfg.threshold):  # fmt: skip
            duplicates[key] = min(duplicates.get(key, (duplicate_of, similarity)), (duplicate_of, similarity))
    return duplicates


def _unit_rows(vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.where(norms > 0, norms, 1)


def _blocks(rows: int, columns: int) -> list[tuple[int, int]]:
    size = max(1, _BLOCK_FLOATS // max(columns, 1))
    return [(start, min(start + size, rows)) for start in range(0, rows, size)]


def _assign(points: np.ndarray, centroids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each point's nearest centroid and its score, and the sum of the points per centroid."""
    labels = np.empty(len(points), dtype=np.int64)
    best = np.empty(len(points), dtype=np.float32)
    sums = np.zeros_like(centroids)
    for start, stop in _blocks(len(points), len(centroids)):
        scores = points[start:stop] @ centroids.T
        block_labels = scores.argmax(axis=1)
        rows = np.arange(stop - start)
        labels[start:stop], best[start:stop] = block_labels, scores[rows, block_labels]
        scores[:] = 0  # reused as the one-hot membership matrix: a matmul sums far faster than add.at or reduceat
        scores[rows, block_labels] = 1
        sums += scores.T @ points[start:stop]
    return labels, best, sums


def _exact_dot(a: np.ndarray, b: np.ndarray) -> float:
    # Products of float32 values are exact in float64, and fsum rounds their sum once: no order dependence.
    return math.fsum((a.astype(np.float64) * b.astype(np.float64)).tolist())


def _exact_cosine(a: np.ndarray, b: np.ndarray) -> float:
    return _exact_dot(a, b) / math.sqrt(_exact_dot(a, a) * _exact_dot(b, b))


def _exact_nearest(point: np.ndarray, centroids: np.ndarray, scores: np.ndarray, probes: int) -> np.ndarray:
    """The `probes` nearest centroids, ranked exactly among those within the margin of the last probe's float32
    score: any other centroid is beaten, exactly, by at least `probes` of these."""
    last = np.sort(scores)[::-1][probes - 1]
    candidates = np.flatnonzero(scores >= last - _MARGIN)
    ranked = sorted(candidates, key=lambda c: (-_exact_dot(point, centroids[c]), c))
    return np.array(ranked[:probes])
