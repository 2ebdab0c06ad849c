"""Work split inside one long source: spans of its timeline that different workers decode and curate.

An hour-long source decoded start to end keeps one worker busy for the whole hour of media while the others
sit idle. Cut into spans, each worker seeks to its span (`AlignedDecoder(start_frame=...)`), and the spans'
results are merged back into the source's one result. Frame numbers, clip keys and audio samples stay those of
the source's own timeline; what a span boundary changes is listed in docs/decoding.md (Spans).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from .config import Config
from .model import ProbeInfo, SourceResult

# Demuxers that seek by an index to exact timestamps. Others (MPEG-TS, MPEG-PS, FLV, raw streams) may carry
# timestamp jumps that the decoder re-anchors as it meets them, which only works when decoding from the start.
_SEEKABLE_FORMATS = frozenset({"mov", "mp4", "matroska", "webm"})

# A header may claim any duration (1e12 s): the number of spans is bounded, whatever it says, and a source is
# split only if its size could hold that much media (real audio-visual streams take far more than 16 kbit/s).
_MAX_SPANS = 256
_MIN_PLAUSIBLE_BPS = 16_000


@dataclass(frozen=True)
class Span:
    """Output frames [first_frame, end_frame) of a source, on its own timeline; end_frame None: to the end."""

    index: int
    first_frame: int
    end_frame: int | None


WHOLE_SOURCE = Span(0, 0, None)


@dataclass(frozen=True)
class Split:
    """A source to curate span by span: what `curate_source` answers for one it did not decode whole."""

    spans: list[Span]


def plan_spans(probe: ProbeInfo, cfg: Config) -> list[Span]:
    """The spans a source is curated in: about duration / span_s of equal length in whole frames, or one.

    Deterministic (the header's duration and the config), so every rerun splits a source the same way."""
    span_s, duration_s = cfg.decode.span_s, probe.duration_s
    if span_s <= 0 or not duration_s or duration_s <= 1.5 * span_s or not _seekable(probe.format_name):
        return [WHOLE_SOURCE]
    if not probe.size_bytes or probe.size_bytes * 8 / duration_s < _MIN_PLAUSIBLE_BPS:
        return [WHOLE_SOURCE]  # a duration the file is too small to hold: decoded whole, judged by its progress
    count = min(round(duration_s / span_s), _MAX_SPANS)
    frames = int(duration_s * cfg.decode.fps) // count
    return [Span(i, i * frames, (i + 1) * frames if i < count - 1 else None) for i in range(count)]


def _seekable(format_name: str) -> bool:
    return bool(_SEEKABLE_FORMATS.intersection(format_name.split(",")))


def merge_spans(results: list[SourceResult]) -> SourceResult:
    """The source's result from its spans' results (in any order).

    Clips come in span order; each keeps the sync correction decided over its own span's clips. A span that
    failed is a note on the source while another span succeeded; the source fails (with the first span's
    error) only when every span failed. One span's result is the source's, unchanged.
    """
    if len(results) == 1:
        return results[0]
    ordered = sorted(results, key=lambda r: _span(r).index)
    clips = [clip for result in ordered for clip in result.clips]
    fps = clips[0].fps if clips else None
    notes = []
    for result in ordered:
        where = _describe(_span(result), fps)
        if result.error is not None:
            notes.append(f"{where} failed ({result.error_type}): {result.error}")
        elif result.note:
            notes.append(f"{where}: {result.note}")
    first = ordered[0]
    merged = SourceResult(
        source=first.source, probe=next((r.probe for r in ordered if r.probe is not None), None), clips=clips,
        note="; ".join(notes) or None,
    )
    if all(result.error is not None for result in ordered):
        merged.error, merged.error_type = first.error, first.error_type
        return merged
    # Each clip records the correction it got; the source's is the one most of its clips got.
    corrections = Counter(clip.sync_correction_ms for clip in clips)
    merged.sync_correction_ms = corrections.most_common(1)[0][0] if corrections else 0.0
    return merged


def _span(result: SourceResult) -> Span:
    if result.span is None:
        raise ValueError(f"a result of {result.source.uri} without its span cannot be merged with others")
    return result.span


def _describe(span: Span, fps: float | None) -> str:
    """ "span 2 (600–1200 s)", in frames when no clip says the frame rate."""
    if fps is None:
        end = str(span.end_frame) if span.end_frame is not None else "end"
        return f"span {span.index + 1} (frames {span.first_frame}–{end})"
    end = f"{span.end_frame / fps:g} s" if span.end_frame is not None else "end"
    return f"span {span.index + 1} ({span.first_frame / fps:g}–{end})"
