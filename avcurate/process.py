"""One source, end to end: probe, decode once, cut, score, filter, encode the kept clips, stage them.

Or one span of a long source (`avcurate.spans`): the same, for its frames only, after a seek.

Plain Python, no Beam. Runs inside the sandbox (`avcurate.sandbox`) so a hostile file can be killed.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from .clips import END, MAX_LENGTH, SPAN_END, Segmenter
from .config import Config, DecodeConfig
from .decode import AlignedDecoder, AVFrame, luma
from .encode import VideoClipWriter, mux_clip
from .faults import fault_point
from .filters import apply_filters, source_sync_correction, split_rules
from .fsutil import StorageError, is_local, write_bytes
from .inputs import FrameSampler, InputSpec, clip_audio, save_inputs
from .model import KEPT, Clip, ClipScores, ModelInputs, ProbeInfo, Source, SourceResult
from .probe import check_decodable, open_container, probe_container
from .replies import probe_info, source_result
from .sandbox import Deadline, Sandbox, SourceFailure, heartbeat
from .scorers import build_scorers
from .scorers.base import ClipSignals
from .shots import Cut, build_detector, quarter_yuv
from .spans import Span, Split, plan_spans
from .timings import Times, add as add_times, charge, stage

if TYPE_CHECKING:
    from .speakers.faces import FaceTracker
    from .speakers.stage import ClipFaces


def probe_source(uri: str) -> ProbeInfo:
    """Headers only: fast, and bounded separately so a file that blocks on open fails quickly."""
    with stage("probe"), open_container(uri) as container:
        info = probe_container(container)
        check_decodable(info, container)
        return info


@dataclass
class _OpenClip:
    """The clip being assembled while frames stream past."""

    first_index: int
    writer: VideoClipWriter
    luma: list[np.ndarray] = field(default_factory=list)  # uint8, a quarter of the clip size: what scorers see
    audio: list[np.ndarray] = field(default_factory=list)
    full_luma: list[np.ndarray] = field(default_factory=list)  # a few frames at full size, for sharpness
    audio_missing: int = 0  # samples of silence standing in for audio the source lacks
    sampler: FrameSampler | None = None  # the visual model's frames, when there is one
    faces: FaceTracker | None = None  # the clip's faces, when speakers.enabled

    def add(self, frame: AVFrame, yuv: np.ndarray, sample_every: int) -> None:
        before = charge("encode")
        self.writer.write(frame.video)
        if self.sampler is not None:
            charge("model_inputs")
            self.sampler.add(frame.index - self.first_index, frame.video)
        if self.faces is not None:
            charge("speakers")
            self.faces.add(frame.index - self.first_index, frame.video.to_ndarray(format="rgb24"))
        charge(before)
        self.luma.append(np.ascontiguousarray(yuv[0]))  # a copy: a view would hold the chroma planes too
        self.audio.append(frame.audio)
        self.audio_missing += frame.audio_missing
        if (frame.index - self.first_index) % sample_every == 0:
            self.full_luma.append(luma(frame.video).copy())

    def signals(self, sample_rate: int, fps: float) -> ClipSignals:
        gray = np.stack(self.luma).astype(np.float32)  # one conversion per clip, not one per frame
        gray *= 1.0 / 255.0
        return ClipSignals(
            audio=np.concatenate(self.audio, axis=1), sample_rate=sample_rate, gray=gray, fps=fps,
            full_luma=np.stack(self.full_luma),
        )

    def model_inputs(self, spec: InputSpec, signals: ClipSignals) -> ModelInputs:
        inputs = ModelInputs()
        if self.sampler is not None:
            inputs.frames, inputs.frame_times_s = self.sampler.pick(signals.gray.shape[0], signals.fps)
        if spec.audio_rate is not None:
            inputs.audio = clip_audio(signals.audio, signals.sample_rate, spec)
        return inputs


def process_source(
    source: Source, cfg: Config, staging_dir: str, scratch_dir: str, spec: InputSpec | None = None,
    inputs_dir: str | None = None, span: Span | None = None,
) -> SourceResult:
    """Everything one source yields. Media errors propagate (the caller records them against the source).

    With a `spec`, each kept clip's model inputs are saved under `inputs_dir` (`avcurate.inputs`). With a
    `span`, only its frames are decoded (after a seek), cut, scored and staged: a clip open at the span's end
    ends there, and the shot detector, sync correction and speakers see the span alone."""
    spec = spec or InputSpec()
    scorers = build_scorers(cfg.scoring)
    speakers = None
    if cfg.speakers.enabled:
        import torch

        from .speakers.stage import SpeakerStage

        torch.set_num_threads(max(cfg.decode.threads, 1))  # parallelism comes from workers, as for the decoders
        speakers = SpeakerStage(cfg)
    clip_faces: dict[int, ClipFaces] = {}  # by clip_index, until the source's speech is known
    result = SourceResult(source=source, span=span)
    first_frame, end_frame = (span.first_frame, span.end_frame) if span is not None else (0, None)
    audio_path = os.path.join(scratch_dir, "audio.f32")
    fps = cfg.decode.fps
    sample_every = max(1, round(fps / cfg.scoring.sharpness_fps))
    with open_container(source.uri) as container:
        with stage("probe"):
            result.probe = probe_container(container)
            check_decodable(result.probe, container)
        decoder = AlignedDecoder(container, cfg.decode, start_frame=first_frame, end_frame=end_frame)
        segmenter = Segmenter(cfg.clips, fps)
        detector = build_detector(cfg.shots, fps, cfg.decode.threads)
        short_pieces = transition_frames = 0
        current: _OpenClip | None = None
        # Frames wait here until the detector has decided whether a cut comes before them (its look-ahead).
        lookahead: deque[tuple[AVFrame, np.ndarray]] = deque()
        cuts: dict[int, Cut] = {}  # by the first frame each one takes out of its shot
        skip_until = 0  # frames of a gradual transition are dropped, up to this one

        def close(reason: str, end_index: int, cut_score: float | None = None) -> None:
            nonlocal short_pieces, current
            assert current is not None
            clip, current = current, None
            with stage("encode"):
                clip.writer.close()
            n_frames = end_index - clip.first_index
            if not segmenter.long_enough(n_frames):
                short_pieces += 1
                os.unlink(clip.writer.path)
                return
            made = _make_clip(source, cfg, clip, end_index, decoder, reason, cut_score)
            with stage("score"):
                signals = clip.signals(cfg.decode.sample_rate, fps)
            for scorer in scorers:
                with stage(f"score:{scorer.name}"):
                    for name, value in scorer.score(signals).items():
                        setattr(made.scores, name, value)
            made.scores.audio_missing = round(clip.audio_missing / max(1, signals.audio.shape[1]), 4)
            if speakers is not None and clip.faces is not None:
                with stage("speakers"):
                    clip_faces[made.clip_index] = speakers.close_clip(clip.faces, signals.audio, n_frames)
            if spec.wanted:
                with stage("model_inputs"):
                    made.inputs = clip.model_inputs(spec, signals)
            made.staged_path = clip.writer.path  # the video-only encode, until the final mux
            result.clips.append(made)

        def note_cuts(found: list[Cut]) -> None:
            for cut in found:  # two detectors may mark the same frame: the longer boundary wins
                if cut.start not in cuts or cut.index > cuts[cut.start].index:
                    cuts[cut.start] = cut

        def take(frame: AVFrame, yuv: np.ndarray) -> None:
            nonlocal current, skip_until, transition_frames
            # Normally a cut starts at the frame it is keyed on; one that started earlier (a detector that settled
            # too soon) still ends the clip and its transition here rather than being lost.
            for start in sorted(start for start in cuts if start <= frame.index):
                cut = cuts.pop(start)
                if current is not None:
                    close(cut.kind, frame.index, cut.score)
                skip_until = max(skip_until, cut.index)
            if frame.index < skip_until:
                transition_frames += 1
                return
            if current is not None and segmenter.too_long(frame.index - current.first_index):
                close(MAX_LENGTH, frame.index)
            if current is None:
                path = os.path.join(scratch_dir, f"video-{frame.index:08d}.mp4")
                writer = VideoClipWriter(path, fps, decoder.size, cfg.encode, cfg.decode.threads)
                sampler = FrameSampler(spec.frames_per_clip, spec.frame_prep) if spec.frame_prep else None
                tracker = speakers.tracker() if speakers is not None else None
                current = _OpenClip(frame.index, writer, sampler=sampler, faces=tracker)
            current.add(frame, yuv, sample_every)

        with open(audio_path, "wb") as audio_file:
            last_index = first_frame - 1
            frames = iter(decoder)
            # Each frame's time goes to decoding until it is out, then to cutting (and, within `take`, encoding).
            while (frame := _next_decoded(frames)) is not None:
                # The whole source's (span's) audio goes to scratch so a sync correction can shift any clip's audio.
                audio_file.write(np.ascontiguousarray(frame.audio.T))
                charge("cut")
                yuv = quarter_yuv(frame.video)
                lookahead.append((frame, yuv))
                note_cuts(detector.push(frame.index, yuv))
                while lookahead and lookahead[0][0].index < detector.settled:
                    take(*lookahead.popleft())
                last_index = frame.index
                heartbeat((frame.index + 1 - first_frame) / fps)  # the deadline judges the span's own progress
                fault_point("decode")
            charge("cut")
            note_cuts(detector.flush())
            while lookahead:
                take(*lookahead.popleft())
            if current is not None:
                close(SPAN_END if decoder.reached_end_frame else END, last_index + 1)
            charge("other")
        result.probe.rotation = decoder.rotation
    notes = []
    if short_pieces:
        notes.append(f"{short_pieces} piece(s) shorter than {cfg.clips.min_s:g} s dropped")
    if transition_frames:
        notes.append(f"{transition_frames} frame(s) of gradual transitions dropped")
    if not result.clips and not notes:
        notes.append("no clip")
    notes += _stream_notes(decoder, (last_index + 1 - first_frame) / fps)
    result.note = "; ".join(notes) or None
    # The scratch audio starts at the span's first frame; clips' samples are found on the source's timeline.
    audio_start = decoder.sample_boundary(first_frame)

    def sample_boundary(index: int) -> int:
        return decoder.sample_boundary(index) - audio_start

    annotate = None
    if speakers is not None:
        with stage("speakers"):
            segments, turns = speakers.source_speech(audio_path, audio_start / cfg.decode.sample_rate)
        speaker_stage = speakers

        def annotate(clip: Clip) -> None:
            with stage("speakers"):
                speaker_stage.annotate(clip, clip_faces.get(clip.clip_index), segments, turns)

    _filter_and_stage(result, cfg, staging_dir, audio_path, sample_boundary, inputs_dir, annotate)
    if decoder.corrupt_packets:
        result.note = "; ".join(filter(None, [result.note, f"{decoder.corrupt_packets} corrupt packet(s) skipped"]))
    return result


def _next_decoded(frames: Iterator[AVFrame]) -> AVFrame | None:
    charge("decode")
    return next(frames, None)


_NOTE_MIN_S = 0.1  # audio shortfalls below this (a few frames at a stream's start or end) are not worth a note


def _stream_notes(decoder: AlignedDecoder, duration_s: float) -> list[str]:
    """What the decoder had to repair in the source's streams, so the ledger says what the clips are made of."""
    rate = decoder.cfg.sample_rate
    notes = []
    missing_s, late_s = decoder.audio.missing / rate, decoder.audio.late / rate
    if missing_s >= _NOTE_MIN_S:
        share = missing_s / duration_s if duration_s else 1.0
        notes.append(f"{missing_s:.1f} s of {duration_s:.1f} s without audio ({share:.0%}), filled with silence")
    if late_s >= _NOTE_MIN_S:
        notes.append(
            f"{late_s:.1f} s of audio came more than {decoder.max_interleave_s:g} s after its video and was dropped; "
            "remux the source (`ffmpeg -i in -c copy out.mp4`) so streams are interleaved"
        )
    if decoder.audio_lead_s >= _NOTE_MIN_S:
        notes.append(f"{decoder.audio_lead_s:.1f} s of audio before the first video frame not used")
    if decoder.discontinuities:
        notes.append(f"{decoder.discontinuities} timestamp discontinuity(ies) re-anchored: the timeline runs on across them")
    if decoder.audio_format_changes:
        notes.append(f"audio format changed {decoder.audio_format_changes} time(s) mid-stream")
    if decoder.size_changes:
        sizes = ", ".join(f"{w}x{h}" for w, h in decoder.later_sizes)
        width, height = decoder.size
        notes.append(f"picture size changed {decoder.size_changes} time(s) (to {sizes}); letterboxed into {width}x{height}")
    return notes


def _make_clip(
    source: Source, cfg: Config, current: _OpenClip, end_index: int, decoder: AlignedDecoder, reason: str,
    cut_score: float | None,
) -> Clip:
    fps = cfg.decode.fps
    width, height = decoder.size
    source_width, source_height = decoder.source_size
    return Clip(
        source_id=source.source_id,
        source_uri=source.uri,
        clip_index=current.first_index,  # frame number of the clip start: stable, and unique in its source
        start_s=round(current.first_index / fps, 6),
        end_s=round(end_index / fps, 6),
        n_frames=end_index - current.first_index,
        fps=fps,
        width=width,
        height=height,
        source_width=source_width,
        source_height=source_height,
        sample_rate=cfg.decode.sample_rate,
        channels=cfg.decode.channels,
        scores=ClipScores(),
        end_reason=reason,
        cut_score=cut_score,
        source_meta=source.meta,
        config_hash=cfg.hash,
    )


def _filter_and_stage(
    result: SourceResult, cfg: Config, staging_dir: str, audio_path: str, sample_boundary: Callable[[int], int],
    inputs_dir: str | None, annotate: Callable[[Clip], None] | None = None,
) -> None:
    """Decide the source's sync correction, filter every clip, mux and stage the kept ones.

    `annotate` adds what depends on the correction (the speakers' clip-relative turns) before the rules run.

    Rules on learned scores wait for inference; the kept clips' model inputs go to `inputs_dir`.
    `sample_boundary(n)`: where frame n's audio starts in the scratch audio.
    """
    result.sync_correction_ms = source_sync_correction(result.clips, cfg.sync_correction)
    channels, rate = cfg.decode.channels, cfg.decode.sample_rate
    rules, _ = split_rules(cfg.filters, cfg.learned_scores)
    for clip in result.clips:
        clip.sync_correction_ms = result.sync_correction_ms
        if annotate is not None:
            annotate(clip)
        with stage("filter"):
            apply_filters(clip, rules)
        inputs, clip.inputs = clip.inputs, None  # the reply is JSON: inputs travel as files
        if clip.status == KEPT and inputs is not None:
            assert inputs_dir is not None, "model inputs need an inputs_dir"
            with stage("model_inputs"):
                save_inputs(inputs_dir, clip.key, inputs)
        video_path, clip.staged_path = clip.staged_path, None
        if clip.status == KEPT:
            with stage("encode"):
                # The clip's samples are those of its frames (as the decoder paired them), moved by the correction.
                first, last = sample_boundary(clip.clip_index), sample_boundary(clip.clip_index + clip.n_frames)
                shift = round(clip.sync_correction_ms * rate / 1000.0)
                audio = _read_samples(audio_path, first + shift, last + shift, channels)
                data = mux_clip(video_path, audio.T, rate, cfg.encode)
            clip.staged_path = f"{staging_dir.rstrip('/')}/{clip.key}.mp4"
            clip.mp4_bytes = len(data)
            with stage("stage"):
                write_bytes(clip.staged_path, data)
        os.unlink(video_path)
        heartbeat()


def _read_samples(path: str, start: int, stop: int, channels: int) -> np.ndarray:
    """Samples [start, stop) (samples x channels) of the scratch audio, zero-padded past either end.

    Read with seek + read rather than a memory map: mapped pages count against the decoder's resident memory,
    which would then grow with the source's length.
    """
    out = np.zeros((stop - start, channels), np.float32)
    frame_bytes = 4 * channels
    total = os.path.getsize(path) // frame_bytes
    lo, hi = max(start, 0), min(stop, total)
    if hi > lo:
        with open(path, "rb") as f:
            f.seek(lo * frame_bytes)
            out[lo - start : hi - start] = np.frombuffer(f.read((hi - lo) * frame_bytes), np.float32).reshape(-1, channels)
    return out


# A storage error may pass (a throttled bucket, an expiring token): tries a source this many times, waiting
# this long between tries, before the run fails.
_STORAGE_RETRY_WAITS_S = (1.0, 4.0)


def decode_deadline(cfg: DecodeConfig) -> Deadline:
    """How long decoding one source may take: judged by its progress, never by its header's duration (which
    may be missing, or say 1e12 s)."""
    return Deadline(
        cap_s=cfg.max_timeout_s, stall_s=cfg.stall_timeout_s, base_s=cfg.timeout_s, per_media_s=cfg.timeout_per_media_s,
        settings="decode.stall_timeout_s, decode.timeout_s / timeout_per_media_s or decode.max_timeout_s",
    )


def curate_source(
    source: Source, cfg: Config, staging_dir: str, sandbox: Sandbox, spec: InputSpec | None = None,
    inputs_dir: str | None = None, span: Span | None = None,
) -> SourceResult | Split:
    """`process_source` in the sandbox, bounded in time and memory. Failures of the source become results;
    failures of the run's own storage raise StorageError, after a few tries. With a `spec`, the kept clips'
    model inputs are left in `inputs_dir` (a local folder the caller owns) for `avcurate.inputs.load_inputs`.

    With a `span`, that span of the source (`avcurate.spans.merge_spans` joins the spans' results). Without,
    a source long enough to split (`plan_spans`) comes back as its `Split`, undecoded, for the caller to
    curate span by span, on as many workers."""
    if source.listing_error:
        return SourceResult(source=source, error=source.listing_error, error_type="input", span=span)
    waits = iter(_STORAGE_RETRY_WAITS_S)
    while True:
        try:
            return _curate_once(source, cfg, staging_dir, sandbox, spec, inputs_dir, span)
        except SourceFailure as failure:
            if failure.kind != "storage":
                return SourceResult(source=source, error=str(failure), error_type=failure.kind, span=span,
                                    times=failure.times)  # fmt: skip
            wait_s = next(waits, None)
            if wait_s is None:
                raise StorageError(
                    f"{failure} [tried {len(_STORAGE_RETRY_WAITS_S) + 1} times on {source.uri}; scratch folder "
                    f"{tempfile.gettempdir()}, staging {staging_dir}]"
                ) from None
            time.sleep(wait_s)


def _curate_once(
    source: Source, cfg: Config, staging_dir: str, sandbox: Sandbox, spec: InputSpec | None, inputs_dir: str | None,
    span: Span | None,
) -> SourceResult | Split:
    try:
        scratch = tempfile.mkdtemp(prefix="avcurate-")
    except OSError as e:
        raise SourceFailure("storage", f"cannot make a scratch folder in {tempfile.gettempdir()}: {e}; set TMPDIR "
                            "to a writable folder with free space") from None  # fmt: skip
    # The child works in a folder of its own: it gets absolute paths. The ledger keeps the source as given.
    child_source = dataclasses.replace(source, uri=os.path.abspath(source.uri)) if _is_path(source.uri) else source
    staging = os.path.abspath(staging_dir) if _is_path(staging_dir) else staging_dir
    remote = not is_local(source.uri) or not is_local(staging_dir)
    times: Times = {}  # of both calls, a failed one's included (a killed child's are lost with it)
    try:
        # Headers first, under their own short deadline: a file that blocks on open fails fast.
        try:
            probe = sandbox.call(probe_source, child_source.uri, deadline=Deadline(cfg.decode.probe_timeout_s, settings="decode.probe_timeout_s"), what="probing", storage=remote)
        finally:
            add_times(times, sandbox.last_times)
        if span is None and len(spans := plan_spans(probe_info(probe), cfg)) > 1:
            return Split(spans)
        try:
            data = sandbox.call(
                process_source, child_source, cfg, staging, scratch, spec, inputs_dir, span,
                deadline=decode_deadline(cfg.decode), storage=remote,
            )
        finally:
            add_times(times, sandbox.last_times)
        result = source_result(data, source)
        result.times = times
        return result
    except SourceFailure as failure:
        failure.times = times
        raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _is_path(uri: str) -> bool:
    return "://" not in uri
