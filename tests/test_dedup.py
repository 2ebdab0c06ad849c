"""Near-duplicate search: the Beam transform, the one-machine algorithm, the exact reference and a naive float64
all-pairs check agree on planted near-copies among random and clustered embeddings."""

from __future__ import annotations

import dataclasses

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.runners.portability.fn_api_runner import FnApiRunner
from apache_beam.testing.util import assert_that, equal_to

from avcurate import dedup
from avcurate.beam.dedup import NearDuplicates
from avcurate.config import DedupConfig
from avcurate.dedup import (
    bucket_duplicates,
    exact_duplicates,
    find_duplicates,
    nearest_centroids,
    train_centroids,
)

DIM = 64
CFG = DedupConfig(embedding="visual", threshold=0.95, clusters=16, probes=2, sample_size=1000, iterations=10)


def unit(vectors: np.ndarray) -> np.ndarray:
    return vectors / np.linalg.norm(vectors, axis=-1, keepdims=True)


def near_copy(rng: np.random.Generator, original: np.ndarray, cosine: float) -> np.ndarray:
    noise = rng.standard_normal(original.shape)
    noise = unit(noise - (noise @ original) * original)  # orthogonal to the original: the cosine is exact
    return cosine * original + np.sqrt(1 - cosine**2) * noise


def planted_set(seed: int = 1) -> tuple[list[str], np.ndarray, list[list[str]]]:
    """1500 uniform and 1500 clustered clips (30 topics, cosine ~0.7 inside one) over 40 sources; 60 of them get
    1-3 copies at cosine 0.97-0.99, half in the original's own source, half in another. Returns the keys, the
    float32 embeddings and the planted groups (original first)."""
    rng = np.random.default_rng(seed)
    topics = unit(rng.standard_normal((30, DIM)))
    background = np.concatenate([
        unit(rng.standard_normal((1500, DIM))),
        unit(topics[rng.integers(0, 30, 1500)] + 0.6 * unit(rng.standard_normal((1500, DIM)))),
    ])  # fmt: skip
    sources = [f"{rng.integers(0, 2**63):016x}" for _ in range(40)]
    clips_per_source = dict.fromkeys(sources, 0)

    def new_key(source: str) -> str:
        clips_per_source[source] += 1
        return f"{source}-{clips_per_source[source]:05d}"

    keys = [new_key(sources[rng.integers(0, 40)]) for _ in background]
    vectors, groups = list(background), []
    for original in rng.choice(len(background), 60, replace=False):
        group = [keys[original]]
        for copy in range(rng.integers(1, 4)):
            same_source = copy % 2 == 0
            source = keys[original].split("-")[0] if same_source else sources[rng.integers(0, 40)]
            group.append(new_key(source))
            keys.append(group[-1])
            vectors.append(near_copy(rng, background[original], rng.uniform(0.97, 0.99)))
        groups.append(group)
    return keys, np.array(vectors, dtype=np.float32), groups


def naive_duplicates(keys: list[str], embeddings: np.ndarray, threshold: float) -> dict[str, tuple[str, float]]:
    """The rule spelled out in float64 on the whole similarity matrix."""
    order = np.argsort(keys)
    vectors = unit(embeddings[order].astype(np.float64))
    similarity = vectors @ vectors.T
    found = {}
    for i in range(len(order)):
        smaller = np.flatnonzero(similarity[i, :i] >= threshold)
        if len(smaller):
            found[keys[order[i]]] = (keys[order[smaller[0]]], similarity[i, smaller[0]])
    return found


def as_dict(duplicates: list[tuple[str, str, float]]) -> dict[str, tuple[str, float]]:
    return {key: (duplicate_of, similarity) for key, duplicate_of, similarity in duplicates}


def assert_same(found: dict[str, tuple[str, float]], expected: dict[str, tuple[str, float]]) -> None:
    assert sorted(found) == sorted(expected)
    for key, (duplicate_of, similarity) in found.items():
        assert duplicate_of == expected[key][0], key
        assert similarity == pytest.approx(expected[key][1], abs=1e-6), key


@pytest.fixture(scope="module")
def planted() -> tuple[list[str], np.ndarray, list[list[str]]]:
    return planted_set()


def test_beam_finds_every_planted_copy_in_any_input_order(planted):
    keys, embeddings, groups = planted
    clips = list(zip(keys, embeddings))
    orders = [np.random.default_rng(seed).permutation(len(clips)) for seed in (2, 3)]
    expected = find_duplicates(keys, embeddings, CFG)
    # One probe in many buckets misses pairs: equal answers there mean the same centroids and buckets.
    one_probe = dataclasses.replace(CFG, clusters=64, probes=1)
    with beam.Pipeline(runner=FnApiRunner()) as p:
        for n, order in enumerate(orders):
            shuffled = p | f"Clips{n}" >> beam.Create([clips[i] for i in order])
            # Exact equality, similarities included: the same whatever the order and batching.
            found = shuffled | f"Dedup{n}" >> NearDuplicates(CFG)
            assert_that(found, equal_to(list(expected.items())), label=f"Check{n}")
        found = shuffled | "OneProbe" >> NearDuplicates(one_probe)
        assert_that(found, equal_to(list(find_duplicates(keys, embeddings, one_probe).items())), label="CheckOneProbe")

    naive = naive_duplicates(keys, embeddings, CFG.threshold)
    assert_same(expected, naive)  # recall 1.0 and no false positive on this set, with probes=2
    assert_same(as_dict(exact_duplicates(keys, embeddings, CFG.threshold)), naive)
    assert all(similarity >= CFG.threshold for _, similarity in expected.values())
    sources = {key.split("-")[0] for group in groups for key in group[1:] if key.split("-")[0] != group[0][:16]}
    assert len(sources) > 10  # copies across sources, not only within one
    for group in groups:
        kept, *rejected = sorted(group)
        assert kept not in expected  # the smallest key of a planted group is the one kept
        for key in rejected:
            assert expected[key][0] in group and expected[key][0] < key


def test_bucketing_misses_pairs_split_across_buckets(planted):
    """With one probe and many buckets some pairs are split: the probes are what makes recall 1.0 above."""
    keys, embeddings, _ = planted
    one_probe = find_duplicates(keys, embeddings, dataclasses.replace(CFG, clusters=64, probes=1))
    two_probes = find_duplicates(keys, embeddings, dataclasses.replace(CFG, clusters=64, probes=2))
    exact = as_dict(exact_duplicates(keys, embeddings, CFG.threshold))
    assert len(one_probe) < len(two_probes) <= len(exact)
    assert set(one_probe) <= set(exact)


def test_bucket_duplicates_in_blocks_equals_naive_all_pairs(planted, monkeypatch):
    keys, embeddings, _ = planted
    keys, embeddings = keys[-400:], embeddings[-400:].astype(np.float16)  # most planted copies; half precision in
    monkeypatch.setattr(dedup, "_BLOCK_FLOATS", 1000)  # blocks of 2-3 rows
    found = as_dict(bucket_duplicates(keys, embeddings, 0.95))
    assert len(found) > 50
    assert_same(found, naive_duplicates(keys, embeddings.astype(np.float32), 0.95))


def test_chains_are_not_collapsed():
    """a ~ b and b ~ c (cosine 0.966) but a !~ c (0.866): b is a duplicate of a, c of b."""
    angles = np.radians([0, 15, 30])
    vectors = np.stack([np.cos(angles), np.sin(angles), np.zeros(3)], axis=1).astype(np.float32)
    found = as_dict(bucket_duplicates(["c", "a", "b"], vectors[[2, 0, 1]], 0.95))
    assert {key: duplicate_of for key, (duplicate_of, _) in found.items()} == {"b": "a", "c": "b"}
    assert found["c"][1] == pytest.approx(np.cos(np.radians(15)), abs=1e-6)


def test_centroids_are_deterministic_and_reseed_empty_clusters():
    rng = np.random.default_rng(4)
    sample = unit(rng.standard_normal((2000, DIM))).astype(np.float32)
    first = train_centroids(sample, 20, 10, seed=0)
    assert first.shape == (20, DIM)
    assert np.array_equal(first, train_centroids(sample, 20, 10, seed=0))
    assert not np.array_equal(first, train_centroids(sample, 20, 10, seed=1))
    assert np.allclose(np.linalg.norm(first, axis=1), 1, atol=1e-5)
    assert train_centroids(sample[:5], 20, 10, seed=0).shape == (5, DIM)  # k > n: one centroid per point

    # 50 copies of one vector and three others: the initial draw repeats the first vector, so clusters go empty
    # and must be re-seeded until each distinct vector has its own centroid.
    distinct = unit(rng.standard_normal((4, DIM))).astype(np.float32)
    skewed = np.concatenate([np.repeat(distinct[:1], 50, axis=0), distinct[1:]])
    centroids = train_centroids(skewed, 4, 10, seed=0)
    assert np.allclose(np.sort(centroids @ distinct.T, axis=0)[-1], 1, atol=1e-6)


def test_nearest_centroids_exact_whatever_the_batch():
    rng = np.random.default_rng(5)
    points = unit(rng.standard_normal((300, DIM))).astype(np.float32)
    centroids = unit(rng.standard_normal((12, DIM))).astype(np.float32)
    centroids[9] = centroids[5]  # an exact tie goes to the lower index
    # Closer than float32 scores can tell apart (about 3e-8): only the exact rescoring ranks these two right.
    centroids[7] = centroids[3] + 3e-7 * unit(rng.standard_normal(DIM)).astype(np.float32)
    exact = np.argsort(-(points.astype(np.float64) @ centroids.T.astype(np.float64)), axis=1, kind="stable")
    for probes in (1, 2):
        batch = nearest_centroids(points, centroids, probes)
        assert np.array_equal(batch, np.sort(exact[:, :probes], axis=1))
        one_by_one = [nearest_centroids(point[np.newaxis], centroids, probes) for point in points]
        assert np.array_equal(batch, np.concatenate(one_by_one))
    nearest = nearest_centroids(points, centroids, 1)
    assert 9 not in nearest and 5 in nearest and 3 in nearest and 7 in nearest
