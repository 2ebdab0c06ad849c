"""Clip embeddings as written out: `.npy` bytes for sample members and per-shard arrays, and their checks.

A clip's embeddings (`Clip.embeddings`, role -> float32 array) appear three ways: `{key}.{role}.npy` members of
its sample (every role), `{role}_embedding` index columns and per-shard float16 arrays (RETRIEVAL_ROLES only,
the one-vector-per-clip roles). See schemas/README.md, "Embeddings".
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterable

import numpy as np

from avcurate.model import AUDIO, VISUAL, Clip

# One vector per clip: these get index columns and per-shard arrays (VISUAL_FRAMES, a matrix, stays in samples).
RETRIEVAL_ROLES = (AUDIO, VISUAL)  # sorted, the order of the index columns
# A role is part of member names (`{key}.{role}.npy`): no dot, or WebDataset would split the name there.
SAFE_ROLE = re.compile(r"[A-Za-z0-9_]{1,40}")
SAMPLE_DTYPE = "<f4"  # members keep the model's float32, little-endian whatever the machine
SHARD_DTYPE = "<f2"  # per-shard arrays: half the size, plenty for cosine search


def npy_bytes(array: np.ndarray, dtype: str) -> bytes:
    """`array` as an .npy file of `dtype`. np.save's header holds only the dtype, order and shape (padded to 64
    bytes), so equal arrays give equal bytes on every run."""
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(array, dtype=dtype), allow_pickle=False)
    return buffer.getvalue()


def sample_members(clip: Clip) -> list[tuple[str, bytes]]:
    """The clip's `{key}.{role}.npy` members, roles in sorted order."""
    embeddings = clip.embeddings
    return [(f"{clip.key}.{role}.npy", npy_bytes(embeddings[role], SAMPLE_DTYPE)) for role in sorted(embeddings)]


def vector_dim(role: str, vectors: Iterable[np.ndarray]) -> int:
    """The common length D of `role` vectors that must all be 1-D [D] (one model, one size)."""
    shapes = {tuple(v.shape) for v in vectors}
    if len(shapes) != 1 or len(next(iter(shapes))) != 1:
        raise ValueError(f"{role} embeddings have shapes {sorted(shapes)}: expected one shape [D]")
    return next(iter(shapes))[0]


def shard_arrays(clips: list[Clip]) -> dict[str, np.ndarray]:
    """Per retrieval role any of `clips` has: float16 [len(clips), D], row i = clips[i]; NaN for a clip without one."""
    arrays = {}
    for role in RETRIEVAL_ROLES:
        vectors = [clip.embeddings.get(role) for clip in clips]
        present = [v for v in vectors if v is not None]
        if not present:
            continue
        array = np.full((len(clips), vector_dim(role, present)), np.nan, dtype=SHARD_DTYPE)
        for row, vector in enumerate(vectors):
            if vector is not None:
                array[row] = vector
        arrays[role] = array
    return arrays
