"""The sandboxed decoder answers in JSON; these turn its plain data back into the model's dataclasses.

Field by field through the constructors, so an unexpected key fails loudly instead of slipping through. The
source's identity (uri, id, manifest columns) is the parent's own, never taken from the child.
"""

from __future__ import annotations

from typing import Any

from .model import Clip, ClipScores, ProbeInfo, Source, SourceResult
from .spans import Span


def probe_info(data: dict[str, Any]) -> ProbeInfo:
    return ProbeInfo(**data)


def source_result(data: dict[str, Any], source: Source) -> SourceResult:
    fields = {k: v for k, v in data.items() if k not in ("source", "probe", "clips", "span")}
    return SourceResult(
        source=source,
        probe=probe_info(data["probe"]) if data["probe"] is not None else None,
        clips=[_clip(clip, source) for clip in data["clips"]],
        span=Span(**data["span"]) if data.get("span") is not None else None,
        **fields,
    )


def _clip(data: dict[str, Any], source: Source) -> Clip:
    return Clip(
        **{
            **data,
            "scores": ClipScores(**data["scores"]),
            "source_id": source.source_id,
            "source_uri": source.uri,
            "source_meta": source.meta,
        }
    )
