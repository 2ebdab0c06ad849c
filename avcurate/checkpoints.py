"""What an interrupted run already finished, so the same command run again does only the rest.

A source is finished once its result is saved here (`{staging}/_done/{source_id}.json`), after its kept clips
and their model inputs were staged: the result file is written last, whole (temporary name, then rename), so
its presence means everything it names is there. A rerun loads finished sources instead of decoding them again;
Failed sources are finished too: a file that timed out is not tried again.

With learned models, a kept clip's model inputs wait in the staging area until the clip is embedded; its
embeddings are then saved (`{staging}/_embedded/{key}.npz`) and its inputs deleted, so the staging area holds
inputs only for clips in flight, and a rerun embeds only the clips that were not. Scores, rules and
near-duplicates, cheap and run-wide, are recomputed; shards, index and ledger are written anew from all
results, byte-identical to an uninterrupted run.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import shutil

import numpy as np

from .faults import fault_point
from .fsutil import delete_files, is_local, read_bytes, write_bytes
from .inputs import PARTS
from .inputs import load_inputs as load_folder_inputs
from .model import KEPT, Clip, ModelInputs, Source, SourceResult
from .replies import source_result
from .sandbox import _plain
from .spans import Span

_DONE = "_done"
_INPUTS = "_inputs"
_EMBEDDED = "_embedded"
_MODELS = "__models__"  # the npz member holding the clip's model cards, as JSON


def _join(*parts: str) -> str:
    return "/".join(p.rstrip("/") for p in parts)


def done_path(staging_dir: str, source_id: str, span: Span | None = None) -> str:
    name = source_id if span is None else f"{source_id}.span{span.index}"
    return _join(staging_dir, _DONE, f"{name}.json")


def inputs_path(staging_dir: str, key: str, part: str) -> str:
    return _join(staging_dir, _INPUTS, f"{key}.{part}.npy")


def save(staging_dir: str, result: SourceResult, inputs_dir: str | None) -> None:
    """Mark `result`'s source (or span of a source) finished; its kept clips' model inputs (files in
    `inputs_dir`, see `avcurate.inputs.save_inputs`) move to the staging area first."""
    if inputs_dir is not None:
        for clip in result.clips:
            if clip.status != KEPT:
                continue
            for part in PARTS:
                local = os.path.join(inputs_dir, f"{clip.key}.{part}.npy")
                if os.path.exists(local):
                    _move(local, inputs_path(staging_dir, clip.key, part))
    data = dataclasses.asdict(dataclasses.replace(result, source=None))  # the source is the caller's own
    path = done_path(staging_dir, result.source.source_id, result.span)
    write_bytes(path, json.dumps(data, default=_plain).encode())


def load(staging_dir: str, source: Source, span: Span | None = None) -> SourceResult | None:
    """The saved result of `source` (or of that span of it), or None if it was not finished."""
    raw = read_bytes(done_path(staging_dir, source.source_id, span))
    if raw is None:
        return None
    data = json.loads(raw)
    data.pop("source")
    return source_result(data, source)


def load_inputs(staging_dir: str, key: str) -> ModelInputs:
    """A kept clip's model inputs, from the staging area."""
    return load_folder_inputs(_join(staging_dir, _INPUTS), key)


def save_embedded(staging_dir: str, clip: Clip) -> Clip:
    """Save the embedded `clip`'s embeddings and model cards, then delete its model inputs; the clip."""
    buffer = io.BytesIO()
    models = np.frombuffer(json.dumps(clip.models, sort_keys=True).encode(), np.uint8)
    np.savez(buffer, **clip.embeddings, **{_MODELS: models})
    write_bytes(_join(staging_dir, _EMBEDDED, f"{clip.key}.npz"), buffer.getvalue())
    delete_files([inputs_path(staging_dir, clip.key, part) for part in PARTS])
    fault_point("embedded")
    return clip


def load_embedded(staging_dir: str, clip: Clip) -> Clip | None:
    """`clip` with the embeddings an interrupted run saved for it, or None."""
    path = _join(staging_dir, _EMBEDDED, f"{clip.key}.npz")
    data = read_bytes(path)
    if data is None:
        return None
    with np.load(io.BytesIO(data), allow_pickle=False) as arrays:
        embeddings = {role: arrays[role] for role in arrays.files if role != _MODELS}
        models = json.loads(arrays[_MODELS].tobytes())
    return dataclasses.replace(clip, embeddings=embeddings, models=models)


def _move(local: str, target: str) -> None:
    if is_local(target):
        os.makedirs(os.path.dirname(target), exist_ok=True)
        shutil.move(local, target)  # a rename when both are on one disk
        return
    with open(local, "rb") as f:
        write_bytes(target, f.read())
    os.unlink(local)
