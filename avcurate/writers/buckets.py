"""Key-range buckets: the run's clip keys cut into consecutive ranges, so that shard planning and the index are
done a bucket per worker, and bucket order is key order.

Clip keys start with their source id, 16 hex digits of a hash, so the ranges split the key space evenly by its
first 8 hex digits: bucket b holds the keys from `bucket_bounds(n)[b]` up to the next bound. The bounds are
strings and a key's bucket is found by comparing strings, so any key has one bucket and buckets stay in key
order even for a key that is not hex.
"""

from __future__ import annotations

import bisect
import functools

_PREFIX_SPACE = 1 << 32  # 8 hex digits


def bucket_count(n_items: int, per_bucket: int) -> int:
    """How many buckets hold `n_items` with about `per_bucket` in each."""
    return max(1, -(-n_items // per_bucket))


@functools.lru_cache(maxsize=8)
def bucket_bounds(buckets: int) -> tuple[str, ...]:
    """The first key of each bucket's range, ascending; "" for the first, so every key has a bucket."""
    # Bound b is the least prefix k with k * buckets >> 32 == b: the same split as that formula on hex keys.
    return ("", *(f"{-(-b * _PREFIX_SPACE // buckets):08x}" for b in range(1, buckets)))


def key_bucket(key: str, buckets: int) -> int:
    return bisect.bisect_right(bucket_bounds(buckets), key) - 1


def bucket_range(bucket: int, buckets: int) -> tuple[str, str | None]:
    """The keys of `bucket`: from the first (inclusive) to the second (exclusive; None: no end)."""
    bounds = bucket_bounds(buckets)
    return bounds[bucket], bounds[bucket + 1] if bucket + 1 < buckets else None
