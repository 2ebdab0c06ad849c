"""Spans of one long source curated apart (`avcurate.spans`): the plan, the seek, and the merged result."""

from __future__ import annotations

import dataclasses
import subprocess
from pathlib import Path

import av
import numpy as np
import pytest

from avcurate.clips import END, SPAN_END
from avcurate.config import Config
from avcurate.decode import AlignedDecoder, luma
from avcurate.model import ProbeInfo, Source, SourceResult
from avcurate.process import process_source, probe_source
from avcurate.spans import Span, merge_spans, plan_spans
from avcurate.synth import TEST_PATTERN_SHOTS, write_shots_video

SHOTS = TEST_PATTERN_SHOTS  # 64.8 s, 1620 frames
CFG = Config.from_dict({"filters": [], "decode": {"span_s": 20}})  # three spans of 540 frames
# Audio after a seek: the same samples, but for the source's last frame (the resampler's final flush) and a
# span decoded from a flushed AAC decoder at the source's start; measured at most 6e-4 there, on a 0.125 tone.
AUDIO_TOLERANCE = 1e-3


def ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-v", "error", "-y", *args], check=True)


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_shots_video(tmp_path_factory.mktemp("media") / "shots.mp4")


def probe(
    format_name: str = "mov,mp4,m4a,3gp,3g2,mj2", duration_s: float = 3600.0, size_bytes: int | None = -1
) -> ProbeInfo:
    """A header; by default a file of 1 Mbit/s for its duration."""
    size = int(duration_s * 1e6 / 8) if size_bytes == -1 else size_bytes
    return ProbeInfo(format_name=format_name, duration_s=duration_s, size_bytes=size, has_video=True, has_audio=True)


def with_span_s(span_s: float) -> Config:
    return dataclasses.replace(CFG, decode=dataclasses.replace(CFG.decode, span_s=span_s))


SPLIT = with_span_s(600)


def test_only_long_seekable_sources_are_split_into_contiguous_spans() -> None:
    one = [Span(0, 0, None)]
    assert plan_spans(probe(duration_s=3600.0), with_span_s(0)) == one  # 0: never split
    assert plan_spans(probe(duration_s=3600.0), Config()) == one  # the default
    assert plan_spans(probe(duration_s=0.0), SPLIT) == one  # duration unknown
    assert plan_spans(probe(duration_s=900.0), SPLIT) == one  # not longer than 1.5 x 600 s
    assert plan_spans(probe("mpegts"), SPLIT) == one  # timestamps may jump: re-anchored only from the start
    spans = plan_spans(probe(duration_s=3600.0), SPLIT)
    assert spans == plan_spans(probe(duration_s=3600.0), SPLIT)  # deterministic
    assert [s.index for s in spans] == list(range(6))
    assert spans[0].first_frame == 0 and spans[-1].end_frame is None
    assert all(a.end_frame == b.first_frame for a, b in zip(spans, spans[1:]))  # contiguous, no overlap
    assert {s.end_frame - s.first_frame for s in spans[:-1]} == {15000}  # 600 s at 25 fps
    assert len(plan_spans(probe("matroska,webm", duration_s=1e12), SPLIT)) == 256  # bounded, whatever it says
    # A header claiming more than its file could hold (1e12 s in 1 MB), or a size unknown: decoded whole.
    assert plan_spans(probe("matroska,webm", duration_s=1e12, size_bytes=1 << 20), SPLIT) == one
    assert plan_spans(probe(duration_s=3600.0, size_bytes=None), SPLIT) == one


def test_a_span_decodes_after_a_seek_the_frames_and_samples_of_a_full_decode(shots: Path) -> None:
    def decode(**span: int | None) -> tuple[AlignedDecoder, dict[int, tuple[np.ndarray, np.ndarray]]]:
        with av.open(str(shots)) as container:
            decoder = AlignedDecoder(container, CFG.decode, **span)
            return decoder, {f.index: (luma(f.video).copy(), f.audio) for f in decoder}

    full_decoder, full = decode()
    assert full_decoder.pictures_decoded == len(full) == 1620
    for first, end in [(540, 1080), (1080, None), (30, 100), (1234, 1240)]:
        decoder, span = decode(start_frame=first, end_frame=end)
        assert sorted(span) == list(range(first, end if end is not None else 1620))
        assert decoder.reached_end_frame == (end is not None)
        assert all(np.array_equal(span[i][0], full[i][0]) for i in span)  # video: exact
        assert all(span[i][1].shape == full[i][1].shape for i in span)
        assert max(np.abs(span[i][1] - full[i][1]).max() for i in span) <= AUDIO_TOLERANCE
        # It seeks: what comes before the span is not decoded (x264's keyframes are at most 250 frames apart).
        assert decoder.pictures_decoded <= (len(span) + 1) + 25 + 250 + 2


def run(source: Path, tmp_path: Path, name: str, span: Span | None = None) -> SourceResult:
    scratch = tmp_path / f"scratch-{name}"
    scratch.mkdir()
    return process_source(Source.from_uri(str(source)), CFG, str(tmp_path / f"staging-{name}"), str(scratch), span=span)


def mp4_frames(path: str) -> tuple[list[np.ndarray], np.ndarray]:
    with av.open(path) as container:
        video = [luma(f).copy() for f in container.decode(video=0)]
    with av.open(path) as container:
        audio = np.concatenate([f.to_ndarray() for f in container.decode(audio=0)], axis=1)
    return video, audio


def test_a_source_curated_span_by_span_gives_the_unsplit_clips_away_from_the_boundaries(
    shots: Path, tmp_path: Path
) -> None:
    whole = run(shots, tmp_path, "whole")
    spans = plan_spans(probe_source(str(shots)), CFG)
    assert [(s.first_frame, s.end_frame) for s in spans] == [(0, 540), (540, 1080), (1080, None)]
    merged = merge_spans([run(shots, tmp_path, f"span{s.index}", s) for s in reversed(spans)])  # any order
    boundaries = [s.first_frame for s in spans[1:]]

    def touches(clip) -> bool:  # noqa: ANN001
        return clip.end_reason == SPAN_END or any(
            clip.clip_index <= b < clip.clip_index + clip.n_frames or clip.clip_index == b for b in boundaries
        )

    def bounds(clips) -> list[tuple[int, int, str]]:  # noqa: ANN001
        return [(c.clip_index, c.n_frames, c.end_reason) for c in clips if not touches(c)]

    assert len(whole.clips) == 12 and bounds(merged.clips) == bounds(whole.clips)
    assert len(bounds(whole.clips)) == 10  # only the two shots across a boundary differ
    assert [(c.clip_index, c.n_frames) for c in merged.clips if c.end_reason == SPAN_END] == [(390, 150)]
    assert "span 2 (21.6–43.2 s): 2 piece(s) shorter than 2 s dropped" in (merged.note or "")
    assert [c.clip_index for c in merged.clips] == sorted(c.clip_index for c in merged.clips)
    same = {c.key: c for c in whole.clips if not touches(c)}
    for clip in merged.clips:
        if clip.key in same:
            (video, audio), (video_whole, audio_whole) = mp4_frames(clip.staged_path), mp4_frames(same[clip.key].staged_path)
            assert len(video) == clip.n_frames and all(np.array_equal(a, b) for a, b in zip(video, video_whole))
            assert audio.shape == audio_whole.shape
            # The same samples, so the same AAC; but for the source's last frame, a little off (AUDIO_TOLERANCE)
            # before encoding and so a little more after it.
            assert np.abs(audio - audio_whole).max() <= (5 * AUDIO_TOLERANCE if clip.end_reason == END else 0.0)
            assert clip.start_s == same[clip.key].start_s
            assert clip.scores == same[clip.key].scores or clip.end_reason == END


def test_a_single_span_is_the_plain_result_and_mpegts_is_not_split(shots: Path, tmp_path: Path) -> None:
    plain = run(shots, tmp_path, "plain")
    single = run(shots, tmp_path, "single", Span(0, 0, None))
    assert merge_spans([single]) is single
    assert dataclasses.replace(single, span=None, clips=[]) == dataclasses.replace(plain, clips=[])
    for a, b in zip(single.clips, plain.clips, strict=True):
        assert Path(a.staged_path).read_bytes() == Path(b.staged_path).read_bytes()
        assert dataclasses.replace(a, staged_path=None) == dataclasses.replace(b, staged_path=None)
    ts = tmp_path / "shots.ts"
    ffmpeg("-i", str(shots), "-c", "copy", str(ts))
    assert plan_spans(probe_source(str(ts)), CFG) == [Span(0, 0, None)]


def test_a_failed_span_is_a_note_and_only_all_failing_fail_the_source() -> None:
    source = Source.from_uri("long.mp4")
    ok = SourceResult(source=source, probe=probe(), span=Span(0, 0, 540), note="no clip")
    failed = SourceResult(source=source, error="decoding stopped", error_type="decode", span=Span(1, 540, None))
    merged = merge_spans([failed, ok])
    assert merged.error is None and merged.probe == ok.probe and merged.span is None
    assert merged.note == "span 1 (frames 0–540): no clip; span 2 (frames 540–end) failed (decode): decoding stopped"
    first_failed = dataclasses.replace(failed, span=Span(0, 0, 540), error="first", error_type="timeout")
    assert (merge_spans([failed, first_failed]).error, merge_spans([failed, first_failed]).error_type) == ("first", "timeout")
